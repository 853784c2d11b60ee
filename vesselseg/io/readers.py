"""Open volumes lazily, with their voxel size, whatever the format.

Every reader returns a :class:`Volume`: ``shape``, ``dtype``, ``path``, ``kind``, ``spacing``
``(z, y, x)``, ``unit`` and ``spacing_known``, and ``__getitem__`` that reads only the requested
region and returns a numpy array. Nothing here loads a whole volume (except a compressed NRRD,
which cannot be sliced). One module per format family under :mod:`vesselseg.io.formats`:

==========  ==========================================  ==========================  =========
type        files                                       library                     lazy
==========  ==========================================  ==========================  =========
npy         ``.npy`` (+ ``X.npy.json`` spacing)         numpy memmap                yes
raw         ``.raw`` + ``X.raw.json``                   numpy memmap                yes
tiff        ``.tif``/``.tiff`` file or slice folder     tifffile (memmap / zarr)    yes
jp2         folder of ``.jp2`` slices (+ sidecar)       imagecodecs + tifffile      per slice
zarr        ``.zarr`` array, or OME-Zarr group          zarr 3                      per chunk
nifti       ``.nii``, ``.nii.gz``                       nibabel proxies             yes [1]_
metaimage   ``.mha``, ``.mhd``                          SimpleITK (streamed)        yes
nrrd        ``.nrrd``, ``.nhdr``                        pynrrd (+ memmap)           raw only
==========  ==========================================  ==========================  =========

.. [1] ``.nii.gz`` regions are decompressed from the start of the file up to the region.

Voxel size: from the file where the format carries it, else from the ``<path>.json`` sidecar,
else unknown (``(1, 1, 1)``, ``spacing_known=False``); ``spacing=`` overrides both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vesselseg.errors import MissingPathError, VolumeFormatError
from vesselseg.io.formats.jp2 import JP2_SUFFIXES, Jp2SliceFolder
from vesselseg.io.formats.metaimage import METAIMAGE_SUFFIXES
from vesselseg.io.formats.nifti import NIFTI_SUFFIXES
from vesselseg.io.formats.nrrd import NRRD_SUFFIXES
from vesselseg.io.formats.numpy_raw import open_npy, open_raw
from vesselseg.io.formats.tiff import TIFF_SUFFIXES, TiffSliceFolder, open_tiff_file
from vesselseg.io.sidecar import sidecar_path as raw_sidecar
from vesselseg.io.sidecar import sidecar_voxel_size
from vesselseg.io.spacing import UNKNOWN, BadSpacing, FileSpacing, SpacingError, check_spacing
from vesselseg.io.volume import ArrayLike, MappedVolume, Volume, with_spacing

FILE_TYPES = ("npy", "raw", "tiff", "jp2", "zarr", "nifti", "metaimage", "nrrd")
VOLUME_SUFFIXES = (
    ".npy", ".raw", *TIFF_SUFFIXES, ".zarr", *NIFTI_SUFFIXES, *METAIMAGE_SUFFIXES,
    *NRRD_SUFFIXES,
)  # fmt: skip

__all__ = [
    "FILE_TYPES",
    "ArrayLike",
    "MappedVolume",
    "TiffSliceFolder",
    "Volume",
    "detect_file_type",
    "open_volume",
    "raw_sidecar",
    "volume_suffix",
    "with_spacing",
]


def volume_suffix(name: str) -> str | None:
    """The volume suffix ``name`` ends with (``.nii.gz``, ``.npy``...), or None."""
    lower = name.lower()
    longest_first = sorted(VOLUME_SUFFIXES, key=len, reverse=True)
    return next((s for s in longest_first if lower.endswith(s)), None)


def detect_file_type(path: Path) -> str:
    """Guess the file type from the name (or, for folders, the slices in it)."""
    name = path.name.lower()
    for kind, suffixes in (
        ("npy", (".npy",)),
        ("raw", (".raw",)),
        ("tiff", TIFF_SUFFIXES),
        ("nifti", NIFTI_SUFFIXES),
        ("metaimage", METAIMAGE_SUFFIXES),
        ("nrrd", NRRD_SUFFIXES),
    ):
        if name.endswith(suffixes):
            return kind
    if name.endswith(".zarr") or (path / "zarr.json").is_file() or (path / ".zarray").is_file():
        return "zarr"
    if (path / ".zgroup").is_file():
        return "zarr"
    if path.is_dir():
        suffixes = {p.suffix.lower() for p in path.iterdir()}
        if suffixes & set(TIFF_SUFFIXES):
            return "tiff"
        if suffixes & set(JP2_SUFFIXES):
            return "jp2"
    raise VolumeFormatError(
        f"{path}: unknown volume type (expected .npy, .raw, .tif/.tiff, .nii/.nii.gz, "
        ".mha/.mhd, .nrrd, .zarr, or a folder of .tif or .jp2 slices)"
    )


def open_volume(
    path: str | Path,
    file_type: str | None = None,
    shape: tuple[int, int, int] | None = None,
    dtype: str | None = None,
    require_3d: bool = True,
    spacing: Sequence[float] | None = None,
    unit: str | None = None,
) -> Volume:
    """Open ``path`` lazily as a :class:`Volume`.

    ``file_type`` overrides detection from the name. ``shape`` and ``dtype`` are needed for raw
    files without a ``X.raw.json`` sidecar (``{"shape": [z, y, x], "dtype": "uint16"}``).
    ``spacing`` (``(z, y, x)``, in ``unit``: by default the file's unit, else ``um``) overrides
    the file's voxel size and the sidecar's; a broken spacing in the header is then ignored.
    """
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"{path}: no such file or folder")
    if spacing is not None:
        check_spacing(spacing, "--spacing")  # a bad override fails before any file is read
    kind = file_type or detect_file_type(path)
    kind = "zarr" if kind == "ome-zarr" else kind  # one reader for both
    if kind not in FILE_TYPES:
        raise VolumeFormatError(f"{path}: unknown file type {kind!r} (one of {FILE_TYPES})")
    array, found, kind = _open(path, kind, shape, dtype)
    if isinstance(found, BadSpacing):
        if spacing is None:
            raise SpacingError(found.message)
        found = None
    if spacing is None and found is None:
        found = sidecar_voxel_size(path)
    volume = Volume(array, path, kind, found or UNKNOWN)
    if spacing is not None:
        volume = with_spacing(volume, spacing, unit)
    if require_3d and volume.ndim != 3:
        raise VolumeFormatError(f"{path}: expected a 3D volume (z, y, x), got shape {volume.shape}")
    if volume.ndim and min(volume.shape) == 0:
        raise VolumeFormatError(f"{path}: empty volume, shape {volume.shape}")
    return volume


def _open(
    path: Path, kind: str, shape: Any, dtype: str | None
) -> tuple[ArrayLike, FileSpacing, str]:
    """The lazy array, the voxel size the file gives (or None) and the kind, per format."""
    found: FileSpacing = None
    if kind == "npy":
        array: ArrayLike = open_npy(path)
    elif kind == "raw":
        array = open_raw(path, shape, dtype)
    elif kind == "tiff" and path.is_dir():
        folder = TiffSliceFolder(path)
        array, found = folder, folder.voxel_size
    elif kind == "tiff":
        array, found = open_tiff_file(path)
    elif kind == "jp2":
        if not path.is_dir():
            raise VolumeFormatError(f"{path}: expected a folder of .jp2 slices")
        array = Jp2SliceFolder(path)
    elif kind == "zarr":
        from vesselseg.io.formats.zarr_store import open_zarr

        array, found, kind = open_zarr(path)
    elif kind == "nifti":
        from vesselseg.io.formats.nifti import open_nifti

        array, found = open_nifti(path)
    elif kind == "metaimage":
        from vesselseg.io.formats.metaimage import open_metaimage

        array, found = open_metaimage(path)
    else:
        from vesselseg.io.formats.nrrd import open_nrrd

        array, found = open_nrrd(path)
    return array, found, kind
