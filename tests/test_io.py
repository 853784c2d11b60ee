"""Readers, writers and validation errors of vesselseg.io."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from vesselseg.errors import (
    DatasetError,
    LabelValueError,
    MissingPathError,
    NonFiniteError,
    ShapeMismatchError,
    VolumeFormatError,
)
from vesselseg.io import (
    VolumeWriter,
    check_finite,
    count_labels,
    discover_dataset,
    open_volume,
    partial_path,
    validate_sample,
    validate_training_set,
    write_volume,
)
from vesselseg.io.readers import TiffSliceFolder

RNG = np.random.default_rng(0)
ARRAY = RNG.random((12, 20, 28), dtype=np.float32)
REGION = (slice(3, 9), slice(4, 17), slice(5, 25))


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.parametrize("suffix", [".npy", ".raw", ".tif", ".zarr"])
def test_writer_reader_round_trip(tmp_path: Path, suffix: str) -> None:
    path = write_volume(tmp_path / f"vol{suffix}", ARRAY, slab=5)
    volume = open_volume(path)
    assert volume.shape == ARRAY.shape and volume.dtype == ARRAY.dtype
    np.testing.assert_array_equal(volume[REGION], ARRAY[REGION])
    np.testing.assert_array_equal(np.asarray(volume), ARRAY)
    assert not partial_path(path).exists()


def test_raw_with_explicit_shape_and_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "vol.raw"
    ARRAY.astype(np.uint16).tofile(path)
    volume = open_volume(path, shape=ARRAY.shape, dtype="uint16")
    np.testing.assert_array_equal(volume[REGION], ARRAY.astype(np.uint16)[REGION])
    (tmp_path / "vol.raw.json").write_text(
        json.dumps({"shape": list(ARRAY.shape), "dtype": "uint16"})
    )
    assert open_volume(path).shape == ARRAY.shape


def test_raw_size_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "vol.raw"
    ARRAY.tofile(path)
    with pytest.raises(VolumeFormatError, match="does not match shape"):
        open_volume(path, shape=(12, 20, 29), dtype="float32")


def test_raw_without_shape(tmp_path: Path) -> None:
    path = tmp_path / "vol.raw"
    ARRAY.tofile(path)
    with pytest.raises(VolumeFormatError, match="needs --shape and --dtype"):
        open_volume(path)


def test_tiff_multipage_compressed_reads_lazily(tmp_path: Path) -> None:
    path = tmp_path / "vol.tif"
    tifffile.imwrite(path, ARRAY, compression="zlib", tile=(16, 16))
    volume = open_volume(path)
    np.testing.assert_array_equal(volume[REGION], ARRAY[REGION])


def test_tiff_slice_folder(tmp_path: Path) -> None:
    folder = tmp_path / "kidney_1" / "images"
    folder.mkdir(parents=True)
    for z in range(ARRAY.shape[0]):
        tifffile.imwrite(folder / f"{z:04d}.tif", ARRAY[z])
    volume = open_volume(folder)
    assert volume.shape == ARRAY.shape
    np.testing.assert_array_equal(volume[REGION], ARRAY[REGION])
    np.testing.assert_array_equal(volume[5], ARRAY[5])


def test_tiff_slice_folder_reads_only_needed_slices(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "slices"
    folder.mkdir()
    for z in range(ARRAY.shape[0]):
        tifffile.imwrite(folder / f"{z:04d}.tif", ARRAY[z])
    volume = open_volume(folder)
    reads: list[str] = []
    real = tifffile.imread
    monkeypatch.setattr(
        tifffile, "imread", lambda f, *a, **k: reads.append(Path(f).name) or real(f, *a, **k)
    )
    volume[4:7, :5, :5]
    assert reads == ["0004.tif", "0005.tif", "0006.tif"]


def test_tiff_slice_folder_inconsistent_shape(tmp_path: Path) -> None:
    folder = tmp_path / "slices"
    folder.mkdir()
    tifffile.imwrite(folder / "0000.tif", ARRAY[0])
    tifffile.imwrite(folder / "0001.tif", ARRAY[1, :10])
    with pytest.raises(VolumeFormatError, match="0001.tif: slice shape"):
        TiffSliceFolder(folder)


def test_zarr_v3_array(tmp_path: Path) -> None:
    path = tmp_path / "vol.zarr"
    z = zarr.create_array(str(path), shape=ARRAY.shape, chunks=(4, 8, 8), dtype="float32")
    z[:] = ARRAY
    volume = open_volume(path)
    assert volume.chunks == (4, 8, 8)
    np.testing.assert_array_equal(volume[REGION], ARRAY[REGION])


def test_memmap_tile_read_does_not_load_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(512, 256, 256))
    big[100:132, :32, :32] = 1.0
    big.flush()
    del big
    volume = open_volume(path)
    before = rss_bytes()
    tile = volume[100:132, :32, :32]
    grown = rss_bytes() - before
    assert tile.sum() == 32 * 32 * 32
    assert grown < 16 * 2**20, f"reading a 128 KiB tile grew RSS by {grown / 2**20:.1f} MiB"
    assert float(volume[:].sum()) == 32 * 32 * 32  # touches every page of the 128 MiB file
    assert rss_bytes() - before > 100 * 2**20  # so the probe does see a full read


def test_writer_leaves_nothing_on_error(tmp_path: Path) -> None:
    path = tmp_path / "out.npy"
    with pytest.raises(RuntimeError):
        with VolumeWriter(path, (4, 4, 4), np.float32) as writer:
            writer[:2] = 1.0
            assert partial_path(path).exists() and not path.exists()
            raise RuntimeError("crash")
    assert not path.exists() and not partial_path(path).exists()


def test_writer_resume_keeps_partial(tmp_path: Path) -> None:
    path = tmp_path / "out.zarr"
    with pytest.raises(RuntimeError):
        with VolumeWriter(path, (4, 4, 4), np.uint8, keep_partial_on_error=True) as writer:
            writer[:2] = 7
            raise RuntimeError("crash")
    assert partial_path(path).exists() and not path.exists()
    with VolumeWriter(path, (4, 4, 4), np.uint8, resume=True) as writer:
        assert writer.resumed and (writer[:2] == 7).all()
        writer[2:] = 9
    data = open_volume(path)[:]
    assert (data[:2] == 7).all() and (data[2:] == 9).all()


# --------------------------------------------------------------------------- errors, one each


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(MissingPathError, match="no such file"):
        open_volume(tmp_path / "nope.npy")


def test_unknown_type(tmp_path: Path) -> None:
    path = tmp_path / "vol.png"
    path.write_bytes(b"x")
    with pytest.raises(VolumeFormatError, match="unknown volume type"):
        open_volume(path)


def test_truncated_npy(tmp_path: Path) -> None:
    path = tmp_path / "vol.npy"
    np.save(path, ARRAY)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(VolumeFormatError, match="vol.npy: not a readable .npy"):
        open_volume(path)


def test_corrupt_tiff(tmp_path: Path) -> None:
    path = tmp_path / "vol.tif"
    path.write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(VolumeFormatError, match="vol.tif: not a readable TIFF"):
        open_volume(path)


def test_corrupt_zarr(tmp_path: Path) -> None:
    path = tmp_path / "vol.zarr"
    path.mkdir()
    (path / "zarr.json").write_text("{not json")
    with pytest.raises(VolumeFormatError, match="vol.zarr: not a readable zarr"):
        open_volume(path)


def test_not_3d(tmp_path: Path) -> None:
    path = tmp_path / "vol.npy"
    np.save(path, ARRAY[0])
    with pytest.raises(VolumeFormatError, match="expected a 3D volume"):
        open_volume(path)


def test_nan_and_inf(tmp_path: Path) -> None:
    data = ARRAY.copy()
    data[7, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", data)
    with pytest.raises(NonFiniteError, match="NaN intensities .first at z=7"):
        check_finite(open_volume(tmp_path / "nan.npy"))
    data[7, 1, 1] = np.inf
    np.save(tmp_path / "inf.npy", data)
    with pytest.raises(NonFiniteError, match="infinite"):
        check_finite(open_volume(tmp_path / "inf.npy"))


def test_label_values_outside_codes(tmp_path: Path) -> None:
    mask = np.zeros(ARRAY.shape, np.uint8)
    mask[1, 1, 1] = 3
    np.save(tmp_path / "mask.npy", mask)
    with pytest.raises(LabelValueError, match="found 3"):
        count_labels(open_volume(tmp_path / "mask.npy"))


def test_label_counts(tmp_path: Path) -> None:
    mask = RNG.integers(0, 3, ARRAY.shape).astype(np.uint8)
    np.save(tmp_path / "mask.npy", mask)
    counts = count_labels(open_volume(tmp_path / "mask.npy"))
    assert (counts.unannotated, counts.vessel, counts.background) == tuple(
        int((mask == v).sum()) for v in (0, 1, 2)
    )


def make_pair(folder: Path, sample_id: str, image: np.ndarray, mask: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"data_{sample_id}.npy", image)
    np.save(folder / f"mask_{sample_id}.npy", mask)


def test_shape_mismatch(tmp_path: Path) -> None:
    make_pair(tmp_path, "0", ARRAY, np.zeros((12, 20, 27), np.uint8))
    (sample,) = discover_dataset(tmp_path)
    with pytest.raises(ShapeMismatchError, match="does not match image shape"):
        validate_sample(sample)


def test_empty_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no volumes found"):
        discover_dataset(tmp_path)


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(MissingPathError):
        discover_dataset(tmp_path / "nope")


def test_image_without_mask_for_training(tmp_path: Path) -> None:
    np.save(tmp_path / "data_0.npy", ARRAY)
    np.save(tmp_path / "mask_1.npy", np.zeros(ARRAY.shape, np.uint8))
    with pytest.raises(DatasetError, match="mask_1.npy: no data_1 image"):
        discover_dataset(tmp_path, require_masks=True)


def test_no_annotated_vessel(tmp_path: Path) -> None:
    make_pair(tmp_path, "0", ARRAY, np.full(ARRAY.shape, 2, np.uint8))
    with pytest.raises(DatasetError, match="no annotated vessel"):
        validate_training_set(discover_dataset(tmp_path, require_masks=True))


def test_kaggle_layout_labels_map_to_codes(tmp_path: Path) -> None:
    kidney = tmp_path / "kidney_1_dense"
    (kidney / "images").mkdir(parents=True)
    (kidney / "labels").mkdir()
    labels = (ARRAY > 0.7).astype(np.uint8) * 255
    for z in range(ARRAY.shape[0]):
        tifffile.imwrite(kidney / "images" / f"{z:04d}.tif", (ARRAY[z] * 1000).astype(np.uint16))
        tifffile.imwrite(kidney / "labels" / f"{z:04d}.tif", labels[z])
    (sample,) = discover_dataset(tmp_path, require_masks=True)
    assert sample.id == "kidney_1_dense" and sample.layout == "kaggle"
    mask = sample.open_mask()[:]
    np.testing.assert_array_equal(mask, np.where(labels > 0, 1, 2))
    counts = validate_sample(sample)
    assert counts.unannotated == 0 and counts.vessel == int((labels > 0).sum())


def test_pairs_layout_with_truth(tiny_dataset: Path) -> None:
    samples = discover_dataset(tiny_dataset / "train", require_masks=True)
    assert [s.id for s in samples] == ["000", "001"]
    assert all(s.truth is not None for s in samples)
    counts = validate_training_set(samples)
    assert all(c.vessel > 0 for c in counts.values())
