"""io.atomic: a final name only ever holds a complete file; io.slabs: slabs cover a volume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vesselseg.io import atomic
from vesselseg.io.slabs import iter_slabs, slab_ranges, volume_slabs


def test_write_json_renames_complete_file(tmp_path: Path) -> None:
    out = atomic.write_json(tmp_path / "sub" / "a.json", {"b": 1, "a": [1, 2]})
    assert json.loads(out.read_text()) == {"a": [1, 2], "b": 1}
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.json"]


@pytest.mark.parametrize("unique", [False, True])
def test_failed_write_leaves_neither_final_nor_partial(tmp_path: Path, unique: bool) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old complete content")
    with pytest.raises(RuntimeError):
        with atomic.atomic_open(target, "w", unique=unique) as handle:
            handle.write("half")
            raise RuntimeError("killed half way")
    assert target.read_text() == "old complete content"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_unique_temporaries_do_not_collide(tmp_path: Path) -> None:
    target = tmp_path / "cache.bin"
    with atomic.atomic_path(target, unique=True) as first:
        with atomic.atomic_path(target, unique=True) as second:
            assert first != second
            second.write_bytes(b"second")
        first.write_bytes(b"first")
    assert target.read_bytes() == b"first"  # the last complete write wins


def test_commit_moves_a_folder(tmp_path: Path) -> None:
    part = atomic.partial_path(tmp_path / "store.zarr")
    part.mkdir()
    (part / "zarr.json").write_text("{}")
    final = atomic.commit(part, tmp_path / "store.zarr")
    assert (final / "zarr.json").read_text() == "{}" and not part.exists()


@pytest.mark.parametrize("budget", [1, 3 * 5 * 4, 10**9])
def test_slabs_cover_the_volume_once(budget: int) -> None:
    volume = np.arange(7 * 3 * 5, dtype=np.float32).reshape(7, 3, 5)
    got = np.concatenate([slab for _, slab in iter_slabs(volume, budget=budget)])
    np.testing.assert_array_equal(got, volume)
    ranges = volume_slabs(volume.shape, 4, budget)
    assert ranges[0][0] == 0 and ranges[-1][1] == 7
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def test_slab_halo_is_counted_in_the_budget() -> None:
    # 10 planes fit the budget; a halo of 2 planes each side leaves cores of 6
    assert list(slab_ranges(20, 100, 1.0, budget=1000, halo=2)) == [
        (0, 6),
        (6, 12),
        (12, 18),
        (18, 20),
    ]
    assert list(slab_ranges(3, 100, 1.0, budget=1, halo=5)) == [(0, 1), (1, 2), (2, 3)]
