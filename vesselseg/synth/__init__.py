"""Synthetic vessel volumes with a dense truth and a sparse, human-like annotation.

No real data can be downloaded where this project is built and tested, so the demo, the tests
and the benchmarks run on volumes made here:

* a branching tree of tapered, gently curving tubes (radii ``min_radius``..``max_radius``);
  each bifurcation follows Murray's law ``r**3 = r1**3 + r2**3`` with Murray's optimal
  branching angles;
* tissue texture (low-frequency undulation plus smoothed noise), vessels brighter or darker
  than tissue (random per volume), a phase-contrast look (blur plus edge fringes from a
  Laplacian of the vessel map) and Gaussian noise;
* a dense truth (0/1) and a sparse annotation in the 0/1/2 code: a few partial 2D slices along
  random axes, each a rectangle around a vessel, with vessel = 1 and background = 2; the
  uncertain half-voxel rim just outside each vessel is left unannotated, as a person would.

Everything is generated slab by slab along z with a halo, from per-plane seeded noise, so the
result is identical for any slab size and memory stays bounded for any depth.
"""

from vesselseg.synth.dataset import (
    SPLITS,
    synthesize_dataset,
    synthesize_with_progress,
    volume_seed,
    write_volume_set,
)
from vesselseg.synth.plan import Patch, Segment, VolumePlan, grow_tree, murray_split, plan_volume
from vesselseg.synth.render import HALO, annotation_slab, iter_volume, render_slab, signed_distance

__all__ = [
    "HALO",
    "SPLITS",
    "Patch",
    "Segment",
    "VolumePlan",
    "annotation_slab",
    "grow_tree",
    "iter_volume",
    "murray_split",
    "plan_volume",
    "render_slab",
    "signed_distance",
    "synthesize_dataset",
    "synthesize_with_progress",
    "volume_seed",
    "write_volume_set",
]
