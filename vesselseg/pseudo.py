"""Pseudo labels for unlabelled volumes from confident predictions (``vesselseg pseudo``).

A trained model predicts each unlabelled volume (streamed, as ``vesselseg predict``); its
probabilities become labels in the usual code: 1 (vessel) where ``p >= hi``, 2 (background)
where ``p <= lo``, 0 (not annotated) in between. Vessel components smaller than
``min_component_voxels`` are dropped to 0 (two streamed passes, so memory stays bounded).

The output folder holds ``mask_<X>.npy`` per volume and ``pseudo.json``: the provenance (model,
its sha256, thresholds, date) and, per volume, the image it labels and its label counts.
``vesselseg train --pseudo DIR`` reads that folder back with :func:`discover_pseudo`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.bundle import Resolver, is_model_uri
from vesselseg.config import InferConfig, PseudoConfig
from vesselseg.errors import DatasetError, MissingPathError
from vesselseg.io import VolumeWriter
from vesselseg.io.atomic import write_text
from vesselseg.io.checks import LabelCounts, slab_depth
from vesselseg.io.dataset import Sample, check_id
from vesselseg.provenance import sha256_file

log = logging.getLogger(__name__)

PROVENANCE = "pseudo.json"
FORMAT = "vesselseg-pseudo/1"
SLAB_BYTES = 64 << 20


def threshold_labels(prob: np.ndarray, hi: float, lo: float) -> np.ndarray:
    """0/1/2 labels of probabilities: 1 where ``p >= hi``, 2 where ``p <= lo``, else 0."""
    labels = np.zeros(prob.shape, dtype=np.uint8)
    labels[prob >= hi] = 1
    labels[prob <= lo] = 2
    return labels


def _slabs(shape: tuple[int, ...], bytes_per_voxel: int = 16) -> list[tuple[int, int]]:
    depth = slab_depth(shape, bytes_per_voxel, SLAB_BYTES)
    return [(z, min(z + depth, shape[0])) for z in range(0, shape[0], depth)]


def small_component_filter(vessel: Any, min_voxels: int) -> Any:
    """A function ``(z0, z1, slab_mask) -> keep_mask`` dropping components < ``min_voxels``.

    First pass: label each z-slab of the boolean volume ``vessel`` with cc3d (26-connected),
    link labels that touch across slab boundaries and add up each group's size. The returned
    function relabels a slab the same way (cc3d is deterministic) and keeps large groups.
    """
    import cc3d
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from vesselseg.metrics.components import boundary_links

    ranges = _slabs(vessel.shape)
    offsets, sizes, links = [], [], []
    total, previous_last = 0, None
    for z0, z1 in ranges:
        labels, n = cc3d.connected_components(
            np.asarray(vessel[z0:z1]), connectivity=26, return_N=True
        )
        labels = labels.astype(np.int64)
        offsets.append(total)
        sizes.append(np.bincount(labels.ravel(), minlength=n + 1)[1:])
        labels[labels > 0] += total
        if previous_last is not None:
            pairs = boundary_links(previous_last, labels[0])
            if len(pairs):
                links.append(pairs)
        previous_last = labels[-1]
        total += n
    size = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    pairs = np.concatenate(links) if links else np.zeros((0, 2), np.int64)
    graph = coo_matrix(
        (np.ones(len(pairs)), (pairs[:, 0] - 1, pairs[:, 1] - 1)), shape=(total, total)
    )
    _, group = connected_components(graph, directed=False)
    group_size = np.bincount(group, weights=size, minlength=group.max() + 1 if total else 0)
    keep = (
        np.concatenate([[False], group_size[group] >= min_voxels]) if total else np.array([False])
    )
    starts = {z0: offset for (z0, _), offset in zip(ranges, offsets)}

    def apply(z0: int, z1: int, mask: np.ndarray) -> np.ndarray:
        labels = cc3d.connected_components(mask, connectivity=26).astype(np.int64)
        labels[labels > 0] += starts[z0]
        return keep[labels]

    apply.ranges = ranges  # type: ignore[attr-defined]
    return apply


class _VesselView:
    """``prob >= hi`` of a probability volume, lazily."""

    def __init__(self, prob: Any, hi: float) -> None:
        self._prob, self._hi = prob, hi
        self.shape = prob.shape

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._prob[key]) >= self._hi


def write_pseudo_labels(prob: Any, out: Path, cfg: PseudoConfig) -> LabelCounts:
    """Write the pseudo labels of a probability volume to ``out`` (atomic); count them."""
    counts = np.zeros(3, dtype=np.int64)
    keep = None
    if cfg.min_component_voxels > 1:
        keep = small_component_filter(_VesselView(prob, cfg.hi), cfg.min_component_voxels)
    with VolumeWriter(out, prob.shape, np.uint8) as writer:
        for z0, z1 in _slabs(prob.shape):
            p = np.asarray(prob[z0:z1], dtype=np.float32)
            labels = threshold_labels(p, cfg.hi, cfg.lo)
            if keep is not None:
                labels[(labels == 1) & ~keep(z0, z1, labels == 1)] = 0
            writer[z0:z1] = labels
            counts += np.bincount(labels.ravel(), minlength=3)[:3]
    return LabelCounts(int(counts[0]), int(counts[1]), int(counts[2]))


@dataclass
class PseudoSummary:
    out_dir: Path
    volumes: dict[str, LabelCounts]


def pseudo_label_dataset(
    in_dir: str | Path,
    model: str | Path,
    out_dir: str | Path,
    cfg: PseudoConfig,
    infer_cfg: InferConfig,
    resume: bool = False,
    resolve: Resolver | None = None,
) -> PseudoSummary:
    """Predict every volume of ``in_dir`` and write its pseudo labels + ``pseudo.json``.

    ``resolve`` turns registry URIs among an ensemble's members into files."""
    from vesselseg.inference.outputs import open_probabilities
    from vesselseg.inference.run import ensure_predictions
    from vesselseg.io.dataset import discover_dataset

    in_dir, model, out_dir = Path(in_dir), Path(model), Path(out_dir)
    samples = discover_dataset(in_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prob_dir = out_dir / "probabilities"
    probs = ensure_predictions(samples, model, prob_dir, infer_cfg, resume, resolve)
    volumes: dict[str, Any] = {}
    counts: dict[str, LabelCounts] = {}
    for sample in samples:
        mask = out_dir / f"mask_{sample.id}.npy"
        counts[sample.id] = write_pseudo_labels(open_probabilities(probs[sample.id]), mask, cfg)
        c = counts[sample.id]
        volumes[sample.id] = {
            "image": str(sample.image.resolve()),
            "mask": mask.name,
            "vessel": c.vessel,
            "background": c.background,
            "unannotated": c.unannotated,
        }
        log.info(
            "%s: %d vessel, %d background pseudo labels (%.1f%% labelled)",
            sample.id,
            c.vessel,
            c.background,
            100 * c.annotated_fraction,
        )
    provenance = {
        "format": FORMAT,
        "model": str(model),
        "model_sha256": sha256_file(model),
        **ensemble_provenance(model),
        "hi": cfg.hi,
        "lo": cfg.lo,
        "min_component_voxels": cfg.min_component_voxels,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": str(in_dir),
        "volumes": volumes,
    }
    write_text(out_dir / PROVENANCE, json.dumps(provenance, indent=2, sort_keys=True))
    return PseudoSummary(out_dir, counts)


def ensemble_provenance(model: Path) -> dict[str, Any]:
    """``{"members": [...]}`` (path, weight, sha256 of each) when ``model`` is an ensemble."""
    from vesselseg.inference.ensemble import is_ensemble_file, read_members

    if not is_ensemble_file(model):
        return {}
    return {
        "members": [
            {
                "model": member,
                "weight": weight,
                "sha256": None if is_model_uri(member) else sha256_file(Path(member)),
            }
            for member, weight in read_members(model)
        ]
    }


def discover_pseudo(folder: str | Path) -> list[Sample]:
    """The samples of a pseudo-label folder: each pseudo mask with the image it labels."""
    folder = Path(folder)
    meta_path = folder / PROVENANCE
    if not meta_path.is_file():
        raise MissingPathError(f"{meta_path}: no pseudo-label provenance (run vesselseg pseudo)")
    try:
        meta = json.loads(meta_path.read_text())
        volumes = meta["volumes"]
    except (ValueError, KeyError):
        raise DatasetError(f"{meta_path}: not a vesselseg pseudo-label file") from None
    if meta.get("format") != FORMAT:
        raise DatasetError(f"{meta_path}: unknown format {meta.get('format')!r}")
    samples = []
    for sample_id, entry in sorted(volumes.items()):
        mask = folder / Path(entry["mask"]).name
        image = Path(entry["image"])
        for path in (mask, image):
            if not path.exists():
                raise MissingPathError(f"{path}: listed in {meta_path} but missing")
        samples.append(Sample(check_id(f"pseudo-{sample_id}", meta_path), image, mask))
    return samples
