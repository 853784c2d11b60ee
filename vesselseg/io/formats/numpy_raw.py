"""``.npy`` (memory-mapped) and headerless ``.raw`` (memory-mapped, shape from a sidecar).

A raw file's sidecar ``X.raw.json`` holds ``{"shape": [z, y, x], "dtype": "uint16",
"order": "C"}`` and optionally the voxel size (``"spacing": [z, y, x], "unit": "um"``); a
``.npy`` file's voxel size is in ``X.npy.json`` (see :mod:`vesselseg.io.sidecar`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselseg.errors import VolumeFormatError
from vesselseg.io.sidecar import read_sidecar, sidecar_path


def open_npy(path: Path) -> np.ndarray:
    """A ``.npy`` file memory-mapped read-only."""
    if not path.is_file():
        raise VolumeFormatError(f"{path}: expected a .npy file, found a folder")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = str(exc).split("\n")[0]
        raise VolumeFormatError(f"{path}: not a readable .npy file ({reason})") from None
    if not isinstance(array, np.ndarray) or array.dtype.hasobject:
        raise VolumeFormatError(f"{path}: .npy holds no numeric array")
    if array.dtype.fields is not None:
        raise VolumeFormatError(f"{path}: structured dtypes are not volumes")
    return array


def open_raw(path: Path, shape: tuple[int, ...] | None, dtype: str | None) -> np.memmap:
    """A raw file memory-mapped with ``shape``/``dtype`` (given or from the sidecar)."""
    if not path.is_file():
        raise VolumeFormatError(f"{path}: expected a raw file, found a folder")
    sidecar = sidecar_path(path)
    meta = read_sidecar(path) if sidecar.is_file() else None
    order = "C"
    if meta is not None and (shape is None or dtype is None):
        try:
            shape = shape or tuple(int(s) for s in meta["shape"])
            dtype = dtype or str(meta["dtype"])
            order = str(meta.get("order", "C"))
        except (ValueError, KeyError, TypeError):
            raise VolumeFormatError(
                f"{sidecar}: expected JSON with 'shape' [z, y, x] and 'dtype'"
            ) from None
    if shape is None or dtype is None:
        raise VolumeFormatError(
            f"{path}: raw file needs --shape and --dtype or a sidecar {sidecar.name}"
        )
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise VolumeFormatError(f"{path}: unknown dtype {dtype!r}") from None
    shape = tuple(int(s) for s in shape)
    if any(s <= 0 for s in shape):
        raise VolumeFormatError(f"{path}: shape {shape} must be positive")
    if order not in ("C", "F"):
        raise VolumeFormatError(f"{sidecar}: order must be 'C' or 'F', got {order!r}")
    expected = int(np.prod(shape)) * np_dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise VolumeFormatError(
            f"{path}: size {size} bytes does not match shape {shape} x {np_dtype} "
            f"= {expected} bytes"
        )
    array = np.memmap(path, dtype=np_dtype, mode="r", shape=shape, order=order)  # type: ignore[call-overload]
    return array
