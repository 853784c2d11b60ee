"""Segmentation metrics on lazily read volumes, computed z-slab by z-slab in bounded memory.

* :mod:`~vesselseg.metrics.confusion` — Dice, IoU, precision, recall (dense or sparse 0/1/2
  truth) and counts for many thresholds in one pass.
* :mod:`~vesselseg.metrics.cldice` — clDice from 3D skeletons (slabs with a halo).
* :mod:`~vesselseg.metrics.surface` — surface Dice at a tolerance (DeepMind's definition;
  τ = 0 is the SenNet + HOA Kaggle metric).
* :mod:`~vesselseg.metrics.components` — connected components, merged across slabs.
* :func:`evaluate_pair` — all of the above in one dict.
"""

from vesselseg.metrics.cldice import SKELETON_HALO, ClDice, cldice
from vesselseg.metrics.components import count_components
from vesselseg.metrics.confusion import (
    Confusion,
    SweepCounts,
    confusion_counts,
    threshold_sweep,
)
from vesselseg.metrics.evaluate import evaluate_pair
from vesselseg.metrics.slabs import SLAB_BYTES
from vesselseg.metrics.surface import SurfaceDice, surface_area_table, surface_dice

__all__ = [
    "SKELETON_HALO",
    "SLAB_BYTES",
    "ClDice",
    "Confusion",
    "SurfaceDice",
    "SweepCounts",
    "cldice",
    "confusion_counts",
    "count_components",
    "evaluate_pair",
    "surface_area_table",
    "surface_dice",
    "threshold_sweep",
]
