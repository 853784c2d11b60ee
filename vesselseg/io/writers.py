"""Write volumes region by region, atomically: npy (memmap), raw (+ sidecar), TIFF, zarr.

A :class:`VolumeWriter` writes to ``<name>.part`` and renames to ``<name>`` only on
:meth:`VolumeWriter.commit`, so a killed run never leaves a file that looks finished. With
``resume=True`` an existing ``.part`` is reopened instead of recreated (resumable inference).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.errors import VesselsegError, VolumeFormatError

WRITE_FORMATS = ("npy", "raw", "tiff", "zarr")
SUFFIX = {"npy": ".npy", "raw": ".raw", "tiff": ".tif", "zarr": ".zarr"}


def format_from_suffix(path: Path) -> str:
    name = path.name.lower()
    for fmt, suffix in (("npy", ".npy"), ("raw", ".raw"), ("zarr", ".zarr")):
        if name.endswith(suffix):
            return fmt
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    raise VolumeFormatError(f"{path}: cannot tell the output format from the name")


def partial_path(path: Path) -> Path:
    """Where ``path`` is written until it is complete."""
    return path.with_name(path.name + ".part")


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
    (unless ``keep_partial_on_error``, which resumable writers set).
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
    ) -> None:
        self.path = Path(path)
        self.fmt = fmt or format_from_suffix(self.path)
        if self.fmt not in WRITE_FORMATS:
            raise VolumeFormatError(f"{self.path}: unknown output format {self.fmt!r}")
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.tmp = partial_path(self.path)
        self.keep_partial_on_error = keep_partial_on_error
        self.resumed = resume and self.tmp.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._array = self._open(chunks)
            if self.fmt != "zarr" and not self.resumed:
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
            import tifffile

            if self.resumed:
                return tifffile.memmap(self.tmp, mode="r+")
            return tifffile.memmap(
                self.tmp, shape=self.shape, dtype=self.dtype, photometric="minisblack"
            )
        import zarr

        if self.resumed:
            return zarr.open_array(str(self.tmp), mode="r+")
        chunks = chunks or _default_chunks(self.shape)
        return zarr.open_array(
            str(self.tmp), mode="w", shape=self.shape, dtype=self.dtype, chunks=chunks
        )

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        try:
            self._array[key] = value
        except OSError as exc:
            raise VesselsegError(f"{self.path}: write failed ({exc.strerror or exc})") from None

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._array[key])

    def flush(self) -> None:
        flush = getattr(self._array, "flush", None)
        if flush is not None:
            try:
                flush()
            except OSError as exc:
                raise VesselsegError(f"{self.path}: write failed ({exc.strerror or exc})") from None

    def commit(self) -> Path:
        """Flush, close and rename the partial output to its final name."""
        self.flush()
        self._array = None
        if self.fmt == "raw":
            meta = {"shape": list(self.shape), "dtype": self.dtype.str, "order": "C"}
            sidecar = self.path.with_name(self.path.name + ".json")
            tmp_sidecar = partial_path(sidecar)
            tmp_sidecar.write_text(json.dumps(meta))
            os.replace(tmp_sidecar, sidecar)
        remove_path(self.path)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial output."""
        self._array = None
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
    path: str | Path, array: np.ndarray, fmt: str | None = None, slab: int = 64
) -> Path:
    """Write an in-memory (or lazily sliced) array atomically, slab by slab along z."""
    with VolumeWriter(path, array.shape, array.dtype, fmt=fmt) as writer:
        for z0 in range(0, array.shape[0], slab):
            writer[z0 : z0 + slab] = np.asarray(array[z0 : z0 + slab])
    return Path(path)
