"""Open volumes lazily: npy (memmap), raw (+ JSON sidecar), TIFF file or slice folder, zarr.

Every reader returns a :class:`Volume`: an object with ``shape``, ``dtype``, ``path`` and
``__getitem__`` that reads only the requested region and returns a numpy array. Nothing here
loads a whole volume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vesselseg.errors import MissingPathError, VolumeFormatError

FILE_TYPES = ("npy", "raw", "tiff", "zarr")
TIFF_SUFFIXES = (".tif", ".tiff")


class ArrayLike(Protocol):
    shape: tuple[int, ...]
    dtype: Any

    def __getitem__(self, key: Any) -> Any: ...


class Volume:
    """A lazily sliced 3D array ``(z, y, x)`` backed by a file, folder or store.

    ``volume[z0:z1, y0:y1, x0:x1]`` reads only that region and returns ``np.ndarray``.
    """

    def __init__(self, array: ArrayLike, path: Path, kind: str) -> None:
        self._array = array
        self.path = Path(path)
        self.kind = kind
        self.shape: tuple[int, ...] = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)

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

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self._array[key])
        except (OSError, ValueError, KeyError) as exc:
            raise VolumeFormatError(f"{self.path}: cannot read region ({exc})") from None

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]
        return data.astype(dtype) if dtype is not None else data

    def __repr__(self) -> str:
        return f"Volume({self.kind}, shape={self.shape}, dtype={self.dtype}, path={self.path})"


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


def detect_file_type(path: Path) -> str:
    """Guess the file type from the name: ``npy``, ``raw``, ``tiff`` (file or folder), ``zarr``."""
    name = path.name.lower()
    if name.endswith(".npy"):
        return "npy"
    if name.endswith(".raw"):
        return "raw"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    if name.endswith(".zarr") or (path / "zarr.json").is_file() or (path / ".zarray").is_file():
        return "zarr"
    if path.is_dir() and any(p.suffix.lower() in TIFF_SUFFIXES for p in path.iterdir()):
        return "tiff"
    raise VolumeFormatError(
        f"{path}: unknown volume type (expected .npy, .raw, .tif/.tiff, a TIFF slice folder "
        "or .zarr)"
    )


def open_volume(
    path: str | Path,
    file_type: str | None = None,
    shape: tuple[int, int, int] | None = None,
    dtype: str | None = None,
    require_3d: bool = True,
) -> Volume:
    """Open ``path`` lazily as a :class:`Volume`.

    ``file_type`` overrides detection from the name. ``shape`` and ``dtype`` are needed for raw
    files without a ``X.raw.json`` sidecar (``{"shape": [z, y, x], "dtype": "uint16"}``).
    """
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"{path}: no such file or folder")
    kind = file_type or detect_file_type(path)
    if kind not in FILE_TYPES:
        raise VolumeFormatError(f"{path}: unknown file type {kind!r} (one of {FILE_TYPES})")
    if kind == "raw":
        volume = _open_raw(path, shape, dtype)
    else:
        volume = {"npy": _open_npy, "tiff": _open_tiff, "zarr": _open_zarr}[kind](path)
    if require_3d and volume.ndim != 3:
        raise VolumeFormatError(f"{path}: expected a 3D volume (z, y, x), got shape {volume.shape}")
    if volume.ndim and min(volume.shape) == 0:
        raise VolumeFormatError(f"{path}: empty volume, shape {volume.shape}")
    return volume


def _open_npy(path: Path) -> Volume:
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
    return Volume(array, path, "npy")


def raw_sidecar(path: Path) -> Path:
    """The JSON sidecar of a raw file: ``X.raw`` → ``X.raw.json``."""
    return path.with_name(path.name + ".json")


def _open_raw(path: Path, shape: tuple[int, int, int] | None, dtype: str | None) -> Volume:
    if not path.is_file():
        raise VolumeFormatError(f"{path}: expected a raw file, found a folder")
    sidecar = raw_sidecar(path)
    order = "C"
    if sidecar.is_file() and (shape is None or dtype is None):
        try:
            meta = json.loads(sidecar.read_text())
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
    expected = int(np.prod(shape)) * np_dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise VolumeFormatError(
            f"{path}: size {size} bytes does not match shape {shape} x {np_dtype} "
            f"= {expected} bytes"
        )
    array = np.memmap(path, dtype=np_dtype, mode="r", shape=shape, order=order)
    return Volume(array, path, "raw")


def _open_tiff(path: Path) -> Volume:
    if path.is_dir():
        return Volume(TiffSliceFolder(path), path, "tiff")
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shape = tuple(tif.series[0].shape)
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise VolumeFormatError(f"{path}: not a readable TIFF file ({exc})") from None
    try:
        array: Any = tifffile.memmap(path, mode="r")
    except Exception:
        array = _tiff_as_zarr(path)
    if tuple(array.shape) != shape:
        array = _tiff_as_zarr(path)
    return Volume(array, path, "tiff")


def _tiff_as_zarr(path: Path) -> Any:
    import tifffile
    import zarr

    try:
        store = tifffile.imread(path, aszarr=True)
        return zarr.open(store, mode="r")
    except Exception as exc:
        raise VolumeFormatError(f"{path}: cannot read TIFF lazily ({exc})") from None


class TiffSliceFolder:
    """A folder of 2D TIFF slices (sorted by name) read lazily as one ``(z, y, x)`` array.

    This is the Kaggle SenNet layout ``kidney_*/images/0000.tif``. Every slice must have the
    same shape and dtype; the headers are checked when the folder is opened.
    """

    def __init__(self, folder: Path) -> None:
        import tifffile

        self.folder = Path(folder)
        self.files = sorted(
            p for p in self.folder.iterdir() if p.suffix.lower() in TIFF_SUFFIXES and p.is_file()
        )
        if not self.files:
            raise VolumeFormatError(f"{folder}: no .tif slices in folder")
        first: tuple[tuple[int, ...], np.dtype] | None = None
        for file in self.files:
            try:
                with tifffile.TiffFile(file) as tif:
                    page = tif.pages[0]
                    info = (tuple(page.shape), np.dtype(page.dtype))
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
        self.shape = (len(self.files), *first[0])
        self.dtype = first[1]

    def __getitem__(self, key: Any) -> np.ndarray:
        import tifffile

        if not isinstance(key, tuple):
            key = (key,)
        if key and key[0] is Ellipsis:
            key = (slice(None),) + key[1:]
        zkey, rest = key[0], key[1:]
        if isinstance(zkey, (int, np.integer)):
            return tifffile.imread(self.files[int(zkey)])[rest]
        indices = range(len(self.files))[zkey]
        out = [tifffile.imread(self.files[i])[rest] for i in indices]
        if not out:
            return np.zeros((0, *self.shape[1:]), self.dtype)[(slice(None),) + rest]
        return np.stack(out)


def _open_zarr(path: Path) -> Volume:
    import zarr

    try:
        array = zarr.open_array(str(path), mode="r")
    except Exception as exc:
        raise VolumeFormatError(f"{path}: not a readable zarr array ({exc})") from None
    return Volume(array, path, "zarr")
