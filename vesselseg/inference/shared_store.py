"""The output of one volume shared by workers predicting its z-blocks (``predict --shard``).

Beside the two output stores (``X.MODEL.prob.ome.zarr.part`` and ``X.MODEL.mask.ome.zarr.part``,
zarr or OME-Zarr, created exactly as a single run creates them) lives ``X.MODEL.prob….blocks/``:

* ``layout.json``: everything the output depends on (the resume key: input, model, settings,
  threads, device), the shape, the chunks and the z-blocks. The first worker publishes it
  atomically and exclusively (:func:`~vesselseg.io.atomic.publish_once`); every other worker
  reads it back and stops with a one-line error when its own settings differ, so one store
  never mixes two predictions.
* ``done-<block>``: written (atomically) only after every voxel of the block is written to both
  stores; ``--resume`` skips blocks that have it.
* ``finalize.lock``: taken (exclusively) by the worker that finds every block done; it builds
  the OME-Zarr pyramids and multiscale metadata, renames both stores to their final names and
  removes the folder. ``predict --finalize`` does the same for a run whose last worker died.

The stores themselves are created by whoever comes first: each worker builds them empty in a
private temporary folder and renames it into place unless another got there first
(:func:`~vesselseg.io.atomic.commit_folder_once`). No coordinator, no lock while predicting:
a block is one row of chunks along z, so two workers never write the same chunk file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vesselseg.errors import ConfigError
from vesselseg.inference.outputs import PYRAMID, OutputPaths, encode_prob
from vesselseg.io.atomic import commit, commit_folder_once, partial_path, publish_once, write_json
from vesselseg.io.spacing import VoxelSize

log = logging.getLogger(__name__)

LAYOUT_FORMAT = "vesselseg-blocks/1"
CHUNKED_FORMATS = ("zarr", "ome-zarr")


def blocks_folder(paths: OutputPaths) -> Path:
    """``<prob>.blocks``: the layout, done markers and finalize lock of a sharded prediction."""
    return paths.prob.with_name(paths.prob.name + ".blocks")


@dataclass(frozen=True)
class BlockLayout:
    """What every worker of one volume must agree on."""

    key: dict[str, Any]
    shape: tuple[int, int, int]
    chunks: tuple[int, int, int]
    blocks: list[tuple[int, int]]
    fmt: str
    prob_dtype: str
    threshold: float
    voxel_size: VoxelSize | None

    def record(self) -> dict[str, Any]:
        size = self.voxel_size
        return {
            "format": LAYOUT_FORMAT,
            "key": self.key,
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "blocks": [list(b) for b in self.blocks],
            "out_format": self.fmt,
            "prob_dtype": self.prob_dtype,
            "threshold": self.threshold,
            "voxel_size": None if size is None else {**size.as_json(), "known": size.known},
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> BlockLayout:
        size = data["voxel_size"]
        voxel_size = (
            None if size is None else VoxelSize(tuple(size["spacing"]), size["unit"], size["known"])
        )
        return cls(
            key=data["key"],
            shape=tuple(data["shape"]),  # type: ignore[arg-type]
            chunks=tuple(data["chunks"]),  # type: ignore[arg-type]
            blocks=[(int(a), int(b)) for a, b in data["blocks"]],
            fmt=data["out_format"],
            prob_dtype=data["prob_dtype"],
            threshold=float(data["threshold"]),
            voxel_size=voxel_size,
        )


def _canonical(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(record, sort_keys=True))


class SharedStore:
    """One volume's shared output (see the module doc); :meth:`open` joins or creates it."""

    def __init__(self, paths: OutputPaths, layout: BlockLayout) -> None:
        self.paths, self.layout = paths, layout
        self.folder = blocks_folder(paths)

    # ------------------------------------------------------------------ joining

    @classmethod
    def open(cls, paths: OutputPaths, layout: BlockLayout) -> SharedStore:
        """Join the shared output of ``paths`` (creating it if this worker is first); a
        one-line :class:`ConfigError` if it was started with other settings."""
        store = cls(paths, layout)
        mine = _canonical(layout.record())
        text = json.dumps(mine, sort_keys=True, indent=1).encode()
        publish_once(store.folder / "layout.json", text)
        theirs = read_layout(store.folder)
        if theirs != mine:
            raise ConfigError(
                f"{paths.prob}: a sharded prediction with other settings, inputs or thread "
                f"count is under way ({store.folder}); give every shard the same settings (and "
                f"OMP_NUM_THREADS), or remove {store.folder.name} and the .part stores"
            )
        for final in (paths.prob, paths.mask):
            store._create(final)
        return store

    def _create(self, final: Path) -> None:
        """The empty ``.part`` store of ``final``, made once whoever comes first."""
        from vesselseg.io.formats.zarr_store import create_zarr

        part, lay = partial_path(final), self.layout
        if not (part / "zarr.json").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".new", dir=final.parent))
            dtype = np.dtype(lay.prob_dtype) if final == self.paths.prob else np.dtype(np.uint8)
            try:
                create_zarr(
                    tmp / "store", lay.shape, dtype, lay.chunks, lay.fmt, final.name, lay.voxel_size
                )
                commit_folder_once(tmp / "store", part)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        array = self.array(final)
        if tuple(array.shape) != lay.shape or tuple(array.chunks) != lay.chunks:
            raise ConfigError(f"{part}: a partial output of another run is in the way; remove it")

    def array(self, final: Path) -> Any:
        """The level-0 ``(z, y, x)`` zarr array of the ``.part`` store of ``final``."""
        import zarr

        node = zarr.open(str(partial_path(final)), mode="r+")
        return node if isinstance(node, zarr.Array) else node["0"]

    # ------------------------------------------------------------------ blocks

    def marker(self, block: int) -> Path:
        return self.folder / f"done-{block:06d}"

    def done(self, block: int) -> bool:
        return self.marker(block).is_file()

    def missing(self) -> list[int]:
        return [b for b in range(len(self.layout.blocks)) if not self.done(b)]

    def mark_done(self, block: int) -> None:
        z0, z1 = self.layout.blocks[block]
        write_json(self.marker(block), {"block": block, "z": [z0, z1], "by": worker_id()})

    def finalizing(self) -> bool:
        """True once a worker has started finalizing (or finished: the folder is gone)."""
        return (self.folder / "finalize.lock").exists() or not self.folder.is_dir()

    def sink(self, blocks: list[int]) -> BlockSink:
        return BlockSink(self, blocks)

    # ------------------------------------------------------------------ finishing

    def finalize(self, force: bool = False) -> bool:
        """Pyramids, metadata and final names once every block is done. Without ``force``
        only the worker that takes the lock does it (False for the others); ``force``
        (``--finalize``) takes over from a worker that died finalizing."""
        missing = self.missing()
        if missing:
            raise ConfigError(
                f"{self.paths.prob}: {len(missing)} of {len(self.layout.blocks)} z-blocks are "
                f"not predicted yet (first: block {missing[0]}); run the shards that own them "
                "(with --resume), then --finalize"
            )
        lock = self.folder / "finalize.lock"
        if not publish_once(lock, worker_id().encode()) and not force:
            return False
        finish_outputs(self.paths, self.layout.fmt, self.layout.voxel_size)
        shutil.rmtree(self.folder, ignore_errors=True)
        return True


def finish_outputs(paths: OutputPaths, fmt: str, voxel_size: VoxelSize | None) -> None:
    """Build the OME-Zarr pyramids and rename both ``.part`` stores (mask first, as a single
    run does); the stale progress file of an earlier single run goes too."""
    from vesselseg.io.formats.pyramid import build_pyramid

    for final, kind in ((paths.mask, "mask"), (paths.prob, "prob")):
        part = partial_path(final)
        if not part.exists():  # renamed by an earlier, interrupted finalize
            continue
        if fmt == "ome-zarr":
            build_pyramid(part, PYRAMID[kind], voxel_size, final.name)
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        commit(part, final)
    paths.progress.unlink(missing_ok=True)


def read_layout(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "layout.json").read_text())
    except (OSError, ValueError):
        return None


def worker_id() -> str:
    """``host:pid`` (and the SLURM array task, if any) of this process, for the markers."""
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{socket.gethostname()}:{os.getpid()}" + (f":task{task}" if task else "")


class BlockSink:
    """Sink of :class:`~vesselseg.inference.predictor.StreamingPredictor` for some blocks of a
    :class:`SharedStore`: each finished cell is clipped to those blocks (cells cut by a block
    border are computed whole and written in part) and written to both stores; a block is
    marked done as soon as its last voxel is written."""

    def __init__(self, store: SharedStore, blocks: list[int]) -> None:
        lay = store.layout
        self.store, self.layout = store, lay
        self.prob = store.array(store.paths.prob)
        self.mask = store.array(store.paths.mask)
        plane = lay.shape[1] * lay.shape[2]
        self.left = {b: (lay.blocks[b][1] - lay.blocks[b][0]) * plane for b in blocks}

    def write(self, z: slice, y: slice, x: slice, values: np.ndarray) -> None:
        lay, depth = self.layout, self.layout.chunks[0]
        for block in range(z.start // depth, (z.stop - 1) // depth + 1):
            if block not in self.left:
                continue  # another worker's block
            z0, z1 = lay.blocks[block]
            a, b = max(z.start, z0), min(z.stop, z1)
            part = values[a - z.start : b - z.start]
            self.prob[a:b, y, x] = encode_prob(part, lay.prob_dtype)
            self.mask[a:b, y, x] = (part >= lay.threshold).astype(np.uint8)
            self.left[block] -= part.size
            if self.left[block] == 0:
                self.store.mark_done(block)
                log.debug("z-block %d (planes %d-%d) done", block, z0, z1)

    def checkpoint(self, next_tile: int) -> None:
        """Blocks are the unit of resuming: nothing to record per row of windows."""

    @property
    def complete(self) -> bool:
        return not any(self.left.values())
