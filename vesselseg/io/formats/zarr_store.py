"""Zarr arrays and OME-Zarr (NGFF) images through zarr 3, read chunk by chunk.

* A plain zarr array (v2 or v3). Its voxel size is in the array's attributes
  (``{"spacing": [z, y, x], "unit": "um"}``, as :class:`~vesselseg.io.writers.VolumeWriter`
  writes them) or in a sidecar ``<store>.json``.
* An OME-Zarr image: a group with NGFF ``multiscales`` metadata (0.4: in the group's
  attributes; 0.5: under ``attributes["ome"]``). Level 0 (``datasets[0]``) is read; the voxel
  size is its ``scale`` transform (times a multiscale-wide one, if any), the unit the spatial
  axes' ``unit``. Leading non-spatial axes (``t``, ``c``) must have size 1.

The NGFF metadata is read per the specification with plain JSON (any 0.4 or 0.5 writer's files
read); it is written through ome-zarr-models (:mod:`~vesselseg.io.formats.pyramid`), whose
pydantic models build and validate it (ome-zarr-py pulls in dask and fsspec/s3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.errors import VolumeFormatError
from vesselseg.io.spacing import FileSpacing, VoxelSize, from_file


class LeadingAxesDropped:
    """``source`` without its leading size-1 axes (NGFF ``t``/``c`` of a single-channel image)."""

    def __init__(self, source: Any, lead: int) -> None:
        self._source, self._lead = source, lead
        self.shape = tuple(int(s) for s in source.shape[lead:])
        self.dtype = np.dtype(source.dtype)
        self.chunks = tuple(source.chunks[lead:])

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self._source[(0,) * self._lead + key])


def multiscale_of(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The first NGFF ``multiscales`` entry of group attributes (0.4 or 0.5), or None."""
    ome = attrs.get("ome")
    scales = ome.get("multiscales") if isinstance(ome, dict) else attrs.get("multiscales")
    if isinstance(scales, list) and scales and isinstance(scales[0], dict):
        return scales[0]
    return None


def _scale(transforms: Any) -> list[float] | None:
    for transform in transforms or []:
        if isinstance(transform, dict) and transform.get("type") == "scale":
            return [float(v) for v in transform["scale"]]
    return None


def open_zarr(path: Path) -> tuple[Any, FileSpacing, str]:
    """A zarr array or OME-Zarr image as a lazy array, its voxel size and kind."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise VolumeFormatError(f"{path}: not a readable zarr array ({exc})") from None
    attrs = dict(node.attrs)
    if isinstance(node, zarr.Array):
        meta = (attrs.get("spacing"), attrs.get("unit"))
        voxel_size = from_file(meta[0], meta[1], "um", str(path)) if meta[0] else None
        return node, voxel_size, "zarr"
    multiscale = multiscale_of(attrs)
    if multiscale is None:
        raise VolumeFormatError(f"{path}: not a readable zarr array (a group without NGFF data)")
    try:
        return _open_ngff(path, node, multiscale)
    except VolumeFormatError:
        raise
    except Exception as exc:  # malformed metadata: KeyError, TypeError, ValueError
        raise VolumeFormatError(f"{path}: malformed OME-Zarr metadata ({exc!r})") from None


def _open_ngff(path: Path, group: Any, multiscale: dict[str, Any]) -> tuple[Any, Any, str]:
    level = multiscale["datasets"][0]
    array = group[level["path"]]
    axes = [a if isinstance(a, dict) else {"name": a} for a in multiscale.get("axes", [])]
    if not axes:
        axes = [{"name": n, "type": "space"} for n in "zyx"[-array.ndim :]]
    if len(axes) != array.ndim:
        raise VolumeFormatError(f"{path}: {len(axes)} NGFF axes for a {array.ndim}D array")
    spatial = [a.get("type") == "space" or a.get("name") in ("z", "y", "x") for a in axes]
    lead = len(axes) - 3
    singleton = all(array.shape[i] == 1 for i in range(max(lead, 0)))
    if sum(spatial) != 3 or not all(spatial[lead:]) or not singleton:
        raise VolumeFormatError(
            f"{path}: expected a 3D volume (z, y, x), got NGFF axes "
            f"{[a.get('name') for a in axes]} of shape {tuple(array.shape)}"
        )
    scale = _scale(level.get("coordinateTransformations"))
    outer = _scale(multiscale.get("coordinateTransformations"))
    if scale is not None and outer is not None:
        scale = [a * b for a, b in zip(scale, outer)]
    units = {a.get("unit") for a in axes[lead:]}
    unit = units.pop() if len(units) == 1 else None
    voxel_size = None if scale is None else from_file(scale[lead:], unit, "um", str(path))
    return (LeadingAxesDropped(array, lead) if lead else array), voxel_size, "ome-zarr"


def create_zarr(
    path: Path,
    shape: tuple[int, ...],
    dtype: Any,
    chunks: tuple[int, ...],
    fmt: str,
    name: str,
    voxel_size: VoxelSize | None,
) -> Any:
    """A new, empty zarr array (``fmt="zarr"``; the voxel size in its attributes) or OME-Zarr
    image (``"ome-zarr"``: a group with level ``0`` and NGFF 0.5 metadata) at ``path``; returns
    the ``(z, y, x)`` array to write. The same arguments give the same files, byte for byte."""
    import zarr

    if fmt == "zarr":
        array = zarr.open_array(str(path), mode="w", shape=shape, dtype=dtype, chunks=chunks)
        if voxel_size is not None and voxel_size.known:
            array.attrs.update(voxel_size.as_json())
        return array
    from vesselseg.io.formats.pyramid import multiscale_attributes

    group = zarr.open_group(str(path), mode="w")
    array = group.create_array(
        "0", shape=shape, dtype=dtype, chunks=chunks, dimension_names=["z", "y", "x"]
    )
    group.attrs.update(multiscale_attributes(name, [array], voxel_size))
    return array


def ngff_levels(path: Path) -> list[Any]:
    """Every level of an OME-Zarr image (level 0 first, leading size-1 axes dropped); a plain
    zarr array is its only level."""
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return [node]
    multiscale = multiscale_of(dict(node.attrs))
    if multiscale is None:
        raise VolumeFormatError(f"{path}: not a readable zarr array (a group without NGFF data)")
    levels = []
    for level in multiscale["datasets"]:
        array = node[level["path"]]
        lead = array.ndim - 3
        levels.append(LeadingAxesDropped(array, lead) if lead > 0 else array)
    return levels
