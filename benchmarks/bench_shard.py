"""What sharding one volume costs, and what its OME-Zarr pyramid costs.

* Halo: windows computed over all ``n`` shards of one volume (contiguous runs of 64-plane
  z-blocks, :mod:`vesselseg.inference.blocks`), relative to one run: from the plan alone, no
  network (a 2048-plane volume; the plane does not change the ratio).
* Pyramid: :func:`~vesselseg.io.formats.pyramid.build_pyramid` (mean) of a ``N x 2N x 2N``
  float32 OME-Zarr level 0 (default N = 256: 256 MiB), wall time and peak memory above the
  process's before it.

Run: python benchmarks/bench_shard.py [--depth 2048] [--size 256]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _table import print_table  # noqa: E402

from vesselseg.inference.blocks import (  # noqa: E402
    assign_blocks,
    batch_starts,
    cells_in_z,
    runs_of,
    z_blocks,
)
from vesselseg.inference.plan import make_plan  # noqa: E402
from vesselseg.inference.tiling import make_grid  # noqa: E402
from vesselseg.io.formats.pyramid import build_pyramid  # noqa: E402
from vesselseg.io.formats.zarr_store import create_zarr  # noqa: E402
from vesselseg.io.spacing import VoxelSize  # noqa: E402

SHARDS = (4, 8, 16, 32)


def halo_ratio(depth: int, tile: int, overlap: float, shards: int, chunk: int = 64) -> float:
    """Windows computed by ``shards`` shards together over those of one run (batch 2)."""
    plan = make_plan(make_grid((depth, tile, tile), (tile,) * 3, overlap))
    blocks = z_blocks(depth, chunk)
    total = 0
    for i in range(shards):
        mine = [b for _, b in assign_blocks([len(blocks)], (i, shards))]
        for run in runs_of(mine):
            cells = set().union(*(cells_in_z(plan, *blocks[b]) for b in run))
            total += sum(len(plan.tiles[s : s + 2]) for s in batch_starts(plan, cells, 2))
    return total / plan.n_tiles


def pyramid_cost(size: int) -> tuple[list, float, float]:
    shape = (size, 2 * size, 2 * size)
    spacing = VoxelSize((1.0, 1.0, 1.0), "um", True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.ome.zarr"
        level0 = create_zarr(path, shape, np.float32, (64, 64, 64), "ome-zarr", "p", spacing)
        rng = np.random.default_rng(0)
        for z0 in range(0, size, 64):
            level0[z0 : z0 + 64] = rng.random((min(64, size - z0), *shape[1:]), dtype=np.float32)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        shapes = build_pyramid(path, "mean", spacing, "p")
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return shapes, seconds, max(peak - before, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=2048)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    rows = [
        [f"{tile}, {overlap}", *(f"{halo_ratio(args.depth, tile, overlap, n):.2f}" for n in SHARDS)]
        for tile, overlap in ((48, 0.25), (96, 0.5))
    ]
    print_table(
        f"windows over all shards / one run, {args.depth} planes, 64-plane blocks",
        ["tile, overlap", *(f"{n} shards" for n in SHARDS)],
        rows,
    )
    shapes, seconds, mib = pyramid_cost(args.size)
    print_table(
        "OME-Zarr pyramid (mean) from level 0",
        ["level 0", "levels", "seconds", "peak MiB above baseline"],
        [["x".join(map(str, shapes[0])), len(shapes), f"{seconds:.1f}", f"{mib:.0f}"]],
    )


if __name__ == "__main__":
    main()
