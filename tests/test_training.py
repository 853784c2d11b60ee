"""A real (tiny) training run: MLflow params/metrics/artifacts, checkpoints.

Resume tests (in-process and after SIGKILL) live in tests/test_crash_recovery.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import tiny_params

from vesselseg.bundle import build_from_bundle
from vesselseg.errors import ConfigError, VesselsegError
from vesselseg.training.fit import train_model
from vesselseg.training.module import cosine_with_warmup


def test_two_epochs_log_to_mlflow_and_write_checkpoints(
    tiny_dataset: Path, tmp_path: Path, store: Path
) -> None:
    import mlflow

    from vesselseg import tracking

    out = tmp_path / "models" / "m.pt"
    before = mlflow.get_tracking_uri()
    result = train_model(tiny_params(tiny_dataset, "train.max_epochs=2"), out, mlflow_root=store)
    assert result.epochs == 2
    # Lightning's logger sets MLflow's process-wide URI; train_model puts it back
    assert mlflow.get_tracking_uri() == before and "MLFLOW_TRACKING_URI" not in os.environ
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
    # train.model_from: last (the default) saves the last epoch's weights and its score
    assert saved_equals(out, result.checkpoint_dir / "last.ckpt")
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert meta.info["model_from"] == "last" and result.score == pytest.approx(values[-1])
    assert meta.info["score"] == pytest.approx(values[-1])
    assert meta.info["best_score"] == pytest.approx(max(values))
    assert client.get_metric_history(result.run_id, "train_loss")
    artifacts = {
        a.path
        for folder in ("model", "checkpoints", "overlays")
        for a in client.list_artifacts(result.run_id, folder)
    }
    assert {"model/m.pt", "model/m.json", "checkpoints/last.ckpt"} <= artifacts
    assert {"overlays/epoch_000.png", "overlays/epoch_001.png"} <= artifacts
    assert run.data.tags["git_commit"]

    # lineage: the training and validation folders are the run's dataset inputs
    from vesselseg.lineage import dataset_ref

    inputs = {
        (i.dataset.name, i.dataset.digest, tuple(t.value for t in i.tags))
        for i in run.inputs.dataset_inputs
    }
    train, val = dataset_ref(tiny_dataset / "train"), dataset_ref(tiny_dataset / "val")
    assert inputs == {
        (train.name, train.digest, ("training",)),
        (val.name, val.digest, ("validation",)),
    }
    # the experiment opens on training runs in MLflow 3's UI, not its GenAI view
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    # training curves: beside the model and in the run
    curves = out.with_suffix(".curves.png")
    assert curves.read_bytes()[:4] == b"\x89PNG"
    assert "plots/m.curves.png" in {a.path for a in client.list_artifacts(result.run_id, "plots")}


def saved_equals(model: Path, checkpoint: Path) -> bool:
    """Whether the saved model's weights are exactly the network weights of ``checkpoint``."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    net, _ = build_from_bundle(model)
    return all(torch.equal(v, state[f"net.{k}"]) for k, v in net.state_dict().items())


def test_model_from_best_saves_the_best_monitored_epoch(
    tiny_dataset: Path, tmp_path: Path, store: Path
) -> None:
    """train.model_from: best saves best.ckpt's weights. The monitor is the validation loss,
    maximised, so the "best" epoch is the worst one and differs from the last."""
    out = tmp_path / "m.pt"
    settings = ("train.max_epochs=3", "train.monitor=val_loss", "train.monitor_mode=max")
    params = tiny_params(tiny_dataset, *settings, "train.model_from=best")
    result = train_model(params, out, mlflow_root=store)
    from vesselseg import tracking

    history = tracking.client(store).get_metric_history(result.run_id, "val_loss")
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert values.index(max(values)) != len(values) - 1  # the premise: best is not last
    assert saved_equals(out, result.checkpoint_dir / "best.ckpt")
    assert not saved_equals(out, result.checkpoint_dir / "last.ckpt")
    assert result.score == pytest.approx(max(values)) == result.best_score


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


def test_ema_saves_the_averaged_weights_without_changing_training(
    tiny_dataset: Path, tmp_path: Path, store: Path
) -> None:
    """train.ema_decay: the raw weights follow the same trajectory as without averaging (same
    seed, deterministic), while the checkpoints and the saved model hold the average."""
    import torch

    plain = train_model(
        tiny_params(tiny_dataset, "train.max_epochs=2"), tmp_path / "plain.pt", mlflow_root=store
    )
    ema = train_model(
        tiny_params(tiny_dataset, "train.max_epochs=2", "train.ema_decay=0.5"),
        tmp_path / "ema.pt",
        mlflow_root=store,
    )

    def load(path: Path) -> dict:
        return torch.load(path, map_location="cpu", weights_only=True)

    raw_plain = load(plain.checkpoint_dir / "last.ckpt")["state_dict"]
    last = load(ema.checkpoint_dir / "last.ckpt")
    raw_ema, averaged = last["current_model_state"], last["state_dict"]
    assert raw_plain.keys() == raw_ema.keys()
    for key in raw_plain:
        torch.testing.assert_close(raw_ema[key], raw_plain[key], rtol=0, atol=0)
    weights = [k for k in raw_ema if k.endswith("weight")]
    assert any(not torch.equal(averaged[k], raw_ema[k]) for k in weights)
    net, _ = build_from_bundle(tmp_path / "ema.pt")
    for name, value in net.state_dict().items():
        torch.testing.assert_close(value, averaged[f"net.{name}"], rtol=0, atol=0)
