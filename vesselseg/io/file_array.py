"""A C-ordered array in a file, read and written with positional I/O instead of a mapping.

A memory-mapped file counts every page the process touches in its resident memory until the
pages are unmapped, and since Linux maps a file's large folios whole, a small write into a
mapped output can map megabytes: a 12 x 12 x 512 float32 cell (0.3 MiB) written into a
512^3 output raised the mapping's resident size from 0 to 11 MiB, and a z-row of cells held
36 MiB resident. :class:`FileArray` reads and writes the same bytes with ``pread``/``pwrite``
(one call per contiguous run of the region), so the data passes through the page cache but is
never part of the process's memory, whatever the kernel's folio sizes.

Regions are basic indices (integers and slices of step 1); any other index (a stride, a
negative step, fancy indexing) goes through a temporary mapping of the file that is dropped
straight after. :func:`unmapped` turns a C-ordered ``np.memmap`` into one (anything else is
returned as it is, as on systems without ``os.pread``).
"""

from __future__ import annotations

import math
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

POSITIONAL_IO = hasattr(os, "preadv") and hasattr(os, "pwritev")


class FileArray:
    """``shape``/``dtype`` values in C order at byte ``offset`` of ``path`` (mode ``"r"``:
    read-only, ``"r+"``: read and write), sliced like a NumPy array."""

    def __init__(
        self, path: str | Path, dtype: Any, shape: tuple[int, ...], offset: int, mode: str
    ) -> None:
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        self.path, self.mode, self.offset = Path(path), mode, int(offset)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        strides, step = [], self.dtype.itemsize
        for size in reversed(self.shape):
            strides.append(step)
            step *= size
        self.strides = tuple(reversed(strides))
        self._fd: int | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def fd(self) -> int:
        """The file's descriptor, opened on first use (also after unpickling)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR if self.mode == "r+" else os.O_RDONLY)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}

    def __getitem__(self, key: Any) -> np.ndarray:
        box = basic_box(key, self.shape)
        if box is None:
            return np.array(self._mapped("r")[key])
        starts, stops, squeeze = box
        out = np.empty([b - a for a, b in zip(starts, stops)], self.dtype)
        if out.size:
            fd = self.fd()
            for offset, run in self._runs(starts, stops, out):
                _read_fully(fd, run, offset)
        return out.reshape([n for n, s in zip(out.shape, squeeze) if not s])

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.mode != "r+":
            raise ValueError("assignment destination is read-only")
        box = basic_box(key, self.shape)
        if box is None:
            mapped = self._mapped("r+")
            mapped[key] = value
            mapped.flush()
            return
        starts, stops, squeeze = box
        shape = [b - a for a, b in zip(starts, stops)]
        kept = [n for n, s in zip(shape, squeeze) if not s]
        data = np.broadcast_to(np.asarray(value), kept).astype(self.dtype, copy=False)
        data = np.ascontiguousarray(data).reshape(shape)
        if data.size:
            fd = self.fd()
            for offset, run in self._runs(starts, stops, data):
                _write_fully(fd, run, offset)

    def flush(self) -> None:
        """Make the written data durable (as ``np.memmap.flush`` does)."""
        if self._fd is not None and self.mode == "r+":
            os.fsync(self._fd)

    def _runs(
        self, starts: list[int], stops: list[int], data: np.ndarray
    ) -> list[tuple[int, memoryview]]:
        """``(file offset, bytes of data)`` for each contiguous run of the box in the file."""
        inner = self.ndim  # the box covers axes inner.. whole: they merge into one run
        while inner > 0 and starts[inner - 1] == 0 and stops[inner - 1] == self.shape[inner - 1]:
            inner -= 1
        axis = max(inner - 1, 0)  # runs span this axis's extent and every axis after it
        run_items = math.prod(stops[i] - starts[i] for i in range(axis, self.ndim))
        flat = memoryview(data.reshape(-1).view(np.uint8))
        run_bytes = run_items * self.dtype.itemsize
        outer = [range(starts[i], stops[i]) for i in range(axis)]
        base = self.offset + sum(starts[i] * self.strides[i] for i in range(axis, self.ndim))
        runs = []
        for n, index in enumerate(np.ndindex(*[len(r) for r in outer]) if outer else [()]):
            offset = base + sum((outer[i][j]) * self.strides[i] for i, j in enumerate(index))
            runs.append((offset, flat[n * run_bytes : (n + 1) * run_bytes]))
        return runs

    def _mapped(self, mode: str) -> np.memmap:
        return np.memmap(self.path, self.dtype, mode, self.offset, self.shape)


def basic_box(key: Any, shape: tuple[int, ...]) -> tuple[list[int], list[int], list[bool]] | None:
    """``(starts, stops, squeezed)`` per axis of a basic index (integers, slices of step 1, one
    Ellipsis), or None for any other index."""
    keys = list(key) if isinstance(key, tuple) else [key]
    if sum(k is Ellipsis for k in keys) > 1:
        return None
    if Ellipsis in keys:
        at = keys.index(Ellipsis)
        keys[at : at + 1] = [slice(None)] * (len(shape) - len(keys) + 1)
    if len(keys) > len(shape):
        return None
    keys += [slice(None)] * (len(shape) - len(keys))
    starts, stops, squeeze = [], [], []
    for k, size in zip(keys, shape):
        if isinstance(k, slice):
            start, stop, step = k.indices(size)
            if step != 1:
                return None
            starts.append(start)
            stops.append(max(start, stop))
            squeeze.append(False)
        elif isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            i = int(k) + size if k < 0 else int(k)
            if not 0 <= i < size:
                raise IndexError(f"index {int(k)} is out of bounds for axis with size {size}")
            starts.append(i)
            stops.append(i + 1)
            squeeze.append(True)
        else:
            return None
    return starts, stops, squeeze


def unmapped(array: Any) -> Any:
    """A C-ordered ``np.memmap`` of a file as a :class:`FileArray` over the same bytes (its
    mapping is no longer used); anything else unchanged."""
    if not POSITIONAL_IO or not isinstance(array, np.memmap):
        return array
    filename = getattr(array, "filename", None)
    if filename is None or not array.flags.c_contiguous or array.mode not in ("r", "r+", "w+"):
        return array
    if isinstance(array.base, np.ndarray):  # a view: its offset is its parent's
        return array
    mode = "r" if array.mode == "r" else "r+"
    return FileArray(filename, array.dtype, array.shape, array.offset, mode)


def release_pages(array: Any) -> None:
    """Drop a file-backed memmap's resident pages from this process (data stays in the file
    and page cache), so touched pages do not pile up in RSS. No-op for anything else (a
    :class:`FileArray` maps nothing)."""
    base = getattr(array, "_mmap", None)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if isinstance(array, np.memmap) and base is not None and advice is not None:
        try:
            base.madvise(advice)
        except (OSError, ValueError):  # closed or unsupported: harmless
            pass


def _read_fully(fd: int, buffer: memoryview, offset: int) -> None:
    done = 0
    while done < len(buffer):
        n = os.preadv(fd, [buffer[done:]], offset + done)
        if n <= 0:
            raise OSError(f"unexpected end of file at byte {offset + done}")
        done += n


def _write_fully(fd: int, buffer: memoryview, offset: int) -> None:
    done = 0
    while done < len(buffer):
        done += os.pwritev(fd, [buffer[done:]], offset + done)
