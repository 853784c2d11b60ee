"""A person's sparse annotation, drawn from a dense truth: a few boxes on a few z-slices.

:func:`draw_boxes` places ``side`` x ``side`` boxes (clipped to the plane) on distinct z-slices,
each centred near a vessel pixel of its slice, until at least ``fraction`` of the volume's
voxels are inside a box (or ``n_boxes`` boxes, when given); :func:`boxes_mask` writes them in
the 0/1/2 code (1 vessel, 2 background inside each box, 0 elsewhere). Both are pure functions
of the truth and the seed, for benchmarks and tests that need sparse labels on real volumes
whose truth is dense (``benchmarks/bench_real.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """A rectangle ``[y0, y1) x [x0, x1)`` on z-slice ``z``."""

    z: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def voxels(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)

    def region(self) -> tuple[int, slice, slice]:
        return self.z, slice(self.y0, self.y1), slice(self.x0, self.x1)


def draw_boxes(
    truth: np.ndarray,
    fraction: float = 0.01,
    side: int = 128,
    seed: int = 0,
    n_boxes: int | None = None,
    exclude: Sequence[Box] = (),
) -> list[Box]:
    """Boxes of a human-like sparse annotation of ``truth`` ``(z, y, x)`` (nonzero = vessel).

    The number of boxes is ``n_boxes`` or the fewest whose voxels reach ``fraction`` of the
    volume. Each box lies on its own z-slice (slices are reused only when there are more boxes
    than slices holding vessel), never on a slice of ``exclude``'s boxes where others are
    left, and is centred on a random vessel pixel of its slice shifted by up to a quarter of
    ``side``, then moved inside the plane, so it always holds vessel. Deterministic for
    ``seed``.
    """
    truth = np.asarray(truth)
    if truth.ndim != 3:
        raise ValueError(f"truth must be (z, y, x), got shape {truth.shape}")
    nz, ny, nx = truth.shape
    hy, hx = min(side, ny), min(side, nx)
    if n_boxes is None:
        n_boxes = max(1, math.ceil(fraction * truth.size / (hy * hx)))
    vessel_slices = [z for z in range(nz) if truth[z].any()]
    if not vessel_slices:
        raise ValueError("truth holds no vessel: no box can be centred on one")
    rng = np.random.default_rng(seed)
    taken = {b.z for b in exclude}
    free = [z for z in vessel_slices if z not in taken] or vessel_slices
    boxes: list[Box] = []
    pool: list[int] = []
    for _ in range(n_boxes):
        if not pool:
            pool = list(rng.permutation(free))
        z = int(pool.pop())
        ys, xs = np.nonzero(truth[z])
        pick = int(rng.integers(len(ys)))
        jitter = rng.integers(-(hy // 4), hy // 4 + 1), rng.integers(-(hx // 4), hx // 4 + 1)
        cy, cx = int(ys[pick] + jitter[0]), int(xs[pick] + jitter[1])
        y0 = min(max(cy - hy // 2, 0), ny - hy)
        x0 = min(max(cx - hx // 2, 0), nx - hx)
        y0 = min(y0, int(ys[pick]))  # keep the picked vessel pixel inside the box
        y0 = max(y0, int(ys[pick]) - hy + 1)
        x0 = min(x0, int(xs[pick]))
        x0 = max(x0, int(xs[pick]) - hx + 1)
        boxes.append(Box(z, y0, y0 + hy, x0, x0 + hx))
    return boxes


def boxes_mask(truth: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """The 0/1/2 label volume of ``boxes`` on ``truth``: 1 vessel, 2 background in a box."""
    truth = np.asarray(truth)
    mask = np.zeros(truth.shape, np.uint8)
    for box in boxes:
        region = box.region()
        mask[region] = np.where(truth[region] > 0, 1, 2)
    return mask


def dense_mask(truth: np.ndarray) -> np.ndarray:
    """Dense labels in the 0/1/2 code: 1 vessel, 2 background everywhere."""
    return np.where(np.asarray(truth) > 0, 1, 2).astype(np.uint8)
