"""Writing synthetic datasets: the train/val/test/unlabelled splits of a :class:`SynthConfig`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vesselseg.config import SynthConfig, as_triple
from vesselseg.synth.plan import VolumePlan, plan_volume
from vesselseg.synth.render import iter_volume

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "unlabelled")


def volume_seed(seed: int, index: int) -> int:
    """The seed of volume ``index`` of a dataset made with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_volume_set(
    plan: VolumePlan,
    out_dir: Path,
    sample_id: str,
    fmt: str,
    slab: int,
    with_mask: bool,
    on_slab: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write ``data_<id>``, ``truth_<id>`` and (``with_mask``) ``mask_<id>`` slab by slab."""
    from contextlib import ExitStack

    from vesselseg.io.spacing import VoxelSize
    from vesselseg.io.writers import SUFFIX, VolumeWriter

    suffix = SUFFIX[fmt]
    names = {"data": np.float32, "truth": np.uint8}
    if with_mask:
        names["mask"] = np.uint8
    with ExitStack() as stack:
        writers = {
            role: stack.enter_context(
                VolumeWriter(
                    out_dir / f"{role}_{sample_id}{suffix}",
                    plan.shape,
                    dtype,
                    fmt=fmt,
                    voxel_size=VoxelSize(plan.spacing, "um", known=True),
                )  # fmt: skip
            )
            for role, dtype in names.items()
        }
        for z0, image, truth, mask in iter_volume(plan, slab):
            z1 = z0 + image.shape[0]
            writers["data"][z0:z1] = image
            writers["truth"][z0:z1] = truth
            if with_mask:
                writers["mask"][z0:z1] = mask
            if on_slab:
                on_slab(z1 - z0)
    return [w.path for w in writers.values()]


def synthesize_dataset(
    cfg: SynthConfig, out_dir: str | Path, on_slab: Callable[[int], None] | None = None
) -> dict[str, list[str]]:
    """Write the train/val/test/unlabelled splits of ``cfg`` under ``out_dir``.

    Returns the ids per split. Volume ``i`` (counted across splits) is seeded with
    ``volume_seed(cfg.seed, i)``, so each volume is reproducible on its own.
    """
    out = Path(out_dir)
    shape = as_triple(cfg.shape)
    counts = {
        "train": cfg.n_train,
        "val": cfg.n_val,
        "test": cfg.n_test,
        "unlabelled": cfg.n_unlabelled,
    }
    ids: dict[str, list[str]] = {}
    index = 0
    for split in SPLITS:
        ids[split] = []
        for _ in range(counts[split]):
            sample_id = f"{index:03d}"
            annotate = split != "unlabelled"
            plan = plan_volume(shape, volume_seed(cfg.seed, index), cfg, annotate=annotate)
            (out / split).mkdir(parents=True, exist_ok=True)
            write_volume_set(plan, out / split, sample_id, cfg.format, cfg.slab, annotate, on_slab)
            log.info(
                "synth %s/%s: %d segments, %d patches",
                split,
                sample_id,
                len(plan.segments),
                len(plan.patches),
            )
            ids[split].append(sample_id)
            index += 1
    return ids


def synthesize_with_progress(cfg: SynthConfig, out_dir: str | Path) -> str:
    """:func:`synthesize_dataset` with a progress bar over planes; returns a summary line."""
    from vesselseg.progress import progress_bar

    n_volumes = cfg.n_train + cfg.n_val + cfg.n_test + cfg.n_unlabelled
    planes = n_volumes * as_triple(cfg.shape)[0]
    with progress_bar("synth", total=planes, unit="planes") as advance:
        ids = synthesize_dataset(cfg, out_dir, on_slab=advance)
    counts = ", ".join(f"{len(v)} {k}" for k, v in ids.items() if v)
    return f"wrote {n_volumes} volumes ({counts}) of shape {as_triple(cfg.shape)} to {out_dir}"
