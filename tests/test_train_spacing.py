"""Training at a target voxel size: crops resampled on the fly, zoom augmentation, in-plane
rotations for anisotropic data, and the spacing recorded in the saved model."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_params
from scipy import ndimage

from vesselseg.bundle import ModelMeta, load_meta, read_settings
from vesselseg.config import DataConfig, Params, SynthConfig, apply_overrides
from vesselseg.data.augment import augment, coarse_factors, rot90_planes, simulate_low_resolution
from vesselseg.data.crops import CropSampler, read_box
from vesselseg.data.datamodule import VesselDataModule
from vesselseg.data.datasets import (
    AugmentParams,
    FixedCropDataset,
    RandomCropDataset,
    VolumeEntry,
    prepare_volumes,
)
from vesselseg.data.resample import CropBox, linear_resample, nearest_resample
from vesselseg.data.target_spacing import resolve_target_spacing, source_step
from vesselseg.errors import ConfigError
from vesselseg.io import Sample
from vesselseg.io.spacing import UNKNOWN, SpacingError, VoxelSize, voxel_size
from vesselseg.io.writers import write_volume
from vesselseg.synth.plan import plan_volume
from vesselseg.synth.render import iter_volume

UM = "um"


def _render(shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int = 7):
    """``(image, truth, sparse mask)`` of the synthetic volume ``seed`` on the grid ``shape``
    at ``spacing``: the same vessels for the same physical extent."""
    plan = plan_volume(shape, seed, SynthConfig(), spacing=spacing)
    parts = list(iter_volume(plan, 64))
    return tuple(np.concatenate([p[k] for p in parts]) for k in (1, 2, 3))


def _write(
    folder: Path,
    name: str,
    image: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float] | None,
    unit: str = UM,
) -> Sample:
    """``data_<name>.npy`` + ``mask_<name>.npy`` with a voxel-size sidecar (none for None)."""
    folder.mkdir(parents=True, exist_ok=True)
    vs = voxel_size(spacing, unit) if spacing is not None else None
    write_volume(folder / f"data_{name}.npy", image, voxel_size=vs)
    write_volume(folder / f"mask_{name}.npy", mask, voxel_size=vs)
    return Sample(name, folder / f"data_{name}.npy", folder / f"mask_{name}.npy")


def _dense(truth: np.ndarray) -> np.ndarray:
    """Every voxel annotated: 1 vessel, 2 background."""
    return np.where(truth > 0, 1, 2).astype(np.uint8)


@pytest.fixture(scope="module")
def fine_and_coarse(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same vessels rendered at (1, 1, 1) um (48³) and at (2, 1, 1) um (24 x 48 x 48),
    with dense and with sparse masks."""
    root = tmp_path_factory.mktemp("spacings")
    out: dict = {"root": root}
    for name, shape, spacing in (
        ("fine", (48, 48, 48), (1.0, 1.0, 1.0)),
        ("coarse", (24, 48, 48), (2.0, 1.0, 1.0)),
    ):
        image, truth, mask = _render(shape, spacing)
        out[name] = (image, truth, mask)
        out[f"{name}_dense"] = _write(root / "dense", name, image, _dense(truth), spacing)
        out[f"{name}_sparse"] = _write(root / "sparse", name, image, mask, spacing)
    return out


def _entries(*samples: Sample, cache: Path) -> list[VolumeEntry]:
    return prepare_volumes(list(samples), [0.5, 99.5], cache_dir=cache)


ISO = VoxelSize((1.0, 1.0, 1.0), UM, True)


# --------------------------------------------------------------------------- resampling


def test_linear_resample_is_scipy_trilinear_and_exact_on_voxels() -> None:
    rng = np.random.default_rng(0)
    array = rng.random((9, 11, 13)).astype(np.float32)
    coords = [0.3 + np.arange(7) * 1.1, 0.05 + np.arange(9) * 0.8, 1.5 + np.arange(5) * 2.2]
    grid = np.stack(np.meshgrid(*coords, indexing="ij"))
    want = ndimage.map_coordinates(array.astype(np.float64), grid, order=1, prefilter=False)
    np.testing.assert_allclose(linear_resample(array, coords), want, atol=1e-5)
    integer = [np.arange(2, 8), np.arange(0, 11, 2), np.arange(3, 6)]
    np.testing.assert_array_equal(linear_resample(array, integer), array[np.ix_(*integer)])
    labels = rng.integers(0, 3, (9, 11, 13)).astype(np.uint8)
    near = nearest_resample(labels, coords)
    want = ndimage.map_coordinates(labels, grid, order=0, prefilter=False)
    assert near.dtype == np.uint8 and np.array_equal(near, want)


def test_read_box_reads_only_the_needed_region_plus_a_margin() -> None:
    reads = []

    class Spy:
        shape, dtype = (40, 50, 60), np.dtype(np.float32)

        def __getitem__(self, key):
            reads.append(tuple((k.start, k.stop) for k in key))
            z, y, x = np.meshgrid(*(np.arange(k.start, k.stop) for k in key), indexing="ij")
            return (z + 10 * y + 100 * x).astype(np.float32)

    box = CropBox((10.0, 5.5, 20.25), (0.5, 2.0, 1.5), (8, 8, 8))
    image = read_box(Spy(), box, True)
    # samples 10..13.5, 5.5..19.5, 20.25..30.75 need voxels 10..14, 5..20, 20..31; +1 margin
    assert reads == [((9, 16), (4, 22), (19, 33))]
    z, y, x = (box.coordinates(a) for a in range(3))
    want = z[:, None, None] + 10 * y[None, :, None] + 100 * x[None, None, :]
    np.testing.assert_allclose(image, want, rtol=1e-5)  # trilinear is exact on a linear ramp


def test_target_spacing_rules() -> None:
    a, b, c = (voxel_size(s) for s in ((2.0, 1.0, 1.0), (1.0, 1.0, 1.0), (5.0, 0.5, 0.5)))
    assert resolve_target_spacing([a, b, c]) == VoxelSize((2.0, 1.0, 1.0), UM, True)  # median
    assert resolve_target_spacing([a, UNKNOWN]).spacing == (1.5, 1.0, 1.0)  # unknown = 1
    assert resolve_target_spacing([UNKNOWN, UNKNOWN]) is None  # nothing known: no resampling
    explicit = resolve_target_spacing([UNKNOWN], [2.0, 1.0, 1.0])
    assert explicit == VoxelSize((2.0, 1.0, 1.0), UM, False)
    mm = voxel_size((0.002, 0.001, 0.001), "mm")
    assert resolve_target_spacing([mm, a]).spacing == (2.0, 1.0, 1.0)  # mixed: in um
    assert resolve_target_spacing([mm]) == VoxelSize((0.002, 0.001, 0.001), "mm", True)
    assert source_step(a, ISO) == (0.5, 1.0, 1.0)
    assert source_step(mm, ISO) == pytest.approx((0.5, 1.0, 1.0))
    assert source_step(UNKNOWN, VoxelSize((2.0, 1.0, 1.0), UM, True)) == (2.0, 1.0, 1.0)
    assert source_step(a, None) == (1.0, 1.0, 1.0)
    with pytest.raises(SpacingError):
        resolve_target_spacing([a], [0.0, 1.0, 1.0])


def test_config_fields() -> None:
    cfg = DataConfig()
    assert cfg.target_spacing is None and cfg.scale_range == 0.0
    p = apply_overrides(Params(), ["data.target_spacing=[5, 1, 1]", "data.scale_range=0.25"])
    assert p.data.target_spacing == [5, 1, 1] and p.data.scale_range == 0.25
    for bad in (
        "data.target_spacing=[1, 1]",
        "data.target_spacing=[0, 1, 1]",
        "data.scale_range=1",
    ):
        with pytest.raises(ConfigError, match="data"):
            apply_overrides(Params(), [bad])


# --------------------------------------------------------------------------- crops at a spacing


def test_coarse_and_fine_renderings_give_the_same_crops_at_the_target(
    fine_and_coarse: dict, tmp_path: Path
) -> None:
    fine_image, fine_truth, _ = fine_and_coarse["fine"]
    coarse_image, coarse_truth, _ = fine_and_coarse["coarse"]
    # one crop covering the whole volume: synth puts voxel i at i * spacing, so target voxel
    # j is source coordinate j / 2 along z
    whole = CropBox((0.0, 0.0, 0.0), (0.5, 1.0, 1.0), (48, 48, 48))
    truth = read_box(coarse_truth, whole, False)
    image = read_box(coarse_image, whole, True)
    assert truth.shape == fine_truth.shape and truth.dtype == np.uint8
    assert abs(truth.mean() - fine_truth.mean()) < 0.03 * fine_truth.mean()
    assert (truth == fine_truth).mean() > 0.98
    assert abs(image.mean() - fine_image.mean()) < 0.03 * fine_image.mean()
    assert abs(image.std() - fine_image.std()) < 0.05 * fine_image.std()

    # random training crops at (1, 1, 1) um: the same statistics from either rendering
    stats = {}
    for name in ("fine", "coarse"):
        entries = _entries(fine_and_coarse[f"{name}_dense"], cache=tmp_path)
        ds = RandomCropDataset(entries, 16, 240, seed=1, target_spacing=ISO)
        items = [ds[i] for i in range(len(ds))]
        labels = torch.stack([label for _, label in items])
        images = torch.stack([image for image, _ in items])
        assert set(labels.unique().tolist()) <= {1, 2}  # dense mask, no padding: no 0
        assert images.shape == (240, 1, 16, 16, 16)
        stats[name] = (float((labels == 1).float().mean()), float(images.mean()))
    (fv, fi), (cv, ci) = stats["fine"], stats["coarse"]
    assert abs(fv - cv) < 0.05 * fv, stats  # vessel fraction within 5 %
    assert abs(fi - ci) < 0.05 * fi, stats


def test_resampled_labels_stay_codes_and_unannotated_stays_0(
    fine_and_coarse: dict, tmp_path: Path
) -> None:
    image, truth, _ = fine_and_coarse["coarse"]
    mask = _dense(truth)
    mask[12:] = 0  # the upper half of the volume is not annotated
    sample = _write(tmp_path / "half", "half", image, mask, (2.0, 1.0, 1.0))
    (entry,) = _entries(sample, cache=tmp_path)
    for target in (ISO, VoxelSize((3.0, 1.5, 0.7), UM, True)):
        sampler = CropSampler(
            sample.open_image(),
            sample.open_mask(),
            entry.index,
            [12, 16, 16],
            background_crop_fraction=0.5,
            step=source_step(entry.voxel_size, target),
            scale_range=0.2,
        )
        rng = np.random.default_rng(0)
        for _ in range(40):
            box, label = sampler.sample_label(rng)
            assert isinstance(box, CropBox) and label.dtype == np.uint8
            assert set(np.unique(label).tolist()) <= {0, 1, 2}
            z = box.coordinates(0)
            assert (label[np.floor(z + 0.5) >= 12] == 0).all()  # still not annotated
            assert (label[np.floor(z + 0.5) < 12] > 0).all()  # annotated stays annotated


@pytest.mark.parametrize(
    "target", [(1.0, 1.0, 1.0), (4.0, 2.0, 2.0), (0.7, 0.5, 1.3)], ids=["up", "down", "mixed"]
)
def test_every_resampled_crop_holds_vessel(
    fine_and_coarse: dict, tmp_path: Path, target: tuple[float, float, float]
) -> None:
    """Sparse annotations, down-sampled by up to 4x: the drawn vessel voxel is a sample of the
    crop, so nearest-neighbour never drops it (3D crops and 2.5D slabs, zoomed or not)."""
    entries = _entries(
        fine_and_coarse["fine_sparse"], fine_and_coarse["coarse_sparse"], cache=tmp_path
    )
    spacing = VoxelSize(target, UM, True)
    for views, scale in ((None, 0.0), (None, 0.3), ((0, 1, 2), 0.3)):
        ds = RandomCropDataset(
            entries,
            16,
            30,
            background_crop_fraction=0.0,
            seed=2,
            views=views,
            context=3,
            target_spacing=spacing,
            scale_range=scale,
            augmentation=AugmentParams(),
        )
        for key in range(len(ds)):
            image, label = ds[key]
            assert (label == 1).any(), f"{target} {views} {scale}: item {key} without vessel"
            assert torch.isfinite(image).all()
    val = FixedCropDataset(entries, 16, 10, background_crop_fraction=0.0, target_spacing=spacing)
    at_target = target == (1.0, 1.0, 1.0)  # the fine volume needs no resampling then
    for v, _, where in val.crops:
        assert isinstance(where, CropBox) != (at_target and v == 0)
    assert all((val[i][1] == 1).any() for i in range(len(val)))


def _legacy_digests(folder: Path, spacing: tuple[float, float, float] | None = None) -> dict:
    """sha256 prefixes of crops of two volumes, drawn by every dataset flavour."""
    samples = []
    for i in range(2):
        rng = np.random.default_rng(40 + i)
        shape = (20, 26, 30)
        zz, yy, _ = np.indices(shape)
        tube = (yy - 13 - 3 * i) ** 2 + (zz - 10) ** 2 <= 9
        image = (100 + 400 * tube + 25 * rng.standard_normal(shape)).astype(np.float32)
        mask = np.zeros(shape, np.uint8)
        mask[rng.random(shape) < 0.05] = 2
        mask[tube & (rng.random(shape) < 0.2)] = 1
        samples.append(_write(folder, f"g{i}", image, mask, spacing))
    entries = prepare_volumes(samples, [0.5, 99.5], cache_dir=folder / "cache")
    target = resolve_target_spacing([e.voxel_size for e in entries])
    aug = AugmentParams(intensity_scale=0.1, intensity_shift=0.1, noise_std=0.05)
    kw = {"target_spacing": target}
    sets = {
        "random": RandomCropDataset(entries, [8, 12, 12], 6, augmentation=aug, seed=5, **kw),
        "cube": RandomCropDataset(entries, 12, 6, augmentation=aug, seed=6, **kw),
        "slabs": RandomCropDataset(
            entries, 12, 6, augmentation=aug, seed=7, views=(0, 1, 2), context=3, **kw
        ),
        "fixed": FixedCropDataset(entries, [8, 12, 16], 4, seed=8, **kw),
        "fixed_slabs": FixedCropDataset(entries, 12, 6, seed=9, views=(0, 1, 2), context=3, **kw),
    }
    out = {}
    for name, ds in sets.items():
        keys = list(range(len(ds)))
        if not name.startswith("fixed"):
            keys += range(3 * len(ds), 3 * len(ds) + 4)  # keys of a later epoch
        h = hashlib.sha256()
        for key in keys:
            image, label = ds[key]
            h.update(image.numpy().tobytes())
            h.update(label.numpy().tobytes())
        out[name] = h.hexdigest()[:16]
    return out


# computed with the crop code before resampling existed (commit 32b3662), same data and seeds
LEGACY = {
    "random": "aa2b0075877f8b2c",
    "cube": "b1185bd210252847",
    "slabs": "2650e488d35a2262",
    "fixed": "0397c274fa973076",
    "fixed_slabs": "ee1b900a16f02372",
}


def test_unknown_spacing_gives_the_crops_of_before(tmp_path: Path) -> None:
    assert _legacy_digests(tmp_path / "unknown") == LEGACY
    # volumes already at the (isotropic) target spacing are not resampled either
    assert _legacy_digests(tmp_path / "known", (0.5, 0.5, 0.5)) == LEGACY


def test_resampled_zoomed_crops_depend_only_on_seed_and_key(
    fine_and_coarse: dict, tmp_path: Path
) -> None:
    """What resume bit-identity needs: a crop is a function of (seed, key), not of history."""
    entries = _entries(
        fine_and_coarse["fine_sparse"], fine_and_coarse["coarse_sparse"], cache=tmp_path
    )

    def make() -> RandomCropDataset:
        return RandomCropDataset(
            entries, 16, 8, seed=4, target_spacing=ISO, scale_range=0.25,
            augmentation=AugmentParams(),
        )  # fmt: skip

    a, b = make(), make()
    for key in (3, 40, 7):  # b in another order, and a pickled clone (a DataLoader worker)
        b[key + 1]
    clone = pickle.loads(pickle.dumps(a))
    for key in (7, 40, 3):
        for other in (b, clone):
            assert torch.equal(a[key][0], other[key][0]) and torch.equal(a[key][1], other[key][1])
    assert not torch.equal(a[3][0], a[4][0])


# --------------------------------------------------------------------------- augmentation


def _cylinder(tmp_path: Path, radius: float) -> Sample:
    """A cylinder along x through the middle of a 64³ volume; every voxel annotated."""
    zz, yy, _ = np.indices((64, 64, 64))
    inside = (zz - 31.5) ** 2 + (yy - 31.5) ** 2 <= radius**2
    image = np.where(inside, 1.0, 0.0).astype(np.float32)
    return _write(tmp_path / "cyl", "cyl", image, _dense(inside), (1.0, 1.0, 1.0))


def test_scale_augmentation_zooms_by_the_drawn_factor(tmp_path: Path) -> None:
    radius, r = 6.0, 0.4
    sample = _cylinder(tmp_path, radius)
    (entry,) = _entries(sample, cache=tmp_path)
    sampler = CropSampler(
        sample.open_image(),
        sample.open_mask(),
        entry.index,
        32,
        background_crop_fraction=0.0,
        step=source_step(entry.voxel_size, ISO),
        scale_range=r,
    )
    zooms, checked = [], 0
    for key in range(60):
        rng = np.random.default_rng([0, key])
        box, label = sampler.sample_label(rng)
        zoom = box.step[0]
        assert box.step == (zoom, zoom, zoom) and 1 - r <= zoom <= 1 + r
        zooms.append(zoom)
        # the cylinder's axis in crop voxels: is its whole cross-section inside the crop?
        centre = [(31.5 - box.start[a]) / zoom for a in (0, 1)]
        if not all(radius / zoom + 1 < c < 31 - radius / zoom - 1 for c in centre):
            continue
        area = float((label == 1).sum(axis=(0, 1)).mean())  # vessel voxels per x-slice
        apparent = math.sqrt(area / math.pi)
        assert apparent == pytest.approx(radius / zoom, rel=0.08), (zoom, apparent)
        image = read_box(sampler.image, box, True)
        assert float(image.sum(axis=(0, 1)).mean()) == pytest.approx(area, rel=0.08)
        checked += 1
    assert checked >= 10
    assert max(zooms) - min(zooms) > r  # the factor varies from crop to crop
    # the same key draws the same zoom; no zoom without scale_range
    again = sampler.sample_label(np.random.default_rng([0, 5]))[0]
    assert again == sampler.sample_label(np.random.default_rng([0, 5]))[0]


def test_low_resolution_simulation_removes_what_a_coarser_grid_cannot_hold() -> None:
    z, y, x = np.indices((48, 48, 48), dtype=np.float32)
    ramp = 0.5 * z - 0.25 * y + x
    low = simulate_low_resolution(ramp, (2.0, 2.0, 2.0))
    assert low.shape == ramp.shape and low.dtype == np.float32
    inner = (slice(4, -4),) * 3  # away from the clamped edges, a linear image is kept
    np.testing.assert_allclose(low[inner], ramp[inner], atol=1e-3)
    # a pattern at the fine grid's Nyquist frequency does not survive a grid twice as coarse;
    # a slow wave (24 voxels per period) does, nearly at full amplitude
    checker = np.where((z + y + x) % 2 == 0, 1.0, -1.0).astype(np.float32)
    assert simulate_low_resolution(checker, (2.0, 2.0, 2.0))[inner].std() < 0.1
    wave = np.sin(2 * np.pi * x / 24).astype(np.float32)
    kept = simulate_low_resolution(wave, (2.0, 2.0, 2.0))[inner].std() / wave[inner].std()
    assert 0.8 < kept <= 1.0
    # factor 1 leaves an axis alone: a pattern along z only is untouched by (1, 2, 2)
    along_z = np.where(z % 2 == 0, 1.0, -1.0).astype(np.float32)
    np.testing.assert_array_equal(simulate_low_resolution(along_z, (1.0, 2.0, 2.0)), along_z)
    np.testing.assert_array_equal(simulate_low_resolution(ramp, (1.0, 1.0, 1.0)), ramp)
    # physical coarsening per axis: a 5 um axis is not coarsened by 2x, a 4 um one by 8x is 2x
    assert coarse_factors(2.0, None) == (2.0, 2.0, 2.0)
    assert coarse_factors(2.0, (5.0, 1.0, 1.0)) == (1.0, 2.0, 2.0)
    assert coarse_factors(8.0, (4.0, 1.0, 1.0)) == (2.0, 8.0, 8.0)


def test_low_resolution_augmentation_touches_the_image_only_and_only_when_on() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(16, 16, 16)).astype(np.float32)
    label = rng.integers(0, 3, (16, 16, 16)).astype(np.uint8)

    def run(**kw):
        g = np.random.default_rng(3)
        out = augment(image, label, g, flip=False, rot90=False, **kw)
        return out, g.uniform()  # the generator's next draw: what the call consumed

    (plain, plain_label), plain_next = run()
    (off, _), off_next = run(lowres_factor=2.0, lowres_probability=0.0)
    np.testing.assert_array_equal(plain, image)
    np.testing.assert_array_equal(off, plain)
    assert off_next == plain_next  # off: no random number drawn, crops of before unchanged
    (low, low_label), _ = run(lowres_factor=2.0, lowres_probability=1.0)
    np.testing.assert_array_equal(low_label, label)
    assert low.std() < 0.8 * image.std()  # white noise loses its finest frequencies
    with pytest.raises(ValueError):
        DataConfig(lowres_factor=0.5)


def test_rot90_never_mixes_anisotropic_axes() -> None:
    assert rot90_planes(None) == ((0, 1), (0, 2), (1, 2))
    assert rot90_planes((5.0, 1.0, 1.0)) == ((1, 2),)
    assert rot90_planes((1.0, 1.005, 2.0)) == ((0, 1),)  # within 1 %
    assert rot90_planes((1.0, 2.0, 3.0)) == ()
    ramp = np.broadcast_to(np.arange(12, dtype=np.float32)[:, None, None], (12, 12, 12))
    label = np.zeros((12, 12, 12), np.uint8)
    moved = 0
    for seed in range(40):
        for spacing, free in (((3.0, 1.0, 1.0), False), (None, True)):
            image, _ = augment(ramp, label, np.random.default_rng(seed), spacing=spacing)
            along_z = bool((image == image[:, :1, :1]).all())  # still a ramp along z
            if not free:
                assert along_z, f"seed {seed}: z mixed with y/x"
                assert np.array_equal(image[:, 0, 0], ramp[:, 0, 0]) or np.array_equal(
                    image[:, 0, 0], ramp[::-1, 0, 0]
                )
            moved += not along_z
    assert moved > 10  # isotropic crops do rotate z into y/x


def test_slab_items_rotate_only_where_the_spacing_allows(
    fine_and_coarse: dict, tmp_path: Path
) -> None:
    """A slab along y of a (2, 1, 1) um target has axes (y, z, x): its (z, x) plane is
    anisotropic, its slab item spacing says so."""
    entries = _entries(fine_and_coarse["coarse_sparse"], cache=tmp_path)
    target = VoxelSize((2.0, 1.0, 1.0), UM, True)
    ds = RandomCropDataset(entries, 16, 4, views=(1,), context=3, target_spacing=target)
    assert ds.item_spacing(1) == (1.0, 2.0, 1.0)
    assert ds.item_spacing(0) == (2.0, 1.0, 1.0) and ds.item_spacing(None) == (2.0, 1.0, 1.0)
    assert rot90_planes(ds.item_spacing(1)) == ((0, 2),)  # y with x, never z
    assert RandomCropDataset(entries, 16, 4).item_spacing(1) is None


# --------------------------------------------------------------------------- the datamodule


def test_datamodule_resolves_the_median_and_resamples_val_crops(
    fine_and_coarse: dict, tmp_path: Path
) -> None:
    for split, names in (("train", ("fine", "coarse")), ("val", ("coarse",))):
        for name in names:
            image, truth, _ = fine_and_coarse[name]
            sp = (1.0, 1.0, 1.0) if name == "fine" else (2.0, 1.0, 1.0)
            _write(tmp_path / split, name, image, _dense(truth), sp)
    cfg = DataConfig(
        train_dir=str(tmp_path / "train"),
        val_dir=str(tmp_path / "val"),
        crop_size=[8, 8, 8],
        samples_per_volume=2,
    )
    dm = VesselDataModule(cfg, batch_size=2, cache_dir=tmp_path / "cache")
    dm.setup("fit")
    assert dm.spacing == VoxelSize((1.5, 1.0, 1.0), UM, True)
    assert dm.val_set is not None and dm.val_set.target_spacing == dm.spacing
    assert all(isinstance(w, CropBox) and w.step == (0.75, 1.0, 1.0) for *_, w in dm.val_set.crops)
    only_val = VesselDataModule(cfg, batch_size=2, cache_dir=tmp_path / "cache")
    only_val.setup("validate")
    assert only_val.spacing == dm.spacing and only_val.train_set is None


def test_mixed_spacings_train_and_the_bundle_records_the_target(
    fine_and_coarse: dict, tmp_path: Path, store: Path
) -> None:
    from vesselseg import tracking
    from vesselseg.training.fit import train_model

    data = tmp_path / "data"
    for split, names in (("train", ("fine", "coarse")), ("val", ("fine",))):
        for name in names:
            image, _, mask = fine_and_coarse[name]
            sp = (1.0, 1.0, 1.0) if name == "fine" else (2.0, 1.0, 1.0)
            _write(data / split, name, image, mask, sp)
    params = tiny_params(
        data, "train.max_epochs=1", "train.overlay_every_n_epochs=0", "data.scale_range=0.2"
    )
    out = tmp_path / "m.pt"
    result = train_model(params, out, mlflow_root=store)
    assert result.epochs == 1
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["spacing"] == [1.5, 1.0, 1.0] and saved["unit"] == UM
    assert load_meta(out).spacing == [1.5, 1.0, 1.0]
    run = tracking.client(store).get_run(result.run_id)
    assert json.loads(run.data.params["data.target_spacing"]) == [1.5, 1.0, 1.0]
    assert run.data.params["data.target_unit"] == UM
    assert run.data.params["data.scale_range"] == "0.2"


def test_what_the_model_records() -> None:
    from vesselseg.training.fit import trained_spacing

    assert trained_spacing(VoxelSize((5.0, 1.0, 1.0), UM, True)) == {
        "spacing": [5.0, 1.0, 1.0],
        "unit": UM,
    }
    none = {"spacing": None, "unit": None}
    assert trained_spacing(None) == none  # no volume had a spacing
    assert trained_spacing(VoxelSize((2.0, 2.0, 2.0), UM, False)) == none  # explicit, unknown


def test_models_without_spacing_still_load(tmp_path: Path) -> None:
    side = tmp_path / "old.json"
    old = json.loads(ModelMeta(model={"name": "unet"}).to_json())
    del old["spacing"], old["unit"]
    side.write_text(json.dumps(old))
    meta = read_settings(side)
    assert meta.spacing is None and meta.unit is None


# --------------------------------------------------------------------------- cost


def test_resampling_cost_of_a_48_crop(fine_and_coarse: dict, capsys) -> None:
    """Reported, loosely bounded: a 48³ crop from a (2, 1, 1) um volume at (1, 1, 1) um."""
    image, _, mask = fine_and_coarse["coarse"]
    box = CropBox((0.3, 0.0, 0.0), (0.5, 1.0, 1.0), (48, 48, 48))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        read_box(image, box, True)
        read_box(mask, box, False)
        times.append(time.perf_counter() - start)
    with capsys.disabled():
        print(f"\nresampled 48^3 crop (image + label): {1000 * min(times):.1f} ms")
    assert min(times) < 0.5


# --------------------------------------------------------------------------- --spacing


def test_spacing_option_overrides_every_training_volume(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--spacing`` on prepare, plan and train is the voxel size of every train/val volume
    (the synthetic files say 1 x 1 x 1 um); a bad one is one line, exit 2, nothing written."""
    from typer.testing import CliRunner

    from vesselseg.cli import app
    from vesselseg.io.dataset import discover_dataset

    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train, val = str(tiny_dataset / "train"), str(tiny_dataset / "val")
    files = discover_dataset(train, require_masks=True)
    assert files[0].open_image().voxel_size.spacing == (1.0, 1.0, 1.0)
    given = discover_dataset(train, True, [2.0, 1.0, 1.0], "um")
    assert all(s.open_image().voxel_size == voxel_size((2.0, 1.0, 1.0)) for s in given)
    assert all(s.open_mask().voxel_size == voxel_size((2.0, 1.0, 1.0)) for s in given)
    in_mm = discover_dataset(train, True, [0.002, 0.001, 0.001], "mm")
    assert in_mm[0].open_mask().voxel_size == voxel_size((0.002, 0.001, 0.001), "mm")

    spacing = ["--spacing", "2,1,1"]
    plan = runner.invoke(app, ["plan", "--train-dir", train, *spacing, "--out", "plans.json"])
    assert plan.exit_code == 0, plan.output
    fingerprint = json.loads(Path("plans.json").read_text())["fingerprint"]
    assert [v["spacing"] for v in fingerprint["volumes"]] == [[2.0, 1.0, 1.0]] * len(files)
    args = ["--train-dir", train, "--val-dir", val, *spacing]
    prepared = runner.invoke(app, ["prepare", *args, "--out", "prepared.json"])
    assert prepared.exit_code == 0, prepared.output
    summary = json.loads(Path("prepared.json").read_text())["splits"]
    assert {v["unit"] for split in summary.values() for v in split.values()} == {UM}
    assert [v["spacing"] for v in summary["val"].values()] == [[2.0, 1.0, 1.0]]

    tiny = [a for kv in ("model.base_channels=4", "model.depth=2", "infer.tile_size=16")
            for a in ("--set", kv)]  # fmt: skip
    line = ["train", *args, "--crop-size", "16", "--samples-per-volume", "2", "--max-epochs",
            "1", "--batch-size", "2", *tiny]  # fmt: skip
    trained = runner.invoke(app, [*line, "--out", "m.pt"])
    assert trained.exit_code == 0, trained.output
    assert load_meta(tmp_path / "m.pt").spacing == [2.0, 1.0, 1.0]
    for bad in ("0,1,1", "nan,1,1", "1,2"):
        bad_line = ["train", "--train-dir", train, "--val-dir", val, "--spacing", bad]
        result = runner.invoke(app, [*bad_line, "--out", "bad.pt"])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
        assert "--spacing" in result.output
    assert not (tmp_path / "bad.pt").exists()
    unit_alone = runner.invoke(app, ["plan", "--train-dir", train, "--unit", "mm"])
    assert unit_alone.exit_code == 2 and "--unit" in unit_alone.output
