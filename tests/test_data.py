"""Crop sampling data path: annotation index, caches, crops, augmentation, datasets."""

from __future__ import annotations

import itertools
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from vesselseg.config import DataConfig
from vesselseg.data import annotation_index as ai
from vesselseg.data.annotation_index import build_annotation_index, load_or_build_index
from vesselseg.data.augment import augment
from vesselseg.data.crops import CropSampler, crop_origin_containing, read_crop
from vesselseg.data.datamodule import VesselDataModule
from vesselseg.data.datasets import (
    AugmentParams,
    FixedCropDataset,
    RandomCropDataset,
    prepare_volumes,
)
from vesselseg.data.normalize import compute_stats, load_or_compute_stats, normalize
from vesselseg.io import Sample, discover_dataset, open_volume

SHAPE = (24, 28, 32)


def _vessel_mask(
    shape: tuple[int, int, int], n_vessel: int, n_background: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Tubes along x/y (dense truth) and a sparse 0/1/2 mask annotating some of it."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, dtype=bool)
    for _ in range(3):
        z, y = rng.integers(2, shape[0] - 2), rng.integers(2, shape[1] - 2)
        truth[z - 1 : z + 2, y - 1 : y + 2, :] = True
        x = rng.integers(2, shape[2] - 2)
        truth[z - 1 : z + 2, :, x - 1 : x + 2] = True
    mask = np.zeros(shape, dtype=np.uint8)
    vessel, background = np.flatnonzero(truth), np.flatnonzero(~truth)
    mask.flat[rng.choice(vessel, min(n_vessel, vessel.size), replace=False)] = 1
    mask.flat[rng.choice(background, min(n_background, background.size), replace=False)] = 2
    return truth, mask


def _write_sample(
    folder: Path,
    name: str,
    shape: tuple[int, int, int] = SHAPE,
    n_vessel: int = 50,
    n_background: int = 200,
    seed: int = 0,
) -> Sample:
    folder.mkdir(parents=True, exist_ok=True)
    truth, mask = _vessel_mask(shape, n_vessel, n_background, seed)
    rng = np.random.default_rng(seed + 100)
    image = (100 + 500 * truth + 20 * rng.standard_normal(shape)).astype(np.float32)
    np.save(folder / f"data_{name}.npy", image)
    np.save(folder / f"mask_{name}.npy", mask)
    return Sample(name, folder / f"data_{name}.npy", folder / f"mask_{name}.npy")


def _sampler(sample: Sample, crop: int | tuple[int, int, int], **kwargs: float) -> CropSampler:
    mask = sample.open_mask()
    assert mask is not None
    index = build_annotation_index(mask)
    return CropSampler(sample.open_image(), mask, index, crop, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ annotation index


def test_index_built_by_slabs_equals_argwhere() -> None:
    rng = np.random.default_rng(1)
    mask = rng.choice(np.array([0, 1, 2], np.uint8), size=(19, 17, 13), p=[0.9, 0.03, 0.07])
    index = build_annotation_index(mask, slab_bytes=17 * 13 * 3)  # 3 planes per slab
    np.testing.assert_array_equal(index.vessel, np.flatnonzero(mask == 1))
    np.testing.assert_array_equal(index.background, np.flatnonzero(mask == 2))
    np.testing.assert_array_equal(index.coords(1), np.argwhere(mask == 1))
    assert (index.n_vessel, index.n_background) == ((mask == 1).sum(), (mask == 2).sum())


def test_index_subsample_is_uniform_without_replacement() -> None:
    mask = np.zeros((40, 16, 16), np.uint8)
    mask[:, :, :8] = 1  # 5120 vessel voxels spread evenly over z
    index = build_annotation_index(mask, max_points=1000, seed=3, slab_bytes=16 * 16 * 2)
    assert index.vessel.size == 1000 and index.n_vessel == 40 * 16 * 8
    assert np.unique(index.vessel).size == 1000
    assert (mask.flat[index.vessel] == 1).all()
    z = index.coords(1)[:, 0]
    counts = np.bincount(z // 10, minlength=4)  # expect 250 per quarter of the depth
    assert counts.min() > 190 and counts.max() < 310, counts
    x = index.coords(1)[:, 2]
    assert abs(np.mean(x) - 3.5) < 0.3


def test_index_cache_reused_and_invalidated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = _write_sample(tmp_path / "d", "a", n_vessel=30)
    first = load_or_build_index(sample)
    assert (tmp_path / "d" / ".mask_a.npy.index.npz").is_file()
    assert [s.id for s in discover_dataset(tmp_path / "d", require_masks=True)] == ["a"]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("index rebuilt although the mask did not change")

    with monkeypatch.context() as m:
        m.setattr(ai, "build_annotation_index", refuse)
        again = load_or_build_index(sample)
    np.testing.assert_array_equal(again.vessel, first.vessel)

    _, new_mask = _vessel_mask(SHAPE, 7, 9, seed=5)
    np.save(sample.mask, new_mask)
    stat = os.stat(sample.mask)
    os.utime(sample.mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rebuilt = load_or_build_index(sample)
    np.testing.assert_array_equal(rebuilt.vessel, np.flatnonzero(new_mask == 1))


def test_chosen_cache_dir_keeps_data_folders_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = _write_sample(tmp_path / "d", "a")
    before = sorted(p.name for p in (tmp_path / "d").iterdir())
    load_or_build_index(sample, cache_dir=tmp_path / "cache")
    load_or_compute_stats(sample.open_image(), [1, 99], cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*-mask_a.npy.index.npz"))) == 1
    assert len(list((tmp_path / "cache").glob("*-data_a.npy.stats.json"))) == 1
    monkeypatch.setenv("VESSELSEG_CACHE_DIR", str(tmp_path / "env-cache"))  # set by the CLI
    load_or_build_index(sample)
    assert len(list((tmp_path / "env-cache").glob("*-mask_a.npy.index.npz"))) == 1
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == before


# ------------------------------------------------------------------ normalisation


def test_normalize_maps_lo_hi_to_0_1_and_clips() -> None:
    out = normalize(np.array([10.0, 20.0, 15.0, -100.0, 100.0]), 10.0, 20.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 1.0, 0.5, -1.0, 2.0])
    np.testing.assert_allclose(normalize(np.array([3.0]), 5.0, 5.0), [-1.0])


def test_stats_close_to_full_percentiles_and_cached(tmp_path: Path) -> None:
    sample = _write_sample(tmp_path, "a")
    image = sample.open_image()
    full = np.percentile(np.asarray(image), [1, 99])
    stats = compute_stats(image, [1, 99], max_samples=20_000, max_planes=12)
    assert stats.n_samples <= 20_000
    assert abs(stats.lo - full[0]) < 15 and abs(stats.hi - full[1]) < 15
    cached = load_or_compute_stats(image, [1, 99])
    assert (tmp_path / "data_a.npy.stats.json").is_file()
    assert load_or_compute_stats(image, [1, 99]) == cached
    np.save(sample.image, np.asarray(image) + 1000)
    stat = os.stat(sample.image)
    os.utime(sample.image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    moved = load_or_compute_stats(open_volume(sample.image), [1, 99])
    assert moved.lo == pytest.approx(cached.lo + 1000)


# ------------------------------------------------------------------ crops


def test_crop_origin_inside_volume_and_contains_point() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        shape = rng.integers(1, 40, 3)
        crop = rng.integers(1, 20, 3)
        point = [int(rng.integers(s)) for s in shape]
        origin = crop_origin_containing(point, crop, shape, rng)
        for o, p, c, s in zip(origin, point, crop, shape, strict=True):
            if s <= c:
                assert o == 0
            else:
                assert 0 <= o <= s - c and o <= p < o + c


def test_crop_origin_uniform_over_valid_origins() -> None:
    rng = np.random.default_rng(0)
    seen = [crop_origin_containing((5, 0, 9), (4, 4, 4), (10, 10, 10), rng) for _ in range(800)]
    z = np.bincount([o[0] for o in seen], minlength=7)
    assert set(np.flatnonzero(z)) == {2, 3, 4, 5} and z.min(initial=800, where=z > 0) > 150
    assert {o[1] for o in seen} == {0} and {o[2] for o in seen} == {6}


def test_read_crop_inside_and_padded() -> None:
    vol = np.arange(5 * 6 * 7, dtype=np.int32).reshape(5, 6, 7)
    np.testing.assert_array_equal(read_crop(vol, (1, 2, 3), (3, 3, 3)), vol[1:4, 2:5, 3:6])
    padded = read_crop(vol, (0, 0, 0), (8, 6, 9), pad_value=-1)
    assert padded.shape == (8, 6, 9) and padded.dtype == np.int32
    np.testing.assert_array_equal(padded[:5, :, :7], vol)
    assert (padded[5:] == -1).all() and (padded[:, :, 7:] == -1).all()


@pytest.mark.parametrize("n_vessel", [1, 3, 40, 2000])
def test_every_vessel_crop_contains_vessel(tmp_path: Path, n_vessel: int) -> None:
    sampler = _sampler(
        _write_sample(tmp_path, "a", n_vessel=n_vessel), 8, background_crop_fraction=0.0
    )
    rng = np.random.default_rng(n_vessel)
    for _ in range(300):
        image, label = sampler.sample(rng)
        assert image.shape == label.shape == (8, 8, 8)
        assert (label == 1).sum() >= 1


def test_min_vessel_voxels_met_or_best_crop(tmp_path: Path) -> None:
    sampler = _sampler(
        _write_sample(tmp_path, "a", n_vessel=3000),
        12,
        min_vessel_voxels=20,
        background_crop_fraction=0.0,
    )
    rng = np.random.default_rng(0)
    assert all((sampler.sample(rng)[1] == 1).sum() >= 20 for _ in range(200))
    lonely = _sampler(
        _write_sample(tmp_path / "b", "b", n_vessel=1),
        12,
        min_vessel_voxels=20,
        background_crop_fraction=0.0,
    )
    assert all((lonely.sample(rng)[1] == 1).sum() == 1 for _ in range(50))  # best = only one


def test_background_crops_contain_background(tmp_path: Path) -> None:
    sampler = _sampler(
        _write_sample(tmp_path, "a", n_vessel=5, n_background=3), 8, background_crop_fraction=1.0
    )
    rng = np.random.default_rng(0)
    assert all((sampler.sample(rng)[1] == 2).any() for _ in range(200))
    mask = np.zeros(SHAPE, np.uint8)
    mask[2, 2, 2], mask[20, 25, 30] = 1, 2  # far apart: a crop holds one or the other
    index = build_annotation_index(mask)
    mixed = CropSampler(mask, mask, index, 6, background_crop_fraction=0.3)
    labels = [mixed.sample(rng)[1] for _ in range(400)]
    assert all((lab == 1).sum() + (lab == 2).sum() == 1 for lab in labels)
    assert 0.25 < np.mean([(lab == 2).any() for lab in labels]) < 0.35


def test_image_crop_aligned_and_padded_when_volume_smaller(tmp_path: Path) -> None:
    sample = _write_sample(tmp_path, "a", shape=(10, 12, 40), n_vessel=20)
    mask = sample.open_mask()
    assert mask is not None
    np.save(sample.image, np.asarray(mask).astype(np.float32))  # image == label everywhere
    sampler = _sampler(sample, (16, 8, 16), image_pad_value=0.0)
    rng = np.random.default_rng(0)
    for _ in range(100):
        image, label = sampler.sample(rng)
        assert image.shape == label.shape == (16, 8, 16)
        np.testing.assert_array_equal(image, label)
        assert (label[10:] == 0).all()


def test_sampler_deterministic_with_seed(tmp_path: Path) -> None:
    sampler = _sampler(_write_sample(tmp_path, "a"), 8)
    a = [sampler.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [sampler.sample(np.random.default_rng(7)) for _ in range(3)]
    for (ia, la), (ib, lb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)


# ------------------------------------------------------------------ augmentation


def test_augment_keeps_threshold_label_aligned() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((8, 8, 8)).astype(np.float32)
    label = (image > 0.7).astype(np.uint8)
    for _ in range(50):
        out_i, out_l = augment(image, label, rng, flip=True, rot90=True)
        assert out_i.flags.c_contiguous and out_l.flags.c_contiguous
        np.testing.assert_array_equal(out_l, (out_i > 0.7).astype(np.uint8))


@pytest.mark.parametrize("shape", [(6, 6, 6), (4, 6, 6), (5, 7, 6)])
def test_augment_is_a_cube_symmetry(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(1)
    n = int(np.prod(shape))
    image = np.arange(n, dtype=np.float32).reshape(shape)
    label = (np.arange(n) % 251).astype(np.uint8).reshape(shape)
    results = set()
    for _ in range(300):
        out_i, out_l = augment(image, label, rng)
        assert out_i.shape == shape
        np.testing.assert_array_equal(np.sort(out_i.ravel()), np.arange(n))  # a permutation
        np.testing.assert_array_equal(out_l, (out_i.astype(np.int64) % 251).astype(np.uint8))
        coords = np.stack(np.unravel_index(out_i.astype(np.int64), shape), axis=-1)
        for axis in range(3):  # neighbours stay neighbours: a rigid symmetry, not a shuffle
            step = np.abs(np.diff(coords, axis=axis)).sum(-1)
            assert (step == 1).all()
        results.add(out_i.tobytes())
    n_equal_planes = sum(shape[a] == shape[b] for a, b in itertools.combinations(range(3), 2))
    assert len(results) == {3: 48, 1: 16, 0: 8}[n_equal_planes]


def test_augment_intensity_touches_image_only_and_is_deterministic() -> None:
    image = np.linspace(0, 1, 512, dtype=np.float32).reshape(8, 8, 8)
    label = (image > 0.5).astype(np.uint8)
    kwargs = dict(flip=False, rot90=False, intensity_scale=0.2, intensity_shift=0.3, noise_std=0)
    a_i, a_l = augment(image, label, np.random.default_rng(5), **kwargs)  # type: ignore[arg-type]
    b_i, _ = augment(image, label, np.random.default_rng(5), **kwargs)  # type: ignore[arg-type]
    np.testing.assert_array_equal(a_i, b_i)
    np.testing.assert_array_equal(a_l, label)
    slope = np.polyfit(image.ravel(), a_i.ravel(), 1)[0]
    assert 0.8 <= slope <= 1.2 and not np.allclose(a_i, image)
    noisy, _ = augment(
        image, label, np.random.default_rng(0), flip=False, rot90=False, noise_std=0.1
    )
    assert 0.08 < np.std(noisy - image) < 0.12 and noisy.dtype == np.float32


# ------------------------------------------------------------------ datasets


def _entries(folder: Path, n: int = 2) -> list:
    samples = [_write_sample(folder, f"v{i}", n_vessel=20 + i, seed=i) for i in range(n)]
    return prepare_volumes(samples, [0.5, 99.5], cache_dir=folder / "cache")


def test_random_crop_dataset_items_and_determinism(tmp_path: Path) -> None:
    entries = _entries(tmp_path)
    make = lambda seed: RandomCropDataset(  # noqa: E731
        entries,
        [8, 12, 12],
        3,
        background_crop_fraction=0.0,
        augmentation=AugmentParams(intensity_scale=0.1, intensity_shift=0.1),
        seed=seed,
    )
    ds = make(0)
    assert len(ds) == 6
    image, label = ds[1]
    assert image.shape == label.shape == (1, 8, 12, 12)
    assert image.dtype == torch.float32 and label.dtype == torch.uint8
    assert (label == 1).any() and -1.5 <= image.min() and image.max() <= 2.5
    a, b, c = ([ds[i] for i in range(4)] for ds in (make(0), make(0), make(1)))
    for (ia, la), (ib, lb) in zip(a, b, strict=True):
        assert torch.equal(ia, ib) and torch.equal(la, lb)
    assert not all(torch.equal(ia, ic) for (ia, _), (ic, _) in zip(a, c, strict=True))
    assert not torch.equal(a[0][0], a[2][0])  # same volume, a fresh crop
    clone = pickle.loads(pickle.dumps(ds))  # no open handles travel
    assert clone[0][0].shape == (1, 8, 12, 12)


def test_fixed_crop_dataset_is_fixed(tmp_path: Path) -> None:
    entries = _entries(tmp_path)
    ds = FixedCropDataset(entries, 8, 4, seed=3)
    again = FixedCropDataset(entries, 8, 4, seed=3)
    assert len(ds) == 8 and ds.crops == again.crops
    assert {v for v, _, _ in ds.crops} == {0, 1}
    for i in range(len(ds)):
        assert torch.equal(ds[i][0], ds[i][0]) and torch.equal(ds[i][1], again[i][1])
        assert (ds[i][1] > 0).any()


def _loader_cfg(root: Path, workers: int) -> DataConfig:
    """8³ crops, 2 per volume, from ``root/train`` and ``root/val``."""
    return DataConfig(
        train_dir=str(root / "train"),
        val_dir=str(root / "val"),
        crop_size=[8, 8, 8],
        samples_per_volume=2,
        num_loader_workers=workers,
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_datamodule_batches(tmp_path: Path, workers: int) -> None:
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            _write_sample(tmp_path / split, f"{split}{i}", n_vessel=25, seed=i)
    cfg = _loader_cfg(tmp_path, workers)
    batches = []
    for _ in range(2):
        dm = VesselDataModule(cfg, batch_size=2, seed=0, cache_dir=tmp_path / "cache")
        dm.setup("fit")
        train = dm.train_dataloader()
        assert train.persistent_workers == (workers > 0)
        batches.append(next(iter(train)))
        image, label = next(iter(dm.val_dataloader()))
        assert image.shape == label.shape == (2, 1, 8, 8, 8)
        assert image.dtype == torch.float32 and label.dtype == torch.uint8
    (ia, la), (ib, lb) = batches
    assert ia.shape == (2, 1, 8, 8, 8) and la.dtype == torch.uint8
    assert torch.equal(ia, ib) and torch.equal(la, lb)  # same seed, same batches


def test_epochs_draw_the_same_crops_with_any_worker_count_or_history(tmp_path: Path) -> None:
    for i in range(2):
        _write_sample(tmp_path / "train", f"t{i}", n_vessel=25, seed=i)
        _write_sample(tmp_path / "val", f"v{i}", n_vessel=25, seed=i + 5)

    def epoch_batches(workers: int, epochs: list[int]) -> list[torch.Tensor]:
        cfg = _loader_cfg(tmp_path, workers)
        dm = VesselDataModule(cfg, batch_size=2, seed=0, cache_dir=tmp_path / "cache")
        dm.setup("fit")
        loader = dm.train_dataloader()
        out = []
        for epoch in epochs:
            loader.sampler.set_epoch(epoch)  # what Lightning does before each epoch
            out.append(torch.cat([image for image, _ in loader]))
        return out

    straight = epoch_batches(0, [0, 1, 2])
    resumed = epoch_batches(2, [2])  # a run resumed at epoch 2, with workers
    assert torch.equal(straight[2], resumed[0])
    assert not torch.equal(straight[0], straight[1])  # epochs differ
