"""Write volumes region by region, atomically, keeping their voxel size.

Formats: npy (memmap), raw (+ sidecar), TIFF, zarr, OME-Zarr and NIfTI (``.nii``/``.nii.gz``).
A :class:`VolumeWriter` writes to ``<name>.part`` and renames to ``<name>`` only on
:meth:`VolumeWriter.commit` (through :mod:`vesselseg.io.atomic`), so a killed run never leaves
a file that looks finished. With ``resume=True`` an existing ``.part`` is reopened instead of
recreated (resumable inference).

A known ``voxel_size`` is kept where each format keeps it: the ``X.npy.json`` / ``X.raw.json``
sidecar, the NIfTI header (zooms, ``xyzt_units``, a diagonal affine), the zarr array's
attributes, NGFF 0.5 ``multiscales`` metadata, the TIFF's ImageJ metadata and resolution tags
(the JSON image description for dtypes ImageJ cannot hold). An unknown one is not written, so
it reads back unknown.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.errors import VesselsegError, VolumeFormatError
from vesselseg.io.atomic import commit, partial_path
from vesselseg.io.file_array import FileArray, release_pages, unmapped
from vesselseg.io.sidecar import sidecar_path, write_sidecar
from vesselseg.io.spacing import VoxelSize

RELEASE_BYTES = 4 << 20  # a still-mapped output drops its written pages after this many bytes
WRITE_FORMATS = ("npy", "raw", "tiff", "zarr", "ome-zarr", "nifti")
SUFFIX = {
    "npy": ".npy",
    "raw": ".raw",
    "tiff": ".tif",
    "zarr": ".zarr",
    "ome-zarr": ".ome.zarr",
    "nifti": ".nii.gz",
}
_SUFFIX_FORMATS = (
    (".ome.zarr", "ome-zarr"),
    (".npy", "npy"),
    (".raw", "raw"),
    (".zarr", "zarr"),
    (".tif", "tiff"),
    (".tiff", "tiff"),
    (".nii", "nifti"),
    (".nii.gz", "nifti"),
)

__all__ = ["SUFFIX", "WRITE_FORMATS", "VolumeWriter", "partial_path", "write_volume"]


def format_from_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in _SUFFIX_FORMATS:
        if name.endswith(suffix):
            return fmt
    raise VolumeFormatError(f"{path}: cannot tell the output format from the name")


def reserve_disk(path: Path) -> None:
    """Allocate the blocks of the (sparse) file ``path`` now, so a full disk is an ``OSError``
    (ENOSPC) here rather than a SIGBUS later, when a memory-mapped write finds no block."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size:
            try:
                os.posix_fallocate(fh.fileno(), 0, size)
            except OSError as exc:
                if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # file system without it
                    return
                raise OSError(exc.errno, exc.strerror, str(path)) from None


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class VolumeWriter:
    """Write a ``(z, y, x)`` volume by regions to a temporary name, rename when complete.

    Use as a context manager: a clean exit commits, an exception removes the partial output
    (unless ``keep_partial_on_error``, which resumable writers set). ``voxel_size`` is recorded
    in the output where the format has a place for it (see the module doc). An OME-Zarr output
    with ``pyramid="mean"`` or ``"max"`` gets a multiscale pyramid when committed
    (:mod:`~vesselseg.io.formats.pyramid`).
    """

    def __init__(
        self,
        path: str | Path,
        shape: tuple[int, ...],
        dtype: Any,
        fmt: str | None = None,
        chunks: tuple[int, ...] | None = None,
        resume: bool = False,
        keep_partial_on_error: bool = False,
        voxel_size: VoxelSize | None = None,
        pyramid: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.pyramid = pyramid  # OME-Zarr: build levels 1.. by "mean" or "max" on commit
        self.fmt = fmt or format_from_suffix(self.path)
        if self.fmt not in WRITE_FORMATS:
            raise VolumeFormatError(f"{self.path}: unknown output format {self.fmt!r}")
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.voxel_size = voxel_size if voxel_size is not None and voxel_size.known else None
        self.tmp = partial_path(self.path)
        self.keep_partial_on_error = keep_partial_on_error
        self.resumed = resume and self.tmp.exists()
        self._unreleased = 0  # bytes written since the pages of a mapped output were dropped
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._array = unmapped(self._open(chunks))  # written by pwrite, never mapped
            if self.fmt not in ("zarr", "ome-zarr") and not self.resumed:
                reserve_disk(self.tmp)
        except VesselsegError:
            raise
        except OSError as exc:
            if not self.resumed:
                self._array = None  # unmap before removing
                remove_path(self.tmp)
            raise VesselsegError(f"{self.path}: cannot write ({exc.strerror or exc})") from None

    def _open(self, chunks: tuple[int, ...] | None) -> Any:
        mode = "r+" if self.resumed else "w+"
        if not self.resumed:
            remove_path(self.tmp)
        if self.fmt == "npy":
            array = np.lib.format.open_memmap(
                self.tmp, mode=mode, dtype=self.dtype, shape=self.shape
            )
            if array.shape != self.shape or array.dtype != self.dtype:
                raise VolumeFormatError(f"{self.tmp}: partial output does not match, remove it")
            return array
        if self.fmt == "raw":
            return np.memmap(self.tmp, dtype=self.dtype, mode=mode, shape=self.shape)
        if self.fmt == "tiff":
            return self._open_tiff()
        if self.fmt == "nifti":
            from vesselseg.io.formats.nifti import create_nifti

            return create_nifti(self.tmp, self.shape, self.dtype, self.voxel_size, self.resumed)
        return self._open_zarr(chunks or _default_chunks(self.shape))

    def _open_tiff(self) -> Any:
        import tifffile

        from vesselseg.io.formats.tiff import IMAGEJ_DTYPES, IMAGEJ_MAX_BYTES

        if self.resumed:
            return tifffile.memmap(self.tmp, mode="r+")
        options: dict[str, Any] = {}
        if self.voxel_size is not None:
            z, y, x = self.voxel_size.spacing
            unit = self.voxel_size.unit
            nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
            options["resolution"] = (1.0 / x, 1.0 / y)
            if self.dtype.name in IMAGEJ_DTYPES and nbytes < IMAGEJ_MAX_BYTES:
                options.update(imagej=True, metadata={"spacing": z, "unit": unit, "axes": "ZYX"})
            else:  # tifffile's JSON image description
                options["metadata"] = {"spacing": [z, y, x], "unit": unit}
        return tifffile.memmap(
            self.tmp, shape=self.shape, dtype=self.dtype, photometric="minisblack", **options
        )

    def _open_zarr(self, chunks: tuple[int, ...]) -> Any:
        import zarr

        if self.fmt == "zarr":
            if self.resumed:
                return zarr.open_array(str(self.tmp), mode="r+")
        elif self.resumed:
            return zarr.open_group(str(self.tmp), mode="r+")["0"]
        from vesselseg.io.formats.zarr_store import create_zarr

        return create_zarr(
            self.tmp, self.shape, self.dtype, chunks, self.fmt, self.path.name, self.voxel_size
        )

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        try:
            self._array[key] = value
        except OSError as exc:
            raise VesselsegError(f"{self.path}: write failed ({exc.strerror or exc})") from None
        if isinstance(self._array, np.memmap):  # no positional I/O here: keep RSS bounded
            self._unreleased += np.asarray(value).size * self.dtype.itemsize
            if self._unreleased > RELEASE_BYTES:
                release_pages(self._array)
                self._unreleased = 0

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._array[key])

    def flush(self) -> None:
        flush = getattr(self._array, "flush", None)
        if flush is not None:
            try:
                flush()
            except OSError as exc:
                raise VesselsegError(f"{self.path}: write failed ({exc.strerror or exc})") from None
        release_pages(self._array)  # a mapped output's written pages (no-op otherwise)
        self._unreleased = 0

    def _close(self) -> None:
        if isinstance(self._array, FileArray):
            self._array.close()
        self._array = None

    def commit(self) -> Path:
        """Flush, close and rename the partial output to its final name (with its sidecar);
        an OME-Zarr image with a ``pyramid`` method gets its levels first."""
        self.flush()
        self._close()
        if self.fmt == "ome-zarr" and self.pyramid:
            from vesselseg.io.formats.pyramid import build_pyramid

            build_pyramid(self.tmp, self.pyramid, self.voxel_size, self.path.name)
        self._write_sidecar()
        if self.fmt == "nifti" and self.path.name.lower().endswith(".gz"):
            from vesselseg.io.formats.nifti import gzip_file

            packed = self.path.with_name(self.path.name + ".gz.part")
            try:
                gzip_file(self.tmp, packed)
                commit(packed, self.path)
            finally:
                remove_path(packed)
            remove_path(self.tmp)
            return self.path
        remove_path(self.path)  # os.replace cannot replace a folder (zarr)
        commit(self.tmp, self.path)
        return self.path

    def _write_sidecar(self) -> None:
        """The raw file's sidecar, the npy file's voxel size; a stale sidecar is removed."""
        fields: dict[str, Any] = self.voxel_size.as_json() if self.voxel_size else {}
        if self.fmt == "raw":
            fields = {"shape": list(self.shape), "dtype": self.dtype.str, "order": "C", **fields}
        if self.fmt in ("raw", "npy") and fields:
            write_sidecar(self.path, fields)
        else:
            remove_path(sidecar_path(self.path))  # it described the file this one replaces

    def abort(self) -> None:
        """Drop the partial output."""
        self._close()
        remove_path(self.tmp)

    def __enter__(self) -> VolumeWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        elif self.keep_partial_on_error:
            self.flush()
        else:
            self.abort()


def _default_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(min(64, s) for s in shape)


def write_volume(
    path: str | Path,
    array: Any,
    fmt: str | None = None,
    slab: int = 64,
    voxel_size: VoxelSize | None = None,
) -> Path:
    """Write an in-memory (or lazily sliced) array atomically, slab by slab along z.

    ``voxel_size`` defaults to the array's own (a :class:`~vesselseg.io.Volume`'s).
    """
    voxel_size = voxel_size or getattr(array, "voxel_size", None)
    with VolumeWriter(path, array.shape, array.dtype, fmt=fmt, voxel_size=voxel_size) as writer:
        for z0 in range(0, array.shape[0], slab):
            writer[z0 : z0 + slab] = np.asarray(array[z0 : z0 + slab])
    return Path(path)
