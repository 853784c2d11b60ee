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

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SlabLabels:
    """The connected components of a mask labelled slab by slab and merged across slabs.

    Slab ``i`` (planes ``ranges[i]``) was labelled on its own by cc3d; its labels ``1..n`` are
    global labels ``offsets[i] + 1 .. offsets[i] + n``. ``group[l - 1]`` is the component
    (``0 .. n_groups - 1``) that global label ``l`` belongs to and ``sizes[l - 1]`` its voxels.
    Labelling the same slab again (cc3d is deterministic) maps its voxels to components.
    """

    ranges: list[tuple[int, int]]
    offsets: list[int]
    group: np.ndarray
    sizes: np.ndarray
    n_groups: int
    connectivity: int

    def component_sizes(self) -> np.ndarray:
        """Voxels of each component, ``(n_groups,)`` int64."""
        return np.bincount(self.group, weights=self.sizes, minlength=self.n_groups).astype(np.int64)

    def components_of(self, z0: int, mask: np.ndarray) -> np.ndarray:
        """Component index + 1 of every voxel of the slab starting at ``z0`` (0 = background);
        ``mask`` must be the same slab mask that was labelled."""
        import cc3d

        labels = cc3d.connected_components(
            np.ascontiguousarray(mask), connectivity=self.connectivity
        ).astype(np.int64)
        offset = self.offsets[[r[0] for r in self.ranges].index(z0)]
        lookup = np.concatenate([[0], self.group + 1])
        labels[labels > 0] += offset
        return lookup[labels]


def link_groups(n_labels: int, links: np.ndarray) -> tuple[int, np.ndarray]:
    """``(n_groups, group)``: connected groups among labels ``1..n_labels`` joined by
    ``links`` (``(k, 2)``), ``group[l - 1]`` the group of label ``l``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n_labels == 0:
        return 0, np.zeros(0, dtype=np.int64)
    if len(links) == 0:
        return n_labels, np.arange(n_labels, dtype=np.int64)
    graph = coo_matrix(
        (np.ones(len(links), dtype=np.int8), (links[:, 0] - 1, links[:, 1] - 1)),
        shape=(n_labels, n_labels),
    )
    n_groups, group = connected_components(graph, directed=False)
    return int(n_groups), group.astype(np.int64)


def count_groups(n_labels: int, links: np.ndarray) -> int:
    """Connected groups among labels ``1..n_labels`` joined by ``links`` (``(k, 2)``)."""
    return link_groups(n_labels, links)[0]


def label_slabs(
    read_mask: Callable[[int, int], np.ndarray],
    shape: tuple[int, ...],
    connectivity: int = 26,
    slab_bytes: int = SLAB_BYTES,
    with_sizes: bool = False,
) -> SlabLabels:
    """Label the mask ``read_mask(z0, z1)`` of a volume of ``shape`` slab by slab (cc3d) and
    merge labels that touch across slab boundaries; equal to labelling the whole volume.

    Only one slab and the boundary planes are in memory. ``with_sizes`` also counts the voxels
    of every label (needed to filter components by size, not to count them).
    """
    import cc3d

    if connectivity not in CROSS_OFFSETS:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    depth, height, width = (int(s) for s in shape)
    ranges = list(slab_ranges(depth, height * width, BYTES_PER_VOXEL, slab_bytes))
    offsets: list[int] = []
    sizes: list[np.ndarray] = []
    links: list[np.ndarray] = []
    n_labels = 0
    previous_top: np.ndarray | None = None
    for z0, z1 in ranges:
        slab_labels, n = cc3d.connected_components(
            np.ascontiguousarray(read_mask(z0, z1)), connectivity=connectivity, return_N=True
        )
        if with_sizes:
            sizes.append(np.bincount(slab_labels.ravel(), minlength=n + 1)[1:])
        bottom = slab_labels[0].astype(np.int64)
        top = slab_labels[-1].astype(np.int64)
        bottom[bottom > 0] += n_labels
        top[top > 0] += n_labels
        if previous_top is not None:
            links.append(boundary_links(previous_top, bottom, connectivity))
        previous_top = top
        offsets.append(n_labels)
        n_labels += int(n)
    n_groups, group = link_groups(
        n_labels, np.concatenate(links) if links else np.zeros((0, 2), np.int64)
    )
    size = np.concatenate(sizes).astype(np.int64) if sizes else np.zeros(n_labels, np.int64)
    return SlabLabels(ranges, offsets, group, size, n_groups, connectivity)


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

    def read_mask(z0: int, z1: int) -> np.ndarray:
        slab = np.asarray(volume[z0:z1])
        return truth_mask(slab) if labels else pred_mask(slab, threshold)

    return label_slabs(read_mask, tuple(volume.shape), connectivity, slab_bytes).n_groups
