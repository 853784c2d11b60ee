"""Dataset discovery for both seed layouts.

* Seed 000 (DTU V-Net): a folder of ``data_<X>.<ext>`` + ``mask_<X>.<ext>`` pairs (mask 0 = not
  annotated, 1 = vessel, 2 = background), optionally ``truth_<X>.<ext>`` (dense 0/1 truth, as
  written by ``vesselseg synth``). ``<ext>`` is any readable type (npy, raw, tif, zarr,
  OME-Zarr, nii/nii.gz, mha/mhd, nrrd, a TIFF or JPEG 2000 slice folder).
* Seed 004 (Kaggle SenNet): ``kidney_*/images/*.tif`` + ``kidney_*/labels/*.tif`` with labels
  0/255 per slice; labels are dense, so they are read as 2 (background) / 1 (vessel).

Voxel size comes from each file or its sidecar (``data_X.npy.json``; for a slice folder
``kidney_1/images`` the sidecar is ``kidney_1/images.json``). Image and mask (and truth) must
agree in voxel size: a mask without one (unknown) agrees with
anything; a real disagreement, or a unit mismatch, is a one-line error naming both files.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vesselseg.errors import DatasetError, MissingPathError
from vesselseg.io.checks import LabelCounts, check_finite, check_same_shape, count_labels
from vesselseg.io.formats.jp2 import JP2_SUFFIXES
from vesselseg.io.readers import detect_file_type, open_volume, volume_suffix
from vesselseg.io.spacing import check_same_spacing, voxel_size
from vesselseg.io.volume import MappedVolume, Volume

_PAIR = re.compile(
    r"^(data|mask|truth)_(.+?)"
    r"(\.npy|\.raw|\.tiff?|\.ome\.zarr|\.zarr|\.nii\.gz|\.nii|\.mha|\.mhd|\.nrrd|\.nhdr)?$",
    re.IGNORECASE,
)
_SLICE_SUFFIXES = (".tif", ".tiff", *JP2_SUFFIXES)
_DETACHED_HEADERS = (".mhd", ".nhdr")  # their data file (X.raw, X.raw.gz) is not a volume
_DETACHED_DATA = (".raw.gz", ".raw", ".zraw", ".img")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Sample:
    """One volume of a dataset: its image and, where present, sparse mask and dense truth."""

    id: str
    image: Path
    mask: Path | None = None
    truth: Path | None = None
    layout: str = "pairs"  # "pairs" (seed 000), "kaggle" (seed 004) or "plain"
    spacing: tuple[float, ...] | None = None  # the user's voxel size, overriding the files'
    unit: str | None = None  # of ``spacing`` (None: each file's own unit, else um)

    def _open(self, path: Path) -> Volume:
        return open_volume(path, spacing=self.spacing, unit=self.unit)

    def open_image(self) -> Volume:
        return self._open(self.image)

    def open_mask(self) -> Volume | None:
        if self.mask is None:
            return None
        volume = self._open(self.mask)
        if self.layout == "kaggle":
            return Volume(
                MappedVolume(volume, dense_labels_as_codes, np.uint8),
                self.mask,
                volume.kind,
                volume.voxel_size,
            )
        return volume

    def open_truth(self) -> Volume | None:
        if self.truth is None:
            return None
        return self._open(self.truth)


def dense_labels_as_codes(raw: np.ndarray) -> np.ndarray:
    """Dense binary labels (0/255 or 0/1) as label codes: >0 → 1 vessel, 0 → 2 background."""
    return np.where(raw > 0, 1, 2).astype(np.uint8)


def check_id(sample_id: str, where: Path) -> str:
    """Ids become output file names: refuse anything that could escape the output folder."""
    if not _SAFE_ID.match(sample_id) or ".." in sample_id:
        raise DatasetError(f"{where}: unsafe volume id {sample_id!r}")
    return sample_id


def discover_dataset(
    folder: str | Path,
    require_masks: bool = False,
    spacing: Sequence[float] | None = None,
    unit: str | None = None,
) -> list[Sample]:
    """Find the samples of ``folder`` in either seed layout (or a plain folder of volumes).

    ``require_masks`` demands an annotation for every image (training data). ``spacing``
    ``(z, y, x)`` in ``unit`` (the CLI's ``--spacing``, ``data.spacing``) is every volume's
    voxel size, overriding its file's; a bad one is a one-line error before anything is read.
    """
    if spacing is not None:
        voxel_size(spacing, unit or "um", where="--spacing")
    folder = Path(folder)
    if not folder.exists():
        raise MissingPathError(f"{folder}: no such dataset folder")
    if folder.is_file() or _is_single_volume_dir(folder):
        samples = [Sample(check_id(_stem(folder), folder), folder, layout="plain")]
    else:
        samples = _kaggle_samples(folder) or _pair_samples(folder) or _plain_samples(folder)
    if not samples:
        raise DatasetError(
            f"{folder}: no volumes found (expected data_<X>.npy + mask_<X>.npy "
            "pairs, kidney_*/images + labels, or volume files)"
        )
    if require_masks:
        missing = [s for s in samples if s.mask is None]
        if missing:
            raise DatasetError(f"{missing[0].image}: no annotation (mask_<X>) for this image")
    if spacing is not None:
        override = tuple(float(v) for v in spacing)
        samples = [dataclasses.replace(s, spacing=override, unit=unit) for s in samples]
    return samples


def _is_single_volume_dir(folder: Path) -> bool:
    """A zarr store or a TIFF / JPEG 2000 slice folder is one volume, not a dataset."""
    if folder.name.lower().endswith(".zarr") or (folder / "zarr.json").is_file():
        return True
    entries = list(folder.iterdir())
    return (
        bool(entries)
        and all(p.is_file() and p.suffix.lower() in _SLICE_SUFFIXES for p in entries)
        and not any(_PAIR.match(p.name) for p in entries)
    )


def _stem(path: Path) -> str:
    name = path.name
    suffix = volume_suffix(name)
    return name[: -len(suffix)] if suffix else name


def _is_detached_data(entry: Path) -> bool:
    """``X.raw`` (``X.zraw``, ``X.raw.gz``) beside an ``X.mhd`` / ``X.nhdr`` header is that
    header's data, not a volume of its own."""
    name = entry.name.lower()
    suffix = next((s for s in _DETACHED_DATA if name.endswith(s)), None)
    if suffix is None or not entry.is_file():
        return False
    base = entry.name[: -len(suffix)]
    return any(entry.with_name(base + header).is_file() for header in _DETACHED_HEADERS)


def _pair_samples(folder: Path) -> list[Sample]:
    found: dict[str, dict[str, Path]] = {}
    for entry in sorted(folder.iterdir()):
        match = _PAIR.match(entry.name)
        if (
            not match
            or entry.name.startswith(".")
            or (match.group(3) is None and not entry.is_dir())
            or _is_detached_data(entry)
        ):
            continue  # caches, sidecars and partial files are not volumes
        role, sample_id = match.group(1).lower(), match.group(2)
        if role in found.get(sample_id, {}):
            raise DatasetError(f"{entry}: two {role} volumes for id {sample_id!r}")
        found.setdefault(sample_id, {})[role] = entry
    samples = []
    for sample_id, roles in sorted(found.items()):
        if "data" not in roles:
            role_path = next(iter(roles.values()))
            raise DatasetError(f"{role_path}: no data_{sample_id} image for this file")
        samples.append(
            Sample(
                check_id(sample_id, roles["data"]),
                roles["data"],
                roles.get("mask"),
                roles.get("truth"),
                layout="pairs",
            )
        )
    return samples


def _kaggle_samples(folder: Path) -> list[Sample]:
    samples = []
    for entry in sorted(folder.iterdir()):
        images = entry / "images"
        if entry.is_dir() and images.is_dir():
            labels = entry / "labels"
            samples.append(
                Sample(
                    check_id(entry.name, entry),
                    images,
                    labels if labels.is_dir() else None,
                    layout="kaggle",
                )
            )
    return samples


def _plain_samples(folder: Path) -> list[Sample]:
    samples = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith((".part", ".json")):
            continue
        if _is_detached_data(entry):
            continue
        try:
            detect_file_type(entry)
        except Exception:
            continue
        samples.append(Sample(check_id(_stem(entry), entry), entry, layout="plain"))
    return samples


def validate_sample(sample: Sample) -> LabelCounts | None:
    """Open and check a sample: 3D image, finite values, mask shape, voxel size, label codes.

    Returns the mask's label counts (None without a mask).
    """
    image = sample.open_image()
    check_finite(image)
    mask = sample.open_mask()
    if mask is None:
        return None
    check_same_shape(image, mask)
    check_same_spacing(image.voxel_size, mask.voxel_size, str(image.path), str(mask.path))
    truth = sample.open_truth()
    if truth is not None:
        check_same_shape(image, truth, what="truth")
        check_same_spacing(image.voxel_size, truth.voxel_size, str(image.path), str(truth.path))
    return count_labels(mask, name=str(sample.mask))


def validate_training_set(samples: list[Sample]) -> dict[str, LabelCounts]:
    """Validate every sample and require annotated vessel somewhere in the set."""
    counts = {}
    for sample in samples:
        result = validate_sample(sample)
        if result is None:
            raise DatasetError(f"{sample.image}: no annotation (mask_<X>) for this image")
        counts[sample.id] = result
    if samples and not any(c.vessel for c in counts.values()):
        raise DatasetError(f"{samples[0].image.parent}: no annotated vessel (label 1) in any mask")
    return counts
