"""A real (tiny) training run: MLflow params/metrics/artifacts, checkpoints, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vesselseg.bundle import build_from_bundle, load_bundle
from vesselseg.config import Params, apply_overrides
from vesselseg.errors import ConfigError, VesselsegError
from vesselseg.training.fit import train_model
from vesselseg.training.module import cosine_with_warmup

TINY = [
    "model.base_channels=4",
    "model.depth=2",
    "data.crop_size=16",
    "infer.tile_size=16",
    "data.samples_per_volume=2",
    "train.batch_size=2",
    "train.overlay_every_n_epochs=1",
    "train.experiment=test",
]


def tiny_params(dataset: Path, *extra: str) -> Params:
    return apply_overrides(
        Params(),
        [*TINY, f"data.train_dir={dataset / 'train'}", f"data.val_dir={dataset / 'val'}", *extra],
    )


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "mlruns"


def test_two_epochs_log_to_mlflow_and_write_checkpoints(
    tiny_dataset: Path, tmp_path: Path, store: Path
) -> None:
    from vesselseg import tracking

    out = tmp_path / "models" / "m.pt"
    result = train_model(tiny_params(tiny_dataset, "train.max_epochs=2"), out, mlflow_root=store)
    assert result.epochs == 2
    assert (result.checkpoint_dir / "last.ckpt").is_file()
    assert (result.checkpoint_dir / "best.ckpt").is_file()
    net, meta = build_from_bundle(out)
    assert type(net).__name__ == "UNet3D" and meta.model["base_channels"] == 4
    assert meta.info["run_id"] == result.run_id

    client = tracking.client(store)
    run = client.get_run(result.run_id)
    assert run.data.params["train.max_epochs"] == "2"
    assert run.data.params["model.name"] == "unet"
    history = client.get_metric_history(result.run_id, "val_dice")
    assert len(history) == 2 and all(0.0 <= m.value <= 1.0 for m in history)
    assert client.get_metric_history(result.run_id, "train_loss")
    artifacts = {
        a.path
        for folder in ("model", "checkpoints", "overlays")
        for a in client.list_artifacts(result.run_id, folder)
    }
    assert {"model/m.pt", "model/m.json", "checkpoints/best.ckpt"} <= artifacts
    assert {"overlays/epoch_000.png", "overlays/epoch_001.png"} <= artifacts
    assert run.data.tags["git_commit"]


def test_resume_continues_from_last_epoch(tiny_dataset: Path, tmp_path: Path, store: Path) -> None:
    from vesselseg import tracking

    out = tmp_path / "m.pt"
    first = train_model(tiny_params(tiny_dataset, "train.max_epochs=1"), out, mlflow_root=store)
    second = train_model(
        tiny_params(tiny_dataset, "train.max_epochs=3"), out, resume=True, mlflow_root=store
    )
    assert second.run_id == first.run_id  # the same MLflow run goes on
    assert second.epochs == 3
    history = tracking.client(store).get_metric_history(first.run_id, "val_dice")
    assert sorted(m.step for m in history) == sorted(set(m.step for m in history))
    assert len(history) == 3  # epochs 0 (first run), 1 and 2 (resumed), no repeat
    assert json.loads((second.checkpoint_dir / "run.json").read_text())["run_id"] == first.run_id

    # an uninterrupted deterministic run ends with exactly the same weights
    straight = tmp_path / "straight.pt"
    train_model(tiny_params(tiny_dataset, "train.max_epochs=3"), straight, mlflow_root=store)
    a, _ = load_bundle(out)
    b, _ = load_bundle(straight)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_is_an_error(
    tiny_dataset: Path, tmp_path: Path, store: Path
) -> None:
    with pytest.raises(VesselsegError, match="nothing to resume"):
        train_model(tiny_params(tiny_dataset), tmp_path / "m.pt", resume=True, mlflow_root=store)


def test_crop_not_divisible_by_network_is_an_error(
    tiny_dataset: Path, tmp_path: Path, store: Path
) -> None:
    params = tiny_params(tiny_dataset, "model.depth=3", "data.crop_size=18")
    with pytest.raises(ConfigError, match="data.crop_size .* multiple of 4"):
        train_model(params, tmp_path / "m.pt", mlflow_root=store)


def test_cosine_schedule_warms_up_then_decays() -> None:
    factor = cosine_with_warmup(warmup=2, total=10, floor=0.01)
    values = [factor(e) for e in range(12)]
    assert values[0] < values[1] < values[2] == 1.0
    assert all(a >= b for a, b in zip(values[2:], values[3:]))
    assert values[10] == pytest.approx(0.01) and values[11] == pytest.approx(0.01)
