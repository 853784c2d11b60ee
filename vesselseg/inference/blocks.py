"""Z-blocks of one volume for sharded prediction: which blocks a shard takes, which output cells
and windows a block needs. Pure functions of the plan; nothing here reads or writes.

A volume's output store is chunked; a *block* is one row of chunks along z (``[z0, z1)``, the
full ``y x x`` plane), so two blocks never share a chunk and workers writing different blocks
never write the same file. A block is predicted with every window that adds to a voxel inside
it (its halo): exactly the cells (:class:`~vesselseg.inference.plan.Cell`) that intersect it,
each computed from the very windows, in the very order, an unsharded run adds to it. Windows go
through the network in the batches of the unsharded run (consecutive runs of ``batch_size`` of
the global order), so every window's values, and therefore every voxel, are bit-for-bit those
of one process predicting the whole volume.
"""

from __future__ import annotations

from vesselseg.inference.plan import CellKey, Plan, StripKey, Tile

Range = tuple[int, int]


def z_blocks(depth: int, chunk_z: int) -> list[Range]:
    """``[z0, z1)`` of the blocks of a volume ``depth`` planes deep, one chunk row each."""
    if chunk_z < 1:
        raise ValueError(f"chunk depth must be >= 1, got {chunk_z}")
    return [(z0, min(z0 + chunk_z, depth)) for z0 in range(0, depth, chunk_z)]


def assign_blocks(counts: list[int], shard: tuple[int, int]) -> list[tuple[int, int]]:
    """``(volume, block)`` pairs shard ``(i, n)`` predicts, of volumes with ``counts[v]`` blocks.

    Every volume's blocks, volume after volume, are cut into ``n`` contiguous runs of (nearly)
    equal length; shard ``i`` takes run ``i``. Contiguous runs keep the windows recomputed at
    run ends (the halo) few; the ``n`` runs cover every block exactly once.
    """
    index, count = shard
    pairs = [(v, b) for v, n in enumerate(counts) for b in range(n)]
    lo, hi = index * len(pairs) // count, (index + 1) * len(pairs) // count
    return pairs[lo:hi]


def runs_of(blocks: list[int]) -> list[list[int]]:
    """Sorted block indices grouped into runs of consecutive ones (``[1, 2, 5]`` →
    ``[[1, 2], [5]]``): each run is predicted in one pass, sharing its inner halos."""
    groups: list[list[int]] = []
    for b in sorted(set(blocks)):
        if groups and groups[-1][-1] == b - 1:
            groups[-1].append(b)
        else:
            groups.append([b])
    return groups


def cells_in_z(plan: Plan, z0: int, z1: int) -> set[CellKey]:
    """The cells (every region) whose planes intersect ``[z0, z1)`` (volume coordinates)."""
    pz = plan.grid.pad[0]
    found: set[CellKey] = set()
    for key, cell in plan.cells.items():
        if cell.z[0] - pz < z1 and cell.z[1] - pz > z0:
            found.add(key)
    return found


def tiles_for(plan: Plan, cells: set[CellKey]) -> list[int]:
    """Sorted indices of the windows that add to any of ``cells``."""
    rows = len(plan.grid.starts[0])
    offsets = [0]
    for reg in plan.regions:  # windows are walked region after region
        offsets.append(offsets[-1] + rows * len(reg.iy) * len(reg.ix))
    needed: set[int] = set()
    for region, a, b in cells:
        nj, nk = len(plan.regions[region].iy), len(plan.regions[region].ix)
        offset = offsets[region]
        for iz in plan.rows_of_z[a]:
            for jy in plan.strips_of_y[region][b]:
                first = offset + (iz * nj + jy) * nk
                needed.update(range(first, first + nk))
    return sorted(needed)


def batch_starts(plan: Plan, cells: set[CellKey], batch_size: int) -> list[int]:
    """First window index of every batch (of an unsharded run: ``0, B, 2B, ...``) holding a
    window that adds to ``cells``, in order."""
    return sorted({t // batch_size * batch_size for t in tiles_for(plan, cells)})


def strip_keys_of(plan: Plan, tiles: list[Tile]) -> list[StripKey]:
    """The input strips ``tiles`` (in processing order) are cut from, in order, once each."""
    keys: list[StripKey] = []
    for tile in tiles:
        key = plan.strip_of(tile)
        if not keys or keys[-1] != key:
            keys.append(key)
    return keys
