"""TIFF through tifffile: a (multi-page) file or a folder of 2D slices, read lazily.

A file is memory-mapped when it is uncompressed and contiguous, otherwise read as a zarr
store (``tifffile.imread(aszarr=True)``) chunk by chunk. A slice folder (the Kaggle SenNet
layout ``kidney_*/images/0000.tif``) is ``tifffile.TiffSequence(...).aszarr()``: one chunk per
slice, so a region reads only its slices.

Voxel size, in order: OME-XML ``PhysicalSizeZ/Y/X`` (+ units, µm by default), ImageJ metadata
(``spacing`` for z, the X/YResolution tags for y/x, ``unit``), and the JSON image description
tifffile writes for other dtypes (``{"spacing": [z, y, x], "unit": "um"}``). Plain resolution
tags alone are not used: many programs write 72 dpi there by default. A slice folder takes the
first slice's tags.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.errors import VolumeFormatError
from vesselseg.io.spacing import FileSpacing, from_file

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGEJ_DTYPES = ("uint8", "uint16", "int16", "float32")  # what ImageJ hyperstacks can hold
IMAGEJ_MAX_BYTES = 2**32 - 2**24  # ImageJ files are classic (not Big) TIFF


def open_tiff_file(path: Path) -> tuple[Any, FileSpacing]:
    """A lazy array of the first series of the TIFF file ``path`` and its voxel size."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shape = tuple(tif.series[0].shape)
            voxel_size = tiff_voxel_size(tif, str(path))
    except VolumeFormatError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise VolumeFormatError(f"{path}: not a readable TIFF file ({exc})") from None
    try:
        array: Any = tifffile.memmap(path, mode="r")
    except Exception:
        array = _tiff_as_zarr(path)
    if tuple(array.shape) != shape:
        array = _tiff_as_zarr(path)
    return array, voxel_size


def _tiff_as_zarr(path: Path) -> Any:
    import tifffile
    import zarr

    try:
        store = tifffile.imread(path, aszarr=True)
        return zarr.open(store, mode="r")
    except Exception as exc:
        raise VolumeFormatError(f"{path}: cannot read TIFF lazily ({exc})") from None


def tiff_voxel_size(tif: Any, where: str) -> FileSpacing:
    """The voxel size an open ``tifffile.TiffFile`` records, or None (see module doc)."""
    try:
        return _tiff_voxel_size(tif, where)
    except (ValueError, TypeError, KeyError, ZeroDivisionError):
        return None  # unparsable metadata: no voxel size, not an unreadable image


def _tiff_voxel_size(tif: Any, where: str) -> FileSpacing:
    if tif.is_ome and tif.ome_metadata:
        found = _ome_voxel_size(tif.ome_metadata, where)
        if found is not None:
            return found
    page = tif.pages[0]
    if tif.is_imagej and tif.imagej_metadata:
        meta = tif.imagej_metadata
        # ImageJ leaves out ``spacing`` for a stack whose voxel depth is 1 unit; a single
        # image without it has no z spacing at all
        stack = int(meta.get("images", 1)) > 1
        if "spacing" in meta or (stack and meta.get("unit") is not None):
            y, x = _pixel_size(page)
            z = float(meta.get("spacing", 1.0))
            return from_file([z, y, x], meta.get("unit"), "um", where)
    if tif.is_shaped and tif.shaped_metadata:
        meta = tif.shaped_metadata[0]
        if "spacing" in meta:
            return from_file(list(meta["spacing"]), meta.get("unit"), "um", where)
    return None


def _pixel_size(page: Any) -> tuple[float, float]:
    """``(y, x)`` pixel size from the resolution tags (pixels per unit)."""
    x_res, y_res = page.resolution
    return (1.0 / y_res if y_res else 1.0), (1.0 / x_res if x_res else 1.0)


def _ome_voxel_size(xml: str, where: str) -> FileSpacing:
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    sizes, units = [], set()
    for axis in "ZYX":
        value = pixels.get(f"PhysicalSize{axis}")
        if value is None:
            return None
        sizes.append(float(value))
        units.add(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
    if len(units) != 1:
        return None  # axes in different units: not a voxel size we can express
    return from_file(sizes, units.pop(), "um", where)


def _read_slice(path: str, **kwargs: Any) -> np.ndarray:
    """Read one slice (``tifffile.imread`` looked up at call time), errors as one line."""
    import tifffile

    try:
        return tifffile.imread(path, **kwargs)
    except Exception as exc:
        raise VolumeFormatError(f"{path}: not a readable TIFF slice ({exc})") from None


class TiffSliceFolder:
    """A folder of 2D TIFF slices (sorted by name) read lazily as one ``(z, y, x)`` array.

    This is the Kaggle SenNet layout ``kidney_*/images/0000.tif``. Every slice must have the
    same shape and dtype; the headers are checked when the folder is opened. Regions are read
    through ``tifffile.TiffSequence(...).aszarr()`` (one zarr chunk per slice).
    """

    def __init__(self, folder: Path) -> None:
        import tifffile
        import zarr

        self.folder = Path(folder)
        self.files = sorted(
            p for p in self.folder.iterdir() if p.suffix.lower() in TIFF_SUFFIXES and p.is_file()
        )
        if not self.files:
            raise VolumeFormatError(f"{folder}: no .tif slices in folder")
        first: tuple[tuple[int, ...], np.dtype] | None = None
        self.voxel_size: FileSpacing = None
        for file in self.files:
            try:
                with tifffile.TiffFile(file) as tif:
                    page = tif.pages[0]
                    info = (tuple(page.shape), np.dtype(page.dtype))
                    if first is None:
                        self.voxel_size = tiff_voxel_size(tif, str(file))
            except VolumeFormatError:
                raise
            except Exception as exc:
                raise VolumeFormatError(f"{file}: not a readable TIFF slice ({exc})") from None
            if len(info[0]) != 2:
                raise VolumeFormatError(f"{file}: slice is not 2D, shape {info[0]}")
            if first is None:
                first = info
            elif info != first:
                raise VolumeFormatError(
                    f"{file}: slice shape/dtype {info[0]}/{info[1]} differs from "
                    f"{self.files[0].name} {first[0]}/{first[1]}"
                )
        assert first is not None
        sequence = tifffile.TiffSequence(
            [str(f) for f in self.files], imread=_read_slice, sort=False, pattern=None
        )
        self._array = zarr.open(sequence.aszarr(), mode="r")
        self.shape = (len(self.files), *first[0])
        self.dtype = first[1]
        if tuple(self._array.shape) != self.shape:
            raise VolumeFormatError(f"{folder}: slices do not stack to {self.shape}")

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._array[key])
