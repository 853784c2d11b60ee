"""Human-readable summaries of volumes and dataset folders (``vesselseg info``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vesselseg.io.checks import count_labels, value_range
from vesselseg.io.dataset import discover_dataset
from vesselseg.io.readers import Volume, open_volume
from vesselseg.io.sidecar import sidecar_path
from vesselseg.io.volume import with_spacing


def describe_spacing(volume: Volume) -> str:
    """``5 x 0.994 x 0.994 um (z, y, x)``, or ``unknown`` with where to give it."""
    if volume.spacing_known:
        return volume.voxel_size.describe()
    sidecar = sidecar_path(volume.path).name
    return f"unknown (not in the file; give it in {sidecar} or with --spacing Z,Y,X)"


def describe_volume(volume: Volume) -> list[str]:
    """Shape, dtype, voxel size, chunking, value range and (for 0/1/2 integer volumes) label
    counts."""
    lo, hi = value_range(volume)
    lines = [
        f"path:   {volume.path}",
        f"type:   {volume.kind}",
        f"shape:  {volume.shape} (z, y, x)",
        f"dtype:  {volume.dtype}",
        f"spacing: {describe_spacing(volume)}",
        f"chunks: {volume.chunks or 'none (memory-mapped or per-slice)'}",
        f"size:   {volume.nbytes / 2**20:,.1f} MiB",
        f"range:  [{lo:g}, {hi:g}]",
    ]
    if np.issubdtype(volume.dtype, np.integer) and lo >= 0 and hi <= 2:
        counts = count_labels(volume)
        lines.append(
            f"labels: unannotated {counts.unannotated:,}  vessel {counts.vessel:,}  "
            f"background {counts.background:,}  (annotated {100 * counts.annotated_fraction:.2f}%)"
        )
    return lines


def describe_path(
    path: Path,
    file_type: str | None = None,
    shape: list[int] | None = None,
    dtype: str | None = None,
    spacing: Sequence[float] | None = None,
    unit: str | None = None,
) -> Iterator[str]:
    """Lines describing a single volume, or a table of a dataset folder's samples.

    ``spacing`` (``--spacing Z,Y,X``, in ``unit``: by default the file's, else um) overrides the
    voxel size of the volume, or of every image of the dataset.
    """
    samples = None if (file_type or shape or not path.is_dir()) else discover_dataset(path)
    if samples is None or (len(samples) == 1 and samples[0].image == path):
        size = tuple(shape) if shape else None
        volume = open_volume(path, file_type, size, dtype, spacing=spacing, unit=unit)
        yield from describe_volume(volume)
        return
    yield f"dataset: {path} ({len(samples)} volumes, layout {samples[0].layout})"
    yield (
        f"{'id':<12} {'shape':<18} {'dtype':<8} {'spacing (z, y, x)':<24} {'mask':<5} "
        f"{'truth':<5} {'annotated':>9} {'vessel vox':>11}"
    )
    for sample in samples:
        image = sample.open_image()
        if spacing is not None:
            image = with_spacing(image, spacing, unit)
        mask = sample.open_mask()
        annotated, vessel = "-", "-"
        if mask is not None:
            counts = count_labels(mask, name=str(sample.mask))
            annotated = f"{100 * counts.annotated_fraction:.2f}%"
            vessel = f"{counts.vessel:,}"
        size = image.voxel_size.describe().replace(" (z, y, x)", "")
        yield (
            f"{sample.id:<12} {str(image.shape):<18} {str(image.dtype):<8} {size:<24} "
            f"{'yes' if mask is not None else 'no':<5} {'yes' if sample.truth else 'no':<5} "
            f"{annotated:>9} {vessel:>11}"
        )
