"""JPEG 2000 slice folders (the Human Organ Atlas distribution format), read lazily.

A folder of 2D ``*.jp2`` slices sorted by name is one ``(z, y, x)`` volume, read through
``tifffile.FileSequence(...).aszarr()`` with imagecodecs' JPEG 2000 decoder: one zarr chunk per
slice, so a region decodes only its slices. Only the first slice is decoded when the folder is
opened (decoding every slice would read the whole volume); a slice of another shape or dtype is
an error when it is read. HOA publishes the voxel size beside the data, so the spacing comes
from the folder's sidecar ``<folder>.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.errors import VolumeFormatError

JP2_SUFFIXES = (".jp2", ".j2k", ".jpx")


def jp2_files(folder: Path) -> list[Path]:
    """The JPEG 2000 slices of ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in JP2_SUFFIXES and p.is_file())


def decode_jp2(path: str | Path) -> np.ndarray:
    """Decode one JPEG 2000 file; a corrupt file is a one-line :class:`VolumeFormatError`."""
    import imagecodecs

    try:
        return np.asarray(imagecodecs.jpeg2k_decode(Path(path).read_bytes()))
    except Exception as exc:  # imagecodecs.Jpeg2kError, OSError
        reason = str(exc).split("\n")[0]
        raise VolumeFormatError(f"{path}: not a readable JPEG 2000 slice ({reason})") from None


class _CheckedDecoder:
    """Decode a slice and check it has the first slice's shape and dtype."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, first: Path) -> None:
        self.shape, self.dtype, self.first = shape, dtype, first

    def __call__(self, path: str, **kwargs: Any) -> np.ndarray:
        data = decode_jp2(path)
        if data.shape != self.shape or data.dtype != self.dtype:
            raise VolumeFormatError(
                f"{path}: slice shape/dtype {data.shape}/{data.dtype} differs from "
                f"{self.first.name} {self.shape}/{self.dtype}"
            )
        return data


class Jp2SliceFolder:
    """A folder of 2D JPEG 2000 slices as one lazily read ``(z, y, x)`` array."""

    def __init__(self, folder: Path) -> None:
        import tifffile
        import zarr

        self.folder = Path(folder)
        self.files = jp2_files(self.folder)
        if not self.files:
            raise VolumeFormatError(f"{folder}: no .jp2 slices in folder")
        first = decode_jp2(self.files[0])
        if first.ndim != 2:
            raise VolumeFormatError(f"{self.files[0]}: slice is not 2D, shape {first.shape}")
        decoder = _CheckedDecoder(first.shape, first.dtype, self.files[0])
        sequence = tifffile.FileSequence(
            decoder, [str(f) for f in self.files], sort=False, pattern=None
        )
        try:
            self._array = zarr.open(sequence.aszarr(), mode="r")
        except VolumeFormatError:
            raise
        except Exception as exc:
            raise VolumeFormatError(f"{folder}: cannot read the slices ({exc})") from None
        self.shape = (len(self.files), *first.shape)
        self.dtype = first.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._array[key])
