"""Shared fixtures: small synthetic datasets made with the real generator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("VESSELSEG_PROGRESS", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/val/test/unlabelled splits of 32x40x48 volumes (npy)."""
    from vesselseg.config import SynthConfig
    from vesselseg.synth import synthesize_dataset

    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(
        shape=[32, 40, 48],
        n_train=2,
        n_val=1,
        n_test=1,
        n_unlabelled=1,
        annotated_fraction=0.02,
        slab=16,
    )
    synthesize_dataset(cfg, out)
    return out


@pytest.fixture(autouse=True)
def _no_cache_dir_from_cli():
    """CLI commands set $VESSELSEG_CACHE_DIR from params, and MLflow's ``set_tracking_uri``
    (called by Lightning's logger) sets $MLFLOW_TRACKING_URI: keep both from leaking between
    tests."""
    saved = os.environ.pop("VESSELSEG_CACHE_DIR", None)
    saved_uri = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    os.environ.pop("VESSELSEG_CACHE_DIR", None)
    if saved is not None:
        os.environ["VESSELSEG_CACHE_DIR"] = saved
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if saved_uri is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved_uri


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    """A saved (untrained, seeded) 2-level U-Net with 2 base channels: ``stage1.pt`` + JSON."""
    import torch

    from vesselseg.bundle import ModelMeta, save_bundle
    from vesselseg.config import ModelConfig, params_to_dict
    from vesselseg.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(base_channels=2, depth=2)
    return save_bundle(
        tmp_path / "stage1.pt",
        build_model(cfg).state_dict(),
        ModelMeta(model=params_to_dict(cfg), tile_size=[16, 16, 16]),
    )


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty embedded MLflow store folder (``$MLFLOW_TRACKING_URI`` unset)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "mlruns"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved (untrained, seeded) 2-level U-Net with 2 base channels, default settings."""
    import torch

    from vesselseg.bundle import ModelMeta, save_bundle
    from vesselseg.config import ModelConfig, params_to_dict
    from vesselseg.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(name="unet", base_channels=2, depth=2, norm="batch")
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_bundle(path, build_model(cfg).state_dict(), ModelMeta(model=params_to_dict(cfg)))
    return path
