"""Synthetic vessel data: determinism, slab invariance, Murray's law, annotation statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vesselseg.config import SynthConfig
from vesselseg.io import discover_dataset, open_volume
from vesselseg.synth import iter_volume, murray_split, plan_volume, synthesize_dataset

CFG = SynthConfig()


def render(shape: tuple[int, int, int], seed: int, slab: int) -> tuple[np.ndarray, ...]:
    plan = plan_volume(shape, seed, CFG)
    parts = list(iter_volume(plan, slab))
    return tuple(np.concatenate([p[i] for p in parts]) for i in (1, 2, 3))


def test_deterministic_per_seed() -> None:
    a = render((40, 48, 56), 7, 16)
    b = render((40, 48, 56), 7, 16)
    c = render((40, 48, 56), 8, 16)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_identical_for_any_slab_size() -> None:
    a = render((40, 48, 56), 3, 40)
    b = render((40, 48, 56), 3, 7)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("asymmetry", [0.5, 0.8, 1.0])
def test_murray_law(asymmetry: float) -> None:
    r1, r2, t1, t2 = murray_split(4.0, asymmetry)
    assert math.isclose(r1**3 + r2**3, 4.0**3, rel_tol=1e-9)
    assert math.isclose(r2 / r1, asymmetry)
    assert 0 < t1 <= t2 < math.pi / 2 + 1e-9  # the thinner branch turns more


def test_annotation_is_sparse_human_like_and_consistent_with_truth() -> None:
    for seed in range(4):
        image, truth, mask = render((64, 64, 64), seed, 32)
        annotated = (mask > 0).mean()
        assert 0.005 <= annotated <= 0.02, annotated
        assert (mask == 1).sum() > 0 and (mask == 2).sum() > 0
        assert (truth[mask == 1] == 1).all()  # vessel labels are truth vessel
        assert (truth[mask == 2] == 0).all()  # background labels are truth background
        # annotations lie on 2D planes: every annotated voxel shares a plane with a patch
        assert set(np.unique(mask)) <= {0, 1, 2}
        assert 0.002 < truth.mean() < 0.2
        # vessels differ in intensity from tissue (brighter or darker)
        assert abs(image[truth == 1].mean() - image[truth == 0].mean()) > 0.1


def test_unlabelled_band_leaves_the_rim_outside_vessels_at_zero() -> None:
    """Band 0: a box is labelled everywhere, 1 exactly on truth vessel; a band of 0.5 voxel
    (the default) leaves the voxels just outside vessels unlabelled and nothing else changes."""
    shape = (48, 48, 48)
    full = plan_volume(shape, 5, SynthConfig(unlabelled_band=0.0))
    rim = plan_volume(shape, 5, CFG)
    (_, truth, a), (_, _, b) = (list(iter_volume(p, 48))[0][1:] for p in (full, rim))
    boxes = a > 0
    assert np.array_equal(a[boxes] == 1, truth[boxes] == 1)
    assert np.array_equal(b > 0, boxes & (b > 0)) and (b[boxes] == 0).any()
    unlabelled = boxes & (b == 0)
    assert (truth[unlabelled] == 0).all() and np.array_equal(a[b > 0], b[b > 0])


def test_vessels_brighter_or_darker() -> None:
    signs = set()
    for seed in range(8):
        image, truth, _ = render((32, 32, 32), seed, 32)
        signs.add(np.sign(image[truth == 1].mean() - image[truth == 0].mean()))
    assert signs == {-1.0, 1.0}


def test_radii_span_the_configured_range() -> None:
    plan = plan_volume((96, 96, 96), 0, CFG)
    radii = [s.r0 for s in plan.segments]
    assert max(radii) <= CFG.max_radius + 1e-9 and min(radii) >= CFG.min_radius * 0.8
    assert max(radii) / min(radii) > 2.5


@pytest.mark.parametrize("fmt", ["npy", "tiff", "zarr"])
def test_dataset_layout_and_formats(tmp_path: Path, fmt: str) -> None:
    cfg = SynthConfig(
        shape=[24, 32, 40],
        n_train=1,
        n_val=1,
        n_test=1,
        n_unlabelled=1,
        format=fmt,
        slab=10,
        annotated_fraction=0.02,
    )
    ids = synthesize_dataset(cfg, tmp_path)
    assert ids == {"train": ["000"], "val": ["001"], "test": ["002"], "unlabelled": ["003"]}
    (sample,) = discover_dataset(tmp_path / "train", require_masks=True)
    assert sample.open_image().shape == (24, 32, 40)
    assert sample.open_mask().dtype == np.uint8
    (unlabelled,) = discover_dataset(tmp_path / "unlabelled")
    assert unlabelled.mask is None and unlabelled.truth is not None
    assert not list(tmp_path.rglob("*.part"))


def test_written_files_match_rendering(tmp_path: Path) -> None:
    cfg = SynthConfig(shape=[20, 24, 28], n_train=1, n_val=0, n_test=0, n_unlabelled=0, slab=8)
    synthesize_dataset(cfg, tmp_path)
    from vesselseg.synth import volume_seed

    plan = plan_volume((20, 24, 28), volume_seed(cfg.seed, 0), cfg)
    image = np.concatenate([p[1] for p in iter_volume(plan, 20)])
    np.testing.assert_array_equal(open_volume(tmp_path / "train" / "data_000.npy")[:], image)


def test_same_vessels_at_any_voxel_size(tmp_path: Path) -> None:
    """The same seed and physical extent give the same tree at 1, 2 and 0.5 um: the physical
    vessel volume agrees within 3 %, and each volume records its spacing."""
    from typer.testing import CliRunner

    from vesselseg.cli import app
    from vesselseg.io import open_volume

    volumes = {}
    for size, spacing in ((64, "1"), (32, "2"), (128, "0.5")):
        out = tmp_path / spacing
        args = ["synth", str(out), "--n-train", "0", "--n-val", "0", "--n-test", "1"]
        args += ["--n-unlabelled", "0", "--size", str(size), "--spacing", spacing, "--seed", "3"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        truth = open_volume(out / "test" / "truth_000.npy")
        assert truth.voxel_size.spacing == (float(spacing),) * 3 and truth.voxel_size.known
        volumes[spacing] = float(np.asarray(truth).sum()) * float(spacing) ** 3
    assert volumes["1"] > 1000
    assert volumes["2"] == pytest.approx(volumes["1"], rel=0.03)
    assert volumes["0.5"] == pytest.approx(volumes["1"], rel=0.03)
