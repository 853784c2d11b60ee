"""Number of connected components of a mask, counted slab by slab.

Each z-slab is labelled on its own with cc3d; components that touch across a slab boundary are
then merged: for the last plane of one slab and the first plane of the next, every pair of
foreground voxels that are neighbours under the connectivity (26: the 3×3 block of the next
plane; 18: its cross; 6: the voxel straight across) links their two slab labels. The count is
the number of connected groups of slab labels in that link graph (a union–find, done with
``scipy.sparse.csgraph.connected_components``), which equals labelling the whole volume at once.
Only one slab and the boundary planes are held in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vesselseg.metrics.slabs import SLAB_BYTES, pred_mask, slab_ranges, truth_mask

BYTES_PER_VOXEL = 12.0  # input + mask + uint32 labels + cc3d working memory
CROSS_OFFSETS = {
    6: ((0, 0),),
    18: ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)),
    26: tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)),
}


def boundary_links(below: np.ndarray, above: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """Unique label pairs ``(a, b)`` linking plane ``below`` to the next plane ``above``.

    Both planes hold labels (0 = background) of shape ``(Y, X)``; the result is ``(k, 2)``
    int64, one row per distinct pair of touching labels.
    """
    height, width = below.shape
    pairs = []
    for dy, dx in CROSS_OFFSETS[connectivity]:
        a = below[max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
        b = above[max(0, dy) : height - max(0, -dy), max(0, dx) : width - max(0, -dx)]
        both = (a != 0) & (b != 0)
        if both.any():
            pairs.append(np.stack([a[both], b[both]], axis=1).astype(np.int64))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


def count_groups(n_labels: int, links: np.ndarray) -> int:
    """Connected groups among labels ``1..n_labels`` joined by ``links`` (``(k, 2)``)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n_labels == 0:
        return 0
    if len(links) == 0:
        return n_labels
    graph = coo_matrix(
        (np.ones(len(links), dtype=np.int8), (links[:, 0] - 1, links[:, 1] - 1)),
        shape=(n_labels, n_labels),
    )
    n_groups, _ = connected_components(graph, directed=False)
    return int(n_groups)


def count_components(
    volume: Any,
    threshold: float = 0.5,
    labels: bool = False,
    connectivity: int = 26,
    slab_bytes: int = SLAB_BYTES,
) -> int:
    """Connected components of a mask ``(z, y, x)``, equal to ``cc3d`` on the whole volume.

    The mask is ``volume >= threshold`` for probabilities, nonzero for masks, or — with
    ``labels=True`` — label 1 of a truth volume.
    """
    import cc3d

    if connectivity not in CROSS_OFFSETS:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    depth, height, width = (int(s) for s in volume.shape)
    n_labels = 0
    links: list[np.ndarray] = []
    previous_top: np.ndarray | None = None
    for z0, z1 in slab_ranges(depth, height * width, BYTES_PER_VOXEL, slab_bytes):
        slab = np.asarray(volume[z0:z1])
        mask = truth_mask(slab) if labels else pred_mask(slab, threshold)
        slab_labels, n = cc3d.connected_components(
            np.ascontiguousarray(mask), connectivity=connectivity, return_N=True
        )
        bottom = slab_labels[0].astype(np.int64)
        top = slab_labels[-1].astype(np.int64)
        bottom[bottom > 0] += n_labels
        top[top > 0] += n_labels
        if previous_top is not None:
            links.append(boundary_links(previous_top, bottom, connectivity))
        previous_top = top
        n_labels += int(n)
    return count_groups(n_labels, np.concatenate(links) if links else np.zeros((0, 2), np.int64))
