"""MetaImage ``.mha`` / ``.mhd`` through SimpleITK, streamed region by region.

SimpleITK's ``ImageFileReader`` with ``SetExtractIndex``/``SetExtractSize`` reads only the
requested region of a MetaImage file (MetaIO streams, compressed or not), so a region read
does not load the volume. Arrays are in index order ``(z, y, x)`` (the direction cosines are
not applied); spacing is the header's ``ElementSpacing``, in mm (ITK's convention: MetaImage
has no unit field).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.errors import VolumeFormatError
from vesselseg.io.formats.orient import bounding_box
from vesselseg.io.spacing import FileSpacing, from_file

METAIMAGE_SUFFIXES = (".mha", ".mhd")


def _reader(path: Path) -> Any:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # failures become our one-line errors
    reader = sitk.ImageFileReader()
    reader.SetImageIO("MetaImageIO")
    reader.SetFileName(str(path))
    return reader


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence MetaIO's own messages on file descriptor 2 (it prints parse failures there
    besides raising); used only while a file is opened, not during region reads."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class MetaImageArray:
    """A MetaImage file as a lazily read ``(z, y, x)`` array."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with _quiet_stderr():
                reader = _reader(self.path)
                reader.ReadImageInformation()
                size = tuple(int(s) for s in reader.GetSize())
                components = reader.GetNumberOfComponents()
                spacing = tuple(float(s) for s in reader.GetSpacing())
                if components == 1 and len(size) == 3:
                    self.shape = tuple(reversed(size))
                    self.dtype = self._read([0, 0, 0], [1, 1, 1]).dtype  # one voxel
        except RuntimeError as exc:
            reason = str(exc).strip().split("\n")[-1][:200]
            raise VolumeFormatError(f"{path}: not a readable MetaImage file ({reason})") from None
        if components != 1 or len(size) != 3:
            shape = tuple(reversed(size)) + ((components,) if components != 1 else ())
            raise VolumeFormatError(f"{path}: expected a 3D volume (z, y, x), got shape {shape}")
        self.voxel_size = from_file(tuple(reversed(spacing)), None, "mm", str(path))

    def _read(self, start: list[int], size: list[int]) -> np.ndarray:
        """The region ``start``/``size`` given in ``(z, y, x)``, as a ``(z, y, x)`` array."""
        import SimpleITK as sitk

        reader = _reader(self.path)
        reader.SetExtractIndex(list(reversed(start)))
        reader.SetExtractSize(list(reversed(size)))
        return sitk.GetArrayFromImage(reader.Execute())

    def __getitem__(self, key: Any) -> np.ndarray:
        box, post = bounding_box(key, self.shape)
        size = [hi - lo for lo, hi in box]
        if 0 in size:
            return np.zeros(size, self.dtype)[post]
        return self._read([lo for lo, _ in box], size)[post]


def open_metaimage(path: Path) -> tuple[MetaImageArray, FileSpacing]:
    """A MetaImage file as a lazy ``(z, y, x)`` array and its voxel size."""
    array = MetaImageArray(path)
    return array, array.voxel_size
