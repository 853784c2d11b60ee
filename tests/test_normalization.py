"""Dataset-level intensity normalisation (``data.normalization: dataset``, nnU-Net's CT
scheme): statistics from the plan's fingerprint, the same transform in training crops and at
inference, carried by the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vesselseg.bundle import ModelMeta, load_meta, save_bundle
from vesselseg.cli import app
from vesselseg.config import InferConfig, ModelConfig, Params, apply_overrides, params_to_dict
from vesselseg.data.datamodule import dataset_intensity
from vesselseg.data.datasets import prepare_volumes
from vesselseg.data.normalize import (
    DatasetIntensity,
    load_or_compute_stats,
    normaliser,
    normalize,
    zscore,
)
from vesselseg.errors import ConfigError
from vesselseg.inference.run import predict_path
from vesselseg.io import open_volume
from vesselseg.io.dataset import discover_dataset

runner = CliRunner()


def test_zscore_clips_then_standardises() -> None:
    raw = np.array([-10.0, 0.0, 5.0, 10.0, 50.0])
    np.testing.assert_allclose(zscore(raw, 0.0, 10.0, 4.0, 2.0), [-2.0, -2.0, 0.5, 3.0, 3.0])
    transform, pad = normaliser(None, DatasetIntensity(0.0, 10.0, 4.0, 2.0))
    assert pad == 0.0 and np.array_equal(transform(raw), zscore(raw, 0.0, 10.0, 4.0, 2.0))
    with pytest.raises(ConfigError, match="intensity_stats"):
        dataset_intensity(apply_overrides(Params(), ["data.normalization=dataset"]).data)
    with pytest.raises(ConfigError, match="intensity_stats"):
        apply_overrides(Params(), ["data.intensity_stats=[5, 1, 0, 1]"])


def two_volumes(folder: Path) -> list[np.ndarray]:
    """Two volumes of very different brightness, a box of labels in each."""
    folder.mkdir(parents=True)
    images = []
    for i, (gain, offset) in enumerate(((1.0, 0.0), (3.0, 50.0))):
        rng = np.random.default_rng(i)
        image = (offset + gain * rng.gamma(2.0, 10.0, (16, 32, 32))).astype(np.float32)
        mask = np.zeros(image.shape, np.uint8)
        mask[4:12, 4:20, 4:20] = np.where(image[4:12, 4:20, 4:20] > np.median(image), 1, 2)
        np.save(folder / f"data_{i}.npy", image)
        np.save(folder / f"mask_{i}.npy", mask)
        images.append(image)
    return images


def test_the_plan_computes_the_statistics_and_crops_use_them(tmp_path: Path) -> None:
    from vesselseg.plan import plan_dataset

    images = two_volumes(tmp_path / "train")
    values = np.concatenate([im[4:12, 4:20, 4:20].ravel() for im in images]).astype(np.float64)
    want = [*np.percentile(values, [0.5, 99.5]), values.mean(), values.std()]
    params = apply_overrides(Params(), ["data.normalization=dataset"])
    plan = plan_dataset(tmp_path / "train", params, {"data.normalization"})
    got = plan.values["data.intensity_stats"]
    assert got.source == "fingerprint"
    np.testing.assert_allclose(got.value, want, rtol=1e-4)  # percentiles from float32 values
    assert "data.intensity_stats" not in plan_dataset(tmp_path / "train", Params()).values

    stats = DatasetIntensity.from_list(got.value)
    samples = discover_dataset(tmp_path / "train", require_masks=True)
    entries = prepare_volumes(samples, [0.5, 99.5], tmp_path / "cache", intensity=stats)
    for entry, image in zip(entries, images, strict=True):
        assert np.array_equal(entry.normalize(image), zscore(image, *got.value))
        assert entry.pad_value == stats.lo
    per_volume = prepare_volumes(samples, [0.5, 99.5], tmp_path / "cache")
    lo, hi = per_volume[1].stats.lo, per_volume[1].stats.hi
    assert np.array_equal(per_volume[1].normalize(images[1]), normalize(images[1], lo, hi))


def tiny_model(folder: Path, intensity: list[float] | None) -> Path:
    import torch

    from vesselseg.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(base_channels=2, depth=2)
    meta = ModelMeta(model=params_to_dict(cfg), tile_size=[16, 16, 16], intensity=intensity)
    return save_bundle(folder / "m.pt", build_model(cfg).state_dict(), meta)


@pytest.mark.parametrize("intensity", [None, [20.0, 90.0, 40.0, 15.0]])
def test_inference_normalises_as_the_model_was_trained(
    tmp_path: Path, intensity: list[float] | None
) -> None:
    """With the network replaced by the identity, the output is the network's input: the
    dataset transform for a dataset-normalised model, the volume's percentiles otherwise."""
    model = tiny_model(tmp_path, intensity)
    volume = tmp_path / "in" / "vol.npy"
    volume.parent.mkdir()
    raw = np.random.default_rng(0).gamma(2.0, 20.0, (16, 16, 16)).astype(np.float32)
    np.save(volume, raw)
    summary = predict_path(
        volume, model, tmp_path / "out", InferConfig(tile_size=16), device="cpu",
        show_progress=False, net_hook=lambda fn: lambda x: x,
    )  # fmt: skip
    prob = np.load(summary.results[0].outputs.prob)
    if intensity is None:
        stats = load_or_compute_stats(open_volume(volume), [0.5, 99.5])
        want = normalize(raw, stats.lo, stats.hi)
    else:
        want = zscore(raw, *intensity)
    np.testing.assert_allclose(prob, want, rtol=0, atol=1e-5)


def test_train_records_the_planned_statistics(tiny_dataset: Path, tmp_path: Path) -> None:
    from helpers import TINY_TRAIN

    from vesselseg.plan import fingerprint_dataset

    sets = [a for s in [*TINY_TRAIN, "data.normalization=dataset"] for a in ("--set", s)]
    out = tmp_path / "m.pt"
    args = ["train", "--data-dir", str(tiny_dataset), "--max-epochs", "1", "--out", str(out)]
    result = runner.invoke(app, [*args, *sets, "--set", f"data.cache_dir={tmp_path / 'c'}"])
    assert result.exit_code == 0, result.output
    annotated = fingerprint_dataset(discover_dataset(tiny_dataset / "train")).annotated
    want = [annotated.p0_5, annotated.p99_5, annotated.mean, annotated.std]
    np.testing.assert_allclose(load_meta(out).intensity, want, rtol=0, atol=1e-6)  # 6 places


def test_percentiles_of_a_resampled_view_are_its_own_and_cached_apart(tmp_path: Path) -> None:
    """A finer scan is noisier per voxel: the percentiles that normalise it come from the view
    the network sees (here averaged 2x per axis, so less spread), cached under the view's
    shape."""
    from vesselseg.inference.resample import ResampledVolume

    rng = np.random.default_rng(0)
    path = tmp_path / "fine.npy"
    np.save(path, rng.normal(100.0, 20.0, (32, 40, 48)).astype(np.float32))
    volume = open_volume(path)
    view = ResampledVolume(volume, (16, 20, 24))
    raw = load_or_compute_stats(volume, [0.5, 99.5])
    seen = load_or_compute_stats(volume, [0.5, 99.5], view=view)
    want = np.percentile(np.asarray(view[...], np.float64), [0.5, 99.5])
    assert (seen.lo, seen.hi) == pytest.approx(tuple(want), rel=1e-6)
    assert seen.hi - seen.lo < 0.6 * (raw.hi - raw.lo)  # noise std / sqrt(8)
    # the cache beside the volume never hands one's percentiles to the other
    assert load_or_compute_stats(volume, [0.5, 99.5], view=view) == seen
    assert load_or_compute_stats(volume, [0.5, 99.5]) == raw
