"""FileArray: positional reads/writes of a file equal NumPy's indexing of the same bytes, and a
streamed prediction no longer maps its input or outputs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from vesselseg.io import open_volume
from vesselseg.io.file_array import FileArray, unmapped

KEYS = [
    np.s_[:],
    np.s_[1:3],
    np.s_[1:3, 2:5],
    np.s_[:, :, 3:4],
    np.s_[2, :, 1:8],
    np.s_[..., 4],
    np.s_[-1],
    np.s_[0, 0, 0],
    np.s_[3:1],
    np.s_[:, 2],
    np.s_[::2],  # not a basic box: through a temporary mapping
    np.s_[:, ::-1],
    np.s_[[0, 2]],
]


@pytest.fixture
def stored(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 60000, (5, 7, 9)).astype(">u2")  # byte order kept
    path = tmp_path / "a.npy"
    np.save(path, data)
    return path, data


@pytest.mark.parametrize("key", KEYS, ids=str)
def test_reads_equal_numpy_indexing(stored, key):
    path, data = stored
    array = unmapped(np.load(path, mmap_mode="r"))
    assert isinstance(array, FileArray)
    got = array[key]
    assert got.shape == data[key].shape and got.dtype == data.dtype
    np.testing.assert_array_equal(got, data[key])


def test_writes_equal_numpy_assignment_and_read_only_refuses(tmp_path, stored):
    rng = np.random.default_rng(1)
    path = tmp_path / "out.npy"
    array = unmapped(np.lib.format.open_memmap(path, "w+", np.float32, (5, 7, 9)))
    expected = np.zeros((5, 7, 9), np.float32)
    for key in KEYS:
        value = rng.random(expected[key].shape)  # float64: cast as NumPy casts
        array[key] = value
        expected[key] = value
    array[1:3, 2:4] = 7  # broadcast scalar
    expected[1:3, 2:4] = 7
    array.flush()
    np.testing.assert_array_equal(np.load(path), expected)
    source, _ = stored
    with pytest.raises(ValueError, match="read-only"):
        unmapped(np.load(source, mmap_mode="r"))[0] = 1


def test_pickles_without_its_descriptor_and_leaves_other_arrays_alone(stored):
    path, data = stored
    array = unmapped(np.load(path, mmap_mode="r"))
    array[0]  # opens the file
    copy = pickle.loads(pickle.dumps(array))
    np.testing.assert_array_equal(copy[2:4], data[2:4])
    plain = np.zeros(3)
    assert unmapped(plain) is plain
    mapped = np.load(path, mmap_mode="r")
    view = mapped[1:]  # a view's offset is its parent's: not converted
    assert unmapped(view) is view


def test_out_of_bounds_index_raises(stored):
    path, _ = stored
    array = unmapped(np.load(path, mmap_mode="r"))
    with pytest.raises(IndexError):
        array[5]


def _mapped_bytes(name: str) -> int:
    """Resident bytes of this process's mappings of files whose name contains ``name``."""
    total, current = 0, ""
    with open("/proc/self/smaps") as fh:
        for line in fh:
            parts = line.split()
            if "-" in parts[0] and ":" not in parts[0]:
                current = parts[-1] if len(parts) > 5 else ""
            elif parts[0] == "Rss:" and name in current:
                total += int(parts[1]) * 1024
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc smaps")
def test_streamed_volume_and_writer_keep_no_file_pages(tmp_path):
    """A Volume opened for streaming reads by pread; a VolumeWriter writes by pwrite: neither
    maps the file, so none of its pages is resident in this process."""
    from vesselseg.io import VolumeWriter

    data = np.arange(16 * 64 * 64, dtype=np.float32).reshape(16, 64, 64)
    np.save(tmp_path / "in.npy", data)
    volume = open_volume(tmp_path / "in.npy").unmapped()
    np.testing.assert_array_equal(volume[2:9, 5:40, 1:63], data[2:9, 5:40, 1:63])
    with VolumeWriter(tmp_path / "out.npy", data.shape, np.float32) as writer:
        for z in range(0, 16, 4):
            writer[z : z + 4] = data[z : z + 4] * 2
        assert _mapped_bytes("in.npy") == 0
        assert _mapped_bytes("out.npy") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), data * 2)
