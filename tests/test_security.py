"""Security: weights are read with ``torch.load(weights_only=True)`` (garbage and pickled model
files are refused, nothing in them runs), dataset ids that could escape the output folder are
refused, and the servers the README documents bind 127.0.0.1."""

from __future__ import annotations

import pathlib
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vesselseg.cli import app
from vesselseg.errors import DatasetError
from vesselseg.io import discover_dataset
from vesselseg.io.dataset import check_id

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
ARRAY = np.random.default_rng(0).random((12, 20, 28), dtype=np.float32)


# --------------------------------------------------------------------------- model files


@pytest.fixture()
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "vol.npy"
    np.save(path, np.random.default_rng(0).normal(100, 20, (16, 16, 16)).astype(np.float32))
    return path


def predict(volume: Path, model: Path, out: Path):
    args = ["predict", str(volume), "--model", str(model), "--out-dir", str(out)]
    return runner.invoke(app, [*args, "--tile-size", "16", "--device", "cpu"])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_garbage_model_file_is_refused(volume: Path, tmp_path: Path) -> None:
    """(moved from tests/test_inference.py::test_cli_errors_are_one_line, case GARBAGE)"""
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    garbage.with_suffix(".json").write_text("{}")
    result = predict(volume, garbage, tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "not a readable model file" in lines[0] and str(garbage) in lines[0]


class Payload:
    """Unpickling this would create ``marker`` (what a malicious model file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_malicious_pickle_is_not_executed(volume: Path, tmp_path: Path) -> None:
    import torch

    from vesselseg.bundle import ModelMeta
    from vesselseg.config import ModelConfig, params_to_dict

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": Payload(marker)}, evil)
    meta = ModelMeta(model=params_to_dict(ModelConfig(base_channels=2, depth=2)))
    evil.with_suffix(".json").write_text(meta.to_json())
    assert not marker.exists()

    result = predict(volume, evil, tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert str(evil) in lines[0] and "Traceback" not in result.output
    assert not marker.exists(), "torch.load ran code from the model file"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------- dataset ids


def test_unsafe_id_is_refused(tmp_path: Path) -> None:
    """(moved from tests/test_io.py)"""
    np.save(tmp_path / "data_-rf.npy", ARRAY)
    with pytest.raises(DatasetError, match="unsafe volume id"):
        discover_dataset(tmp_path)


@pytest.mark.parametrize("name", ["data_a..b.npy", "data_..npy", "data_.hidden.npy"])
def test_ids_from_file_names_cannot_escape(tmp_path: Path, name: str) -> None:
    np.save(tmp_path / name, ARRAY)
    with pytest.raises(DatasetError, match="unsafe volume id"):
        discover_dataset(tmp_path)


@pytest.mark.parametrize("sample_id", ["..", "../x", "a/../../b", "/etc/passwd", ".hidden", ""])
def test_check_id_refuses_paths(tmp_path: Path, sample_id: str) -> None:
    with pytest.raises(DatasetError, match="unsafe volume id"):
        check_id(sample_id, tmp_path)


# --------------------------------------------------------------------------- servers


def test_documented_servers_bind_localhost() -> None:
    """Every server command in the README and Makefile binds 127.0.0.1 (explicitly, or by the
    tool's own default when no --host is given); nothing listens on all interfaces."""
    texts = {name: (ROOT / name).read_text() for name in ("README.md", "Makefile")}
    servers = 0
    for name, text in texts.items():
        assert "0.0.0.0" not in text, f"{name} documents a server on all interfaces"
        commands = re.split(r"\n(?!\s)", text.replace("\\\n", " "))  # join continued lines
        for command in commands:
            if not re.search(r"\b(mlflow (server|ui)|optuna-dashboard)\b", command):
                continue
            servers += 1
            hosts = re.findall(r"--host[ =](\S+)", command)
            assert all(h in ("127.0.0.1", "localhost") for h in hosts), (name, command)
    assert servers, "no server command found in the docs"
    assert re.search(
        r"mlflow server[^`]*--host 127\.0\.0\.1", texts["README.md"].replace("\\\n", " ")
    )
