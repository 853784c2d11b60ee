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
from vesselseg.io import VolumeWriter
from vesselseg.io.atomic import write_text
from vesselseg.io.checks import LabelCounts
from vesselseg.io.pseudo_layout import FORMAT, PROVENANCE
from vesselseg.io.slabs import SLAB_BYTES, volume_slabs
from vesselseg.provenance import sha256_file

log = logging.getLogger(__name__)


def threshold_labels(prob: np.ndarray, hi: float, lo: float) -> np.ndarray:
    """0/1/2 labels of probabilities: 1 where ``p >= hi``, 2 where ``p <= lo``, else 0."""
    labels = np.zeros(prob.shape, dtype=np.uint8)
    labels[prob >= hi] = 1
    labels[prob <= lo] = 2
    return labels


def small_component_filter(vessel: Any, min_voxels: int) -> Any:
    """A function ``(z0, z1, slab_mask) -> keep_mask`` dropping components < ``min_voxels``.

    The boolean volume ``vessel`` is labelled slab by slab with components merged across slab
    boundaries (:func:`vesselseg.metrics.components.label_slabs`); the returned function keeps
    the voxels of a slab (one of ``apply.ranges``) whose component is large enough.
    """
    from vesselseg.metrics.components import label_slabs

    labelling = label_slabs(
        lambda z0, z1: np.asarray(vessel[z0:z1]),
        tuple(vessel.shape),
        slab_bytes=SLAB_BYTES,
        with_sizes=True,
    )
    keep = np.concatenate([[False], labelling.component_sizes() >= min_voxels])

    def apply(z0: int, z1: int, mask: np.ndarray) -> np.ndarray:
        return keep[labelling.components_of(z0, mask)]

    apply.ranges = labelling.ranges  # type: ignore[attr-defined]
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
    ranges = keep.ranges if keep is not None else volume_slabs(prob.shape, 12, SLAB_BYTES)
    with VolumeWriter(out, prob.shape, np.uint8) as writer:
        for z0, z1 in ranges:
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
