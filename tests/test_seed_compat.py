"""Seed 000's command lines (the DTU V-Net tool) run unchanged through ``vesselseg``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from vesselseg.cli import app

runner = CliRunner()


@pytest.fixture()
def seed_model(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``train unet --data_dir D --batch_size … --normalization g`` as seed 000 writes it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    line = (
        f"train unet --data_dir {tiny_dataset} --batch_size 2 --crop_size 16 "
        "--samples_per_volume 3 --num_loader_workers 0 --min_lr 5e-5 --lr_reduce_factor 0.8 "
        "--normalization g --max_epochs 1 --out models/seed.pt"
    ).split()
    tiny = ["--set", "model.base_channels=4", "--set", "model.depth=2"]
    result = runner.invoke(app, [*line, *tiny, "--set", "infer.tile_size=16"])
    assert result.exit_code == 0, result.output
    return tmp_path / "models" / "seed.pt"


def test_seed_training_line_sets_every_option(seed_model: Path) -> None:
    from vesselseg import tracking
    from vesselseg.bundle import load_meta

    meta = load_meta(seed_model)
    assert meta.model["name"] == "unet" and meta.model["norm"] == "group"
    params = tracking.client(seed_model.parents[1] / "mlruns").get_run(meta.info["run_id"])
    logged = params.data.params
    expected = {
        "train.batch_size": "2",
        "data.crop_size": "[16, 16, 16]",
        "data.samples_per_volume": "3",
        "data.num_loader_workers": "0",
        "train.min_lr": "5e-05",
        "train.lr_reduce_factor": "0.8",
        "train.max_epochs": "1",
        "model.norm": "group",
    }
    assert {k: logged[k] for k in expected} == expected


def test_seed_inference_line_checks_the_architecture(
    seed_model: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    test_dir = tiny_dataset / "test"
    line = (
        f"predict {seed_model} --data_dir {test_dir} --save_dir preds --crop_size 16 "
        "--file_type npy --border 2"
    ).split()
    result = runner.invoke(app, [*line, "--model", "unet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "preds").glob("*.mask.npy"))

    wrong = runner.invoke(app, [*line, "--model", "vnet"])
    assert wrong.exit_code == 2
    assert "holds a unet network, not a vnet" in wrong.output
    assert len(wrong.output.strip().splitlines()) == 1


def test_architecture_names_are_checked() -> None:
    result = runner.invoke(app, ["train", "resnet"])
    assert result.exit_code == 2 and "expected one of vnet, unet, unet2d" in result.output
    result = runner.invoke(app, ["train", "unet", "--model", "vnet"])
    assert result.exit_code == 2 and "give the network once" in result.output
