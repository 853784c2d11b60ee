"""Index of annotated voxels, so that a crop around annotated vessel is drawn in O(1).

The mask ``(z, y, x)`` (0 not annotated, 1 vessel, 2 background) is scanned once, slab by slab
along z, keeping flat C-order ``int64`` indices of vessel and of background voxels. A class
with more than ``max_points`` voxels keeps a uniform random subsample without replacement
(bottom-k of iid random keys, merged slab by slab), so memory stays bounded by
``max_points`` plus one slab for any volume size. The index is cached as a small ``.npz``
beside the mask (hidden ``.<mask name>.index.npz``, so dataset discovery never mistakes it for
a volume) or under a cache folder, and rebuilt when the mask file changes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.data.cache import atomic_write, cache_candidates, fingerprint
from vesselseg.io.dataset import Sample
from vesselseg.io.slabs import iter_slabs

log = logging.getLogger(__name__)

INDEX_VERSION = 1
INDEX_SUFFIX = ".index.npz"
SCAN_BYTES = 8 * 2**20  # slab size while scanning the mask
VESSEL, BACKGROUND = 1, 2


@dataclass(frozen=True, eq=False)
class AnnotationIndex:
    """Flat indices of annotated voxels of one ``(z, y, x)`` mask.

    ``vessel`` and ``background`` are ``(n,)`` int64 C-order flat indices into ``shape``
    (all voxels of the class, or a uniform subsample of ``max_points`` of them);
    ``n_vessel`` / ``n_background`` are the true counts in the mask.
    """

    shape: tuple[int, int, int]
    vessel: np.ndarray
    background: np.ndarray
    n_vessel: int
    n_background: int

    def points(self, label: int) -> np.ndarray:
        """``(n,)`` flat indices of ``label`` (1 vessel, 2 background)."""
        if label == VESSEL:
            return self.vessel
        if label == BACKGROUND:
            return self.background
        raise ValueError(f"label must be 1 (vessel) or 2 (background), got {label}")

    def coords(self, label: int) -> np.ndarray:
        """``(n, 3)`` int64 ``(z, y, x)`` coordinates of ``label``."""
        return np.stack(np.unravel_index(self.points(label), self.shape), axis=1)

    def random_point(self, label: int, rng: np.random.Generator) -> tuple[int, int, int] | None:
        """A uniformly drawn indexed voxel of ``label`` as ``(z, y, x)``; None if there is none."""
        pts = self.points(label)
        if pts.size == 0:
            return None
        flat = int(pts[rng.integers(pts.size)])
        z, y, x = np.unravel_index(flat, self.shape)
        return int(z), int(y), int(x)


class _BottomK:
    """Uniform sample without replacement of at most ``k`` items fed in chunks.

    Every item gets an iid uniform key and the ``k`` smallest keys are kept. Keys are only
    drawn once more than ``k`` items were seen (iid keys make that equivalent).
    """

    def __init__(self, k: int, rng: np.random.Generator) -> None:
        self.k = k
        self.rng = rng
        self.seen = 0
        self.chunks: list[np.ndarray] = []
        self.keys: np.ndarray | None = None
        self.idx: np.ndarray | None = None

    def add(self, items: np.ndarray) -> None:
        self.seen += items.size
        if self.keys is None or self.idx is None:
            self.chunks.append(items)
            if self.seen <= self.k:
                return
            idx = np.concatenate(self.chunks)
            self.chunks = []
            keys = self.rng.random(idx.size)
        else:
            if items.size == 0:
                return
            idx = np.concatenate([self.idx, items])
            keys = np.concatenate([self.keys, self.rng.random(items.size)])
        keep = np.argpartition(keys, self.k - 1)[: self.k]
        self.keys, self.idx = keys[keep], idx[keep]

    def result(self) -> np.ndarray:
        if self.idx is not None:
            return np.sort(self.idx)
        if not self.chunks:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(self.chunks).astype(np.int64, copy=False)


def build_annotation_index(
    mask_volume: Any, max_points: int = 2_000_000, seed: int = 0, slab_bytes: int = SCAN_BYTES
) -> AnnotationIndex:
    """Scan ``mask_volume`` ``(z, y, x)`` slab by slab and index its vessel/background voxels.

    Memory is bounded by ``2 * max_points`` indices plus one slab of ``slab_bytes``.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    shape = tuple(int(s) for s in mask_volume.shape)
    if len(shape) != 3:
        raise ValueError(f"mask must be 3D (z, y, x), got shape {shape}")
    rng = np.random.default_rng(seed)
    plane = shape[1] * shape[2]
    sinks = {VESSEL: _BottomK(max_points, rng), BACKGROUND: _BottomK(max_points, rng)}
    for z0, slab in iter_slabs(mask_volume, budget=slab_bytes):
        flat = slab.reshape(-1)
        for label, sink in sinks.items():
            hits = np.flatnonzero(flat == label)
            if hits.size:
                sink.add(hits + z0 * plane)
    return AnnotationIndex(
        shape=(shape[0], shape[1], shape[2]),
        vessel=sinks[VESSEL].result(),
        background=sinks[BACKGROUND].result(),
        n_vessel=sinks[VESSEL].seen,
        n_background=sinks[BACKGROUND].seen,
    )


def save_index(index: AnnotationIndex, path: Path, key: dict[str, Any]) -> bool:
    """Write ``index`` with its cache ``key`` atomically; False if ``path`` is not writable."""

    def write(handle: Any) -> None:
        np.savez(
            handle,
            vessel=index.vessel,
            background=index.background,
            shape=np.asarray(index.shape, dtype=np.int64),
            counts=np.asarray([index.n_vessel, index.n_background], dtype=np.int64),
            key=np.asarray(json.dumps(key, sort_keys=True)),
        )

    return atomic_write(path, write)


def load_index(path: Path, key: dict[str, Any] | None = None) -> AnnotationIndex | None:
    """Read a cached index; None if missing, unreadable or built for another ``key``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if key is not None and str(data["key"]) != json.dumps(key, sort_keys=True):
                return None
            shape = tuple(int(s) for s in data["shape"])
            counts = data["counts"]
            return AnnotationIndex(
                shape=(shape[0], shape[1], shape[2]),
                vessel=data["vessel"].astype(np.int64, copy=False),
                background=data["background"].astype(np.int64, copy=False),
                n_vessel=int(counts[0]),
                n_background=int(counts[1]),
            )
    except (OSError, KeyError, ValueError, IndexError):
        return None


def load_or_build_index(
    sample: Sample,
    cache_dir: str | Path | None = None,
    max_points: int = 2_000_000,
    seed: int = 0,
) -> AnnotationIndex:
    """The annotation index of ``sample``'s mask, from cache when the mask is unchanged.

    The cache key is the mask's path + size + mtime (+ ``max_points``, ``seed``). It is kept
    beside the mask (``.<mask name>.index.npz``) when that folder is writable, else under
    ``cache_dir`` (default ``~/.cache/vesselseg``).
    """
    if sample.mask is None:
        raise ValueError(f"{sample.image}: sample has no mask to index")
    key = {
        "version": INDEX_VERSION,
        "source": fingerprint(sample.mask),
        "layout": sample.layout,
        "max_points": int(max_points),
        "seed": int(seed),
    }
    candidates = cache_candidates(sample.mask, INDEX_SUFFIX, cache_dir, hidden=True)
    for path in candidates:
        index = load_index(path, key)
        if index is not None:
            log.debug("annotation index of %s from %s", sample.mask, path)
            return index
    mask = sample.open_mask()
    assert mask is not None
    start = time.perf_counter()
    index = build_annotation_index(mask, max_points=max_points, seed=seed)
    log.info(
        "indexed %s: %d vessel, %d background voxels (%.1f s)",
        sample.mask,
        index.n_vessel,
        index.n_background,
        time.perf_counter() - start,
    )
    for path in candidates:
        if save_index(index, path, key):
            break
    else:
        log.warning("could not cache the annotation index of %s", sample.mask)
    return index
