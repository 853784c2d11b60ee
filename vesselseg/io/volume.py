"""The :class:`Volume`: a lazily sliced ``(z, y, x)`` array with its voxel size.

Every reader returns one: ``shape``, ``dtype``, ``path``, ``kind`` (the format),
``spacing``/``unit``/``spacing_known`` (:class:`~vesselseg.io.spacing.VoxelSize`) and
``__getitem__`` that reads only the requested region and returns a numpy array.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vesselseg.errors import VesselsegError, VolumeFormatError
from vesselseg.io.file_array import unmapped
from vesselseg.io.formats.orient import bounding_box
from vesselseg.io.spacing import UNKNOWN, VoxelSize, voxel_size

# what a backend may raise for a corrupt region (SimpleITK, imagecodecs: RuntimeError)
READ_ERRORS = (OSError, ValueError, KeyError, RuntimeError, EOFError)


class ArrayLike(Protocol):
    shape: tuple[int, ...]
    dtype: Any

    def __getitem__(self, key: Any) -> Any: ...


class Volume:
    """A lazily sliced 3D array ``(z, y, x)`` backed by a file, folder or store.

    ``volume[z0:z1, y0:y1, x0:x1]`` reads only that region and returns ``np.ndarray``.
    ``voxel_size`` is the spacing ``(z, y, x)`` and its unit (``known=False`` when neither the
    file nor a sidecar gives one: then ``spacing`` is ``(1, 1, 1)``).
    """

    def __init__(
        self, array: ArrayLike, path: Path, kind: str, voxel_size: VoxelSize = UNKNOWN
    ) -> None:
        self._array = array
        self.path = Path(path)
        self.kind = kind
        self.voxel_size = voxel_size
        self.shape: tuple[int, ...] = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(z, y, x)`` in :attr:`unit` (``(1, 1, 1)`` when unknown)."""
        return self.voxel_size.spacing

    @property
    def unit(self) -> str:
        """``"um"`` or ``"mm"``."""
        return self.voxel_size.unit

    @property
    def spacing_known(self) -> bool:
        """False when no file, sidecar or user gave a voxel size."""
        return self.voxel_size.known

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """The storage chunk shape where the backend has one (zarr, tiled TIFF)."""
        chunks = getattr(self._array, "chunks", None)
        return tuple(int(c) for c in chunks) if chunks is not None else None

    def unmapped(self) -> Volume:
        """The same volume, read with positional I/O where it is a C-ordered memory-mapped
        file (:mod:`~vesselseg.io.file_array`: the pages read never count in this process's
        resident memory); otherwise itself."""
        array = unmapped(self._array)
        if array is self._array:
            return self
        return Volume(array, self.path, self.kind, self.voxel_size)

    def with_voxel_size(self, voxel_size: VoxelSize) -> Volume:
        """The same data (not copied) with another voxel size."""
        return Volume(self._array, self.path, self.kind, voxel_size)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            if _has_negative_step(key):  # zarr and others refuse them: read forward, flip here
                box, post = bounding_box(key, self.shape)
                return np.asarray(self._array[tuple(slice(a, b) for a, b in box)])[post]
            return np.asarray(self._array[key])
        except VesselsegError:
            raise
        except READ_ERRORS as exc:
            reason = str(exc).split("\n")[0]
            raise VolumeFormatError(f"{self.path}: cannot read region ({reason})") from None

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]
        return data.astype(dtype) if dtype is not None else data

    def __repr__(self) -> str:
        return (
            f"Volume({self.kind}, shape={self.shape}, dtype={self.dtype}, "
            f"spacing={self.voxel_size.describe()}, path={self.path})"
        )


def _has_negative_step(key: Any) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, slice) and k.step is not None and k.step < 0 for k in keys)


def with_spacing(volume: Volume, spacing: Sequence[float], unit: str | None = None) -> Volume:
    """``volume`` with a user's voxel size (the CLI's ``--spacing Z,Y,X``), checked.

    ``unit`` defaults to the volume's own unit (``um`` when the volume's spacing is unknown).
    Raises :class:`~vesselseg.io.spacing.SpacingError` for values ≤ 0, NaN, inf, a wrong count
    or an unknown unit.
    """
    return volume.with_voxel_size(voxel_size(spacing, unit or volume.unit, where="--spacing"))


class MappedVolume:
    """A lazily sliced view of ``volume`` that applies ``fn`` to every region it reads.

    ``fn`` maps an array to one of the same shape and ``dtype`` (label recoding, rescaling).
    """

    def __init__(self, volume: ArrayLike, fn: Any, dtype: Any) -> None:
        self._volume = volume
        self._fn = fn
        self.shape = tuple(volume.shape)
        self.dtype = np.dtype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._fn(np.asarray(self._volume[key]))
