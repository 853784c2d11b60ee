"""Property-based: readers given random shapes, dtypes and bytes fail only with user errors."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vesselseg.errors import VesselsegError
from vesselseg.io import open_volume

DTYPES = st.sampled_from(["uint8", "uint16", "int16", "float32", "float64"])
SHAPES = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)


def read_or_refuse(path: Path, **kwargs: object) -> None:
    """Either a readable volume (a region read works) or a VesselsegError — nothing else."""
    try:
        volume = open_volume(path, **kwargs)
    except VesselsegError as exc:
        assert "\n" not in str(exc) and str(path.name) in str(exc)
        return
    assert volume.ndim == 3 and min(volume.shape) > 0
    region = volume[: min(2, volume.shape[0])]
    assert region.shape[1:] == volume.shape[1:]


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".npy", ".tif", ".raw"]))
def test_random_bytes(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"vol{suffix}"
        path.write_bytes(data)
        (Path(tmp) / "vol.raw.json").write_text(json.dumps({"shape": [2, 3, 4], "dtype": "uint8"}))
        read_or_refuse(path)


@settings(max_examples=40, deadline=None)
@given(shape=SHAPES, dtype=DTYPES, cut=st.integers(0, 64))
def test_real_arrays_whole_or_truncated(shape: tuple[int, ...], dtype: str, cut: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vol.npy"
        np.save(path, np.zeros(shape, dtype=dtype))
        if cut:
            path.write_bytes(path.read_bytes()[:-cut])
        read_or_refuse(path)


@settings(max_examples=40, deadline=None)
@given(shape=SHAPES, dtype=DTYPES, claimed=SHAPES)
def test_raw_with_any_claimed_shape(
    shape: tuple[int, ...], dtype: str, claimed: tuple[int, ...]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vol.raw"
        np.zeros(shape, dtype=dtype).tofile(path)
        read_or_refuse(path, shape=claimed, dtype=dtype)
