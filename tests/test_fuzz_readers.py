"""Property-based: readers given random shapes, dtypes and bytes fail only with user errors."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vesselseg.errors import VesselsegError
from vesselseg.io import open_volume, write_volume

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


SUFFIXES = [".npy", ".tif", ".raw", ".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr"]


def read_lazily_or_refuse(path: Path) -> None:
    """Like :func:`read_or_refuse`, for formats read lazily: a damaged region may also be found
    only when it is read, and then it too is a one-line VesselsegError naming the file."""
    try:
        read_or_refuse(path)
    except VesselsegError as exc:
        assert "\n" not in str(exc) and str(path.name) in str(exc)


@settings(max_examples=120, deadline=None)
@given(data=st.binary(max_size=400), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"vol{suffix}"
        path.write_bytes(data)
        (Path(tmp) / "vol.raw.json").write_text(json.dumps({"shape": [2, 3, 4], "dtype": "uint8"}))
        if suffix in (".npy", ".tif", ".raw"):
            read_or_refuse(path)
        else:  # formats whose data is read lazily (a header may parse, the data not)
            read_lazily_or_refuse(path)


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


def write_real(path: Path, array: np.ndarray) -> None:
    """A valid file of ``path``'s format, written by the format's own library (or ours)."""
    name = path.name
    if name.endswith((".mha", ".nrrd")):
        import SimpleITK as sitk

        sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    else:
        write_volume(path, array)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=3, max_size=3).map(tuple),
    dtype=st.sampled_from(["uint8", "int16", "float32"]),
    suffix=st.sampled_from([".nii", ".nii.gz", ".mha", ".nrrd", ".tif", ".npy"]),
    cut=st.integers(1, 200),
)
def test_new_formats_truncated(shape: tuple[int, ...], dtype: str, suffix: str, cut: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"vol{suffix}"
        write_real(path, np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape))
        path.write_bytes(path.read_bytes()[:-cut])
        read_lazily_or_refuse(path)


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=200), field=st.sampled_from(["spacing", "unit", "whole"]))
def test_random_sidecars_and_ngff_metadata(text: str, field: str) -> None:
    """Whatever a sidecar or NGFF block holds, the result is a volume or a one-line error."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vol.npy"
        np.save(path, np.zeros((2, 3, 4), np.uint8))
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        sidecar = Path(tmp) / "vol.npy.json"
        fields = {"spacing": [1, 2, 3], field: value}
        sidecar.write_text(text if field == "whole" else json.dumps(fields))
        read_or_refuse(path)
        group = Path(tmp) / "vol.ome.zarr"
        write_volume(group, np.zeros((2, 3, 4), np.uint8))
        zarr_json = json.loads((group / "zarr.json").read_text())
        zarr_json["attributes"]["ome"]["multiscales"][0][
            "datasets" if field == "whole" else "axes"
        ] = value
        (group / "zarr.json").write_text(json.dumps(zarr_json))
        read_or_refuse(group)
