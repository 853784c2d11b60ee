"""NRRD ``.nrrd`` / ``.nhdr`` through pynrrd: raw data memory-mapped, compressed data loaded.

pynrrd parses the header; raw-encoded data (attached, or one detached data file) is then
memory-mapped at its offset, so a region read touches only that region. SimpleITK's NRRD
reader loads the whole image even for a region, hence pynrrd here. gzip/bzip2/ASCII data
cannot be sliced without decompressing: it is read once, on first access, and kept (logged).
Arrays are in index order ``(z, y, x)``; spacing is the length of each ``space directions``
vector (or ``spacings``), the unit ``space units`` (mm when absent, ITK's convention).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.errors import VolumeFormatError
from vesselseg.io.spacing import FileSpacing, from_file

log = logging.getLogger(__name__)

NRRD_SUFFIXES = (".nrrd", ".nhdr")


class LoadedOnce:
    """An array read whole on first access (compressed NRRD), then sliced in memory."""

    def __init__(self, load: Any, shape: tuple[int, ...], dtype: np.dtype, path: Path) -> None:
        self._load, self._data, self.path = load, None, path
        self.shape, self.dtype = shape, dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        if self._data is None:
            log.info("%s: compressed NRRD, reading it whole into memory", self.path)
            self._data = self._load()
        return self._data[key]


def _header(path: Path) -> dict[str, Any]:
    import nrrd

    try:
        with open(path, "rb") as handle:
            header = dict(nrrd.read_header(handle))
            header["_offset"] = handle.tell()
        header["_dtype"] = nrrd.reader._determine_datatype(header)  # pynrrd's type table
    except Exception as exc:  # NRRDError, UnicodeDecodeError, KeyError, ValueError...
        reason = str(exc).split("\n")[0][:200]
        raise VolumeFormatError(f"{path}: not a readable NRRD file ({reason})") from None
    return header


def _voxel_size(header: dict[str, Any], where: str) -> FileSpacing:
    if header.get("space directions") is not None:
        try:
            rows = np.asarray(header["space directions"], dtype=float)
        except (TypeError, ValueError):
            return None
        if rows.ndim != 2 or np.isnan(rows).any():  # a "none" row: a non-spatial axis
            return None
        lengths = [float(v) for v in np.linalg.norm(rows, axis=1)]
    elif header.get("spacings") is not None:
        lengths = [float(v) for v in header["spacings"]]
    else:
        return None
    if len(lengths) != 3:
        return None
    units = {str(u) for u in header.get("space units", []) or []}
    unit = units.pop() if len(units) == 1 else None
    return from_file(lengths[::-1], unit, "mm", where)


def open_nrrd(path: Path) -> tuple[Any, FileSpacing]:
    """A NRRD file as a lazy ``(z, y, x)`` array and its voxel size."""
    import nrrd

    header = _header(path)
    sizes = [int(s) for s in np.atleast_1d(header.get("sizes", []))]
    if len(sizes) != 3:
        raise VolumeFormatError(f"{path}: expected a 3D volume (z, y, x), got sizes {sizes}")
    shape = tuple(reversed(sizes))
    dtype: np.dtype = header["_dtype"]
    voxel_size = _voxel_size(header, str(path))
    data_file = header.get("data file", header.get("datafile"))
    skips = header.get("line skip", header.get("lineskip", 0)), header.get("byte skip", 0)
    if header.get("encoding") == "raw" and skips in ((0, 0), (0, -1)) and data_file != "LIST":
        target = path if data_file is None else path.parent / str(data_file)
        nbytes = int(np.prod(sizes)) * dtype.itemsize
        offset = header["_offset"] if data_file is None else 0
        if skips[1] == -1:
            offset = target.stat().st_size - nbytes
        if not target.is_file() or target.stat().st_size < offset + nbytes or offset < 0:
            raise VolumeFormatError(f"{path}: data is shorter than sizes {sizes} x {dtype}")
        return np.memmap(target, dtype=dtype, mode="r", offset=offset, shape=shape), voxel_size

    def load() -> np.ndarray:
        try:
            with open(path, "rb") as handle:
                handle.seek(header["_offset"])
                fields = {k: v for k, v in header.items() if not k.startswith("_")}
                return nrrd.read_data(fields, handle, str(path), index_order="C")
        except Exception as exc:
            reason = str(exc).split("\n")[0][:200]
            raise VolumeFormatError(f"{path}: cannot read NRRD data ({reason})") from None

    return LoadedOnce(load, shape, dtype, path), voxel_size
