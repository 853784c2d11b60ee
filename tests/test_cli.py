"""The Typer CLI: help, one-line errors with exit code 2, synth and info."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vesselseg.cli import app

runner = CliRunner()
PLANNED = [
    "prepare",
    "train",
    "predict",
    "evaluate",
    "pseudo",
    "register",
    "models",
    "tune",
    "submit",
]


def test_help_lists_every_stage() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ["synth", "info", *PLANNED]:
        assert command in result.output


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from vesselseg.cli import app; "
        "heavy = [m for m in ('torch', 'mlflow', 'lightning', 'pytorch_lightning', 'optuna', "
        "'dvc', "
        "'numpy', 'monai') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_synth_then_info(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    result = runner.invoke(
        app,
        [
            "synth",
            str(out),
            "--n-train",
            "1",
            "--n-val",
            "0",
            "--n-test",
            "0",
            "--n-unlabelled",
            "0",
            "--size",
            "24,32,40",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 1 volumes" in result.output
    image = np.load(out / "train" / "data_000.npy")
    assert image.shape == (24, 32, 40)
    result = runner.invoke(app, ["info", str(out / "train")])
    assert result.exit_code == 0 and "000" in result.output and "annotated" in result.output
    result = runner.invoke(app, ["info", str(out / "train" / "mask_000.npy")])
    assert "labels: unannotated" in result.output and "(24, 32, 40)" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["synth", "--size", "ab"], "--size: expected"),
        (["synth", "--format", "png"], "synth.format must be one of"),
        (["synth", "--set", "synth.bogus=1"], "unknown key"),
        (["synth", "--params", "/no/params.yaml"], "params file not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args: list[str], message: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_console_script_and_shim_exit_2_without_traceback(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(root / "cli.py"), "info", str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_option_names_are_consistent_across_commands() -> None:
    """One name per meaning: folders read are --data-dir, folders written --out-dir, the one
    file written --out; other spellings are only aliases after the canonical name."""
    import typer.main

    group = typer.main.get_command(app)
    primary: dict[str, set[str]] = {}
    for name, command in group.commands.items():
        for param in command.params:
            opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
            if opts:
                primary.setdefault(opts[0], set()).add(name)
    aliases = ("--save-dir", "--save_dir", "--in-dir", "--output", "--output-dir", "--data_dir")
    seed_spellings = ("--batch_size", "--crop_size", "--max_epochs", "--min_lr", "--file_type")
    for alias in (*aliases, *seed_spellings):
        assert alias not in primary, f"{alias} is the main name of {primary[alias]}"
    assert {"predict", "pseudo"} <= primary["--out-dir"]
    assert {"predict", "evaluate", "pseudo", "train", "tune"} <= primary["--data-dir"]
    assert {"train", "prepare", "submit", "ensemble"} <= primary["--out"]
    for command in group.commands.values():
        assert "Example:" in (command.help or ""), f"{command.name}: no example in --help"
