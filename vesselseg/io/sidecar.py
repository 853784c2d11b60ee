"""The ``<file>.json`` sidecar beside a volume: voxel size for formats that carry none.

``X.npy.json``, ``X.raw.json`` (which also holds ``shape``, ``dtype`` and ``order``),
``X.zarr.json`` and, for a slice folder ``images/``, ``images.json`` beside the folder::

    {"spacing": [z, y, x], "unit": "um"}

``unit`` defaults to ``um``. The file's own metadata, where the format has some, wins over the
sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vesselseg.errors import VolumeFormatError
from vesselseg.io.atomic import write_json
from vesselseg.io.spacing import VoxelSize, voxel_size


def sidecar_path(path: str | Path) -> Path:
    """``X.raw`` → ``X.raw.json``; a folder ``images`` → ``images.json`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The sidecar's JSON object, or None when there is no sidecar."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        raise VolumeFormatError(f"{sidecar}: not a readable JSON sidecar") from None
    if not isinstance(meta, dict):
        raise VolumeFormatError(f"{sidecar}: expected a JSON object")
    return meta


def sidecar_voxel_size(path: str | Path, meta: dict[str, Any] | None = None) -> VoxelSize | None:
    """The voxel size in the sidecar of ``path`` (``meta``: its already-read JSON), or None."""
    meta = read_sidecar(path) if meta is None else meta
    if not meta or "spacing" not in meta:
        return None
    return voxel_size(meta["spacing"], meta.get("unit", "um"), where=str(sidecar_path(path)))


def write_sidecar(path: str | Path, fields: dict[str, Any]) -> Path:
    """Write ``fields`` as the sidecar of ``path`` (atomically)."""
    return write_json(sidecar_path(path), fields, indent=None)
