"""Bad input is one line, exit code 2, no traceback, nothing written.

* One table (``test_bad_input_is_one_line_exit_2``) feeds every bad input a user can give
  (missing paths, truncated/corrupt files, raw size mismatch, non-3D arrays, NaN intensities,
  bad labels, shape mismatch, empty or unannotated datasets, bad params and tiles, another
  model's weights) through the real CLI.
* Write errors the machine causes (disk full, quota, read-only, permission denied): the CLI
prints one line ``error: <path>: <reason>``, exits with code 2, shows no traceback and leaves
no file that looks finished (only ``NAME.part``)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_TRAIN
from typer.testing import CliRunner

from vesselseg.cli import app
from vesselseg.inference.outputs import PredictionWriter, output_paths
from vesselseg.io import partial_path

runner = CliRunner()

REASONS = [
    (errno.ENOSPC, "no space left on device"),
    (errno.EDQUOT, "disk quota exceeded"),
    (errno.EROFS, "read-only file system"),
    (errno.EACCES, "permission denied"),
]


@pytest.fixture()
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "vol.npy"
    np.save(path, np.random.default_rng(0).normal(100, 20, (16, 20, 24)).astype(np.float32))
    return path


def error_lines(result) -> list[str]:
    """Lines the command wrote to stderr (log lines go to stdout)."""
    return [line for line in result.stderr.splitlines() if line.strip()]


def predict(volume: Path, model: Path, out: Path):
    args = ["predict", str(volume), "--model", str(model), "--out-dir", str(out)]
    return runner.invoke(app, [*args, "--tile-size", "16", "--device", "cpu"])


@pytest.mark.parametrize(("code", "reason"), REASONS)
def test_predict_write_error_is_one_line(
    code: int,
    reason: str,
    volume: Path,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # the CLI's cache folder goes to the working directory
    out = tmp_path / "out"
    paths = output_paths(out, volume.name, tiny_model)
    calls = []

    def full(self, z, y, x, values) -> None:  # the disk fills up on the second write
        calls.append(z)
        if len(calls) == 2:
            raise OSError(code, os.strerror(code), str(partial_path(paths.prob)))
        return real(self, z, y, x, values)

    real = PredictionWriter.write
    monkeypatch.setattr(PredictionWriter, "write", full)
    result = predict(volume, tiny_model, out)
    assert result.exit_code == 2, result.output
    assert error_lines(result) == [f"error: {partial_path(paths.prob)}: {reason}"]
    assert "Traceback" not in result.output and not isinstance(result.exception, OSError)
    assert not paths.prob.exists() and not paths.mask.exists()  # nothing looks finished
    assert partial_path(paths.prob).exists()  # kept for --resume


def test_write_error_without_a_file_name(
    volume: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    def full(*args, **kwargs) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(PredictionWriter, "write", full)
    result = predict(volume, tiny_model, tmp_path / "out")
    assert result.exit_code == 2
    assert error_lines(result) == ["error: no space left on device"]


def test_other_os_errors_are_not_disguised(
    volume: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error that is not about space or permissions is a bug or a broken disk: it keeps
    its traceback instead of a tidy one-liner."""
    monkeypatch.chdir(tmp_path)

    def broken(*args, **kwargs) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO), "somewhere")

    monkeypatch.setattr(PredictionWriter, "write", broken)
    result = predict(volume, tiny_model, tmp_path / "out")
    assert result.exit_code == 1
    assert isinstance(result.exception, OSError) and result.exception.errno == errno.EIO


def test_evaluate_disk_full_leaves_no_finished_picture(
    tiny_dataset: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plots, metrics = tmp_path / "plots", tmp_path / "metrics.json"

    def full(self, fname, *args, **kwargs) -> None:
        Path(fname).write_bytes(b"\x89PNG\r\n\x1a\n")  # the first bytes made it to disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fname))

    monkeypatch.setattr(Figure, "savefig", full)
    args = ["evaluate", "--model", str(tiny_model), "--data-dir", str(tiny_dataset / "test")]
    args += ["--pred-dir", str(tmp_path / "pred"), "--plots", str(plots)]
    args += ["--metrics", str(metrics), "--no-mlflow", "--set", "infer.tile_size=16"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert error_lines(result) == [f"error: {plots / '003.mip.png.part'}: no space left on device"]
    assert not list(plots.glob("*.png")) and not metrics.exists()
    assert [p.name for p in plots.iterdir()] == ["003.mip.png.part"]


@pytest.mark.parametrize("fmt", ["npy", "raw", "tiff"])
def test_a_full_disk_is_found_when_the_output_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """Memory-mapped outputs reserve their blocks up front: a full disk is a clear error at
    creation (not a SIGBUS in the middle of a run) and leaves no partial file."""
    from vesselseg.errors import VesselsegError
    from vesselseg.io.writers import VolumeWriter

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    out = tmp_path / f"big.{'tif' if fmt == 'tiff' else fmt}"
    with pytest.raises(VesselsegError, match="cannot write .*No space left on device"):
        VolumeWriter(out, (8, 8, 8), np.float32, fmt=fmt)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- bad input, one table
# Each case builds its inputs under tmp_path and returns (command line, what the error must name).
# The output folder is tmp_path / "out"; commands run with tmp_path / "work" as working directory.


def cube(shape=(16, 16, 16)) -> np.ndarray:
    return np.random.default_rng(0).normal(100, 20, shape).astype(np.float32)


def labels(shape=(16, 16, 16), vessel: bool = True) -> np.ndarray:
    mask = np.full(shape, 2, np.uint8)
    mask[: shape[0] // 2] = 0  # not annotated
    if vessel:
        mask[-4:, 6:10, 6:10] = 1
    return mask


def pair(folder: Path, image: np.ndarray, mask: np.ndarray, sample_id: str = "0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"data_{sample_id}.npy", image)
    np.save(folder / f"mask_{sample_id}.npy", mask)
    return folder / f"mask_{sample_id}.npy"


def predict_args(tmp: Path, volume: Path | str, model: Path | str, *extra: str) -> list[str]:
    args = ["predict", str(volume), "--model", str(model), "--out-dir", str(tmp / "out")]
    return [*args, "--tile-size", "16", "--device", "cpu", *extra]


def train_args(tmp: Path, train_dir: Path, *extra: str) -> list[str]:
    val = tmp / "val"
    if not val.exists():
        pair(val, cube(), labels())
    args = ["train", "--train-dir", str(train_dir), "--val-dir", str(val)]
    args += ["--out", str(tmp / "out" / "m.pt"), "--accelerator", "cpu"]
    for item in [*TINY_TRAIN, "train.max_epochs=1", *extra]:
        args += ["--set", item]
    return args


def missing_volume(tmp: Path, model: Path):
    return predict_args(tmp, tmp / "missing.npy", model), tmp / "missing.npy"


def info_missing_path(tmp: Path, model: Path):
    return ["info", str(tmp / "no" / "volume.npy")], tmp / "no" / "volume.npy"


def missing_model(tmp: Path, model: Path):
    np.save(tmp / "vol.npy", cube())
    return predict_args(tmp, tmp / "vol.npy", tmp / "nope.pt"), tmp / "nope.pt"


def truncated_npy(tmp: Path, model: Path):
    path = tmp / "cut.npy"
    np.save(path, cube())
    path.write_bytes(path.read_bytes()[:500])
    return predict_args(tmp, path, model), path


def corrupt_tif(tmp: Path, model: Path):
    path = tmp / "bad.tif"
    path.write_bytes(b"II*\x00garbage" * 10)
    return predict_args(tmp, path, model), path


def raw_wrong_size(tmp: Path, model: Path):
    path = tmp / "vol.raw"
    path.write_bytes(cube().tobytes()[:-4])
    return predict_args(tmp, path, model, "--shape", "16,16,16", "--dtype", "float32"), path


def info_raw_wrong_size(tmp: Path, model: Path):
    path = tmp / "vol.raw"
    path.write_bytes(b"\x00" * 100)
    return ["info", str(path), "--shape", "4,4,4", "--dtype", "uint16"], path


def flat_2d(tmp: Path, model: Path):
    np.save(tmp / "flat.npy", cube((16, 16)))
    return predict_args(tmp, tmp / "flat.npy", model), tmp / "flat.npy"


def nan_intensities(tmp: Path, model: Path):
    data = cube()
    data[7, 1, 1] = np.nan
    np.save(tmp / "nan.npy", data)
    return predict_args(tmp, tmp / "nan.npy", model), tmp / "nan.npy"


def labels_outside_codes(tmp: Path, model: Path):
    mask = labels()
    mask[1, 1, 1] = 3
    path = pair(tmp / "train", cube(), mask)
    return train_args(tmp, path.parent), path


def info_labels_outside_codes(tmp: Path, model: Path):
    mask = labels()
    mask[1, 1, 1] = 7
    path = pair(tmp / "ds", cube(), mask)
    return ["info", str(path.parent)], path


def shape_mismatch(tmp: Path, model: Path):
    path = pair(tmp / "train", cube(), labels((16, 16, 12)))
    return train_args(tmp, path.parent), path


def empty_dataset(tmp: Path, model: Path):
    (tmp / "empty").mkdir()
    return train_args(tmp, tmp / "empty"), tmp / "empty"


def no_annotated_vessel(tmp: Path, model: Path):
    path = pair(tmp / "train", cube(), labels(vessel=False))
    return train_args(tmp, path.parent), path.parent


def negative_lr(tmp: Path, model: Path):
    path = pair(tmp / "train", cube(), labels())
    return train_args(tmp, path.parent, "train.lr=-1"), "train.lr"


def overlap_one(tmp: Path, model: Path):
    np.save(tmp / "vol.npy", cube())
    return predict_args(tmp, tmp / "vol.npy", model, "--set", "infer.overlap=1.0"), "infer.overlap"


def tile_not_multiple(tmp: Path, model: Path):
    np.save(tmp / "vol.npy", cube())
    args = predict_args(tmp, tmp / "vol.npy", model)
    return [*args, "--tile-size", "15"], "--tile-size"


def tile_too_big_for_memory(tmp: Path, model: Path):
    np.save(tmp / "vol.npy", cube())
    return predict_args(tmp, tmp / "vol.npy", model, "--tile-size", "2048"), "--tile-size"


def border_too_wide(tmp: Path, model: Path):
    np.save(tmp / "vol.npy", cube())
    return predict_args(tmp, tmp / "vol.npy", model, "--border", "8"), "--border"


def no_model(tmp: Path, model: Path):
    np.save(tmp / "vol.npy", cube())
    return ["predict", str(tmp / "vol.npy"), "--out-dir", str(tmp / "out")], "--model"


def unknown_blend(tmp: Path, model: Path):
    np.save(tmp / "vol.npy", cube())
    return predict_args(tmp, tmp / "vol.npy", model, "--blend", "cosine"), "infer.blend"


def other_model_type(tmp: Path, model: Path):
    """Weights of a 2D U-Net whose JSON says 3D U-Net."""
    from vesselseg.bundle import ModelMeta, save_bundle
    from vesselseg.config import ModelConfig, params_to_dict
    from vesselseg.models import build_model

    unet = ModelConfig(name="unet", base_channels=2, depth=2)
    weights = build_model(ModelConfig(name="unet2d", base_channels=2, depth=2)).state_dict()
    other = save_bundle(tmp / "other.pt", weights, ModelMeta(model=params_to_dict(unet)))
    np.save(tmp / "vol.npy", cube())
    return predict_args(tmp, tmp / "vol.npy", other), other


CASES = [
    missing_volume,  # (moved from test_inference.py::test_cli_errors_are_one_line)
    info_missing_path,  # (moved from test_cli.py::test_bad_input_is_one_line_exit_2)
    missing_model,  # (moved from test_inference.py::test_cli_errors_are_one_line)
    truncated_npy,
    corrupt_tif,
    raw_wrong_size,
    info_raw_wrong_size,
    flat_2d,
    nan_intensities,
    labels_outside_codes,
    info_labels_outside_codes,
    shape_mismatch,
    empty_dataset,
    no_annotated_vessel,
    negative_lr,
    overlap_one,
    tile_not_multiple,  # the next five: moved from test_inference.py::test_cli_errors_are_one_line
    tile_too_big_for_memory,
    border_too_wide,
    no_model,
    unknown_blend,
    other_model_type,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_line_exit_2(
    case, model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    monkeypatch.chdir(work)  # cache and MLflow folders go to the working directory
    args, names = case(tmp_path, model_file)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert str(names) in lines[0], (names, lines[0])
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert isinstance(result.exception, SystemExit), result.exception
    left = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert left == [], left


def test_tile_larger_than_the_volume_is_padded(model_file: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "small.npy", cube((12, 16, 20)))
    result = runner.invoke(
        app, predict_args(tmp_path, tmp_path / "small.npy", model_file, "--tile-size", "32")
    )
    assert result.exit_code == 0, result.output
    prob = np.load(tmp_path / "out" / "small.tiny.prob.npy")
    assert prob.shape == (12, 16, 20) and np.isfinite(prob).all()
