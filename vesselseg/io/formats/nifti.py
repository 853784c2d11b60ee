"""NIfTI ``.nii`` / ``.nii.gz`` through nibabel: lazy proxy slicing, axes in ``(z, y, x)``.

Reading: the voxel axes are reordered to the closest canonical orientation (nibabel's
``io_orientation``, as ``as_closest_canonical`` would), and then to ``(z, y, x)`` = (S, A, R),
as a lazy view (:class:`~vesselseg.io.formats.orient.ReorientedArray`), so a region read
touches only that region of the file. Spacing is the header's zooms, reordered the same way;
the unit is ``xyzt_units`` (``mm`` when the header gives none, NIfTI's convention).

Writing (:func:`create_nifti`): a nibabel header (zooms, units, a diagonal affine) followed by
the data at ``vox_offset``, memory-mapped so a writer fills it region by region; ``.nii.gz`` is
that file gzip-compressed when complete.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.errors import VolumeFormatError
from vesselseg.io.formats.orient import ReorientedArray
from vesselseg.io.spacing import FileSpacing, VoxelSize, from_file

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NIFTI_UNITS = {"um": "micron", "mm": "mm"}
_HEADER_BYTES = 352  # a NIfTI-1 header and its (empty) extension flag


class NiftiArray:
    """The data of a NIfTI file, opened lazily and reopened after a fork or unpickling.

    The file handle is kept open between reads (fast seeks in ``.nii.gz``); nibabel locks it
    across threads, and a forked or unpickled copy opens its own.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pid = -1
        self._proxy: Any = None
        proxy = self._get()
        extra = proxy.shape[3:]
        if any(int(n) != 1 for n in extra):
            raise VolumeFormatError(
                f"{path}: expected a 3D volume (z, y, x), got shape {tuple(proxy.shape)}"
            )
        self._tail = (0,) * len(extra)
        self.shape = tuple(int(n) for n in proxy.shape[:3])
        self.dtype = np.asarray(proxy[(0,) * len(proxy.shape)]).dtype  # after scl_slope/inter

    def _get(self) -> Any:
        if self._pid != os.getpid() or self._proxy is None:
            import nibabel as nib

            image = nib.load(self.path, keep_file_open=True)
            self.header, self.affine = image.header, image.affine
            self._proxy = image.dataobj
            self._pid = os.getpid()
        return self._proxy

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_proxy": None, "_pid": -1, "header": None, "affine": None}

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        return np.asarray(self._get()[tuple(key) + self._tail])


def open_nifti(path: Path) -> tuple[ReorientedArray, FileSpacing]:
    """The ``(z, y, x)`` lazy view of a NIfTI file and the voxel size its header gives."""
    from nibabel.orientations import io_orientation

    try:
        array = NiftiArray(path)
        zooms = [float(z) for z in array.header.get_zooms()[:3]]
        space_unit = array.header.get_xyzt_units()[0]
        ornt = io_orientation(array.affine)
    except VolumeFormatError:
        raise
    except Exception as exc:  # nibabel raises many types for corrupt files
        reason = str(exc).split("\n")[0]
        raise VolumeFormatError(f"{path}: not a readable NIfTI file ({reason})") from None
    if len(array.shape) != 3:
        raise VolumeFormatError(f"{path}: expected a 3D volume (z, y, x), got shape {array.shape}")
    if np.isnan(ornt).any():  # a degenerate affine: keep the voxel order
        ornt = np.array([[0, 1], [1, 1], [2, 1]])
    # ornt[i] = (RAS axis of voxel axis i, ±1); output axis t of (z, y, x) is RAS axis 2 - t
    source = {int(ornt[i, 0]): i for i in range(3)}
    axes = tuple(source[2 - t] for t in range(3))
    flips = tuple(bool(ornt[axes[t], 1] < 0) for t in range(3))
    unit = None if space_unit == "unknown" else space_unit
    spacing = [zooms[a] for a in axes]
    return ReorientedArray(array, axes, flips), from_file(spacing, unit, "mm", str(path))


def nifti_header(shape: tuple[int, ...], dtype: Any, voxel_size: VoxelSize | None) -> Any:
    """A NIfTI-1 header for a ``(z, y, x)`` array stored as NIfTI axes ``(x, y, z)``."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(tuple(reversed(shape)))
    try:
        header.set_data_dtype(np.dtype(dtype))
    except Exception:
        raise VolumeFormatError(f"NIfTI cannot store dtype {np.dtype(dtype)}") from None
    affine = np.eye(4)
    if voxel_size is not None and voxel_size.known:
        z, y, x = voxel_size.spacing
        affine = np.diag([x, y, z, 1.0])
        header.set_xyzt_units(NIFTI_UNITS[voxel_size.unit])
    header.set_qform(affine, code="aligned")
    header.set_sform(affine, code="aligned")
    header.set_data_offset(_HEADER_BYTES)
    return header


def create_nifti(
    tmp: Path, shape: tuple[int, ...], dtype: Any, voxel_size: VoxelSize | None, resume: bool
) -> np.memmap:
    """A memory-mapped ``(z, y, x)`` array inside the uncompressed NIfTI file ``tmp``.

    With ``resume`` an existing ``tmp`` is reopened after checking its header matches.
    """
    dtype = np.dtype(dtype)
    header = nifti_header(shape, dtype, voxel_size)
    if resume:
        import nibabel as nib

        with open(tmp, "rb") as handle:
            old = nib.Nifti1Header.from_fileobj(handle)
        if tuple(old.get_data_shape()) != tuple(reversed(shape)) or old.get_data_dtype() != dtype:
            raise VolumeFormatError(f"{tmp}: partial output does not match, remove it")
        return np.memmap(tmp, dtype=dtype, mode="r+", offset=_HEADER_BYTES, shape=shape)
    with open(tmp, "wb") as handle:
        header.write_to(handle)
        handle.write(b"\0" * (_HEADER_BYTES - handle.tell()))
        handle.truncate(_HEADER_BYTES + int(np.prod(shape)) * dtype.itemsize)
    disk_dtype = header.get_data_dtype()
    return np.memmap(tmp, dtype=disk_dtype, mode="r+", offset=_HEADER_BYTES, shape=shape)


def gzip_file(source: Path, target: Path, level: int = 6) -> None:
    """Compress ``source`` into ``target`` (a streamed copy: memory stays bounded)."""
    with open(source, "rb") as src, gzip.open(target, "wb", compresslevel=level) as dst:
        shutil.copyfileobj(src, dst, 16 << 20)
