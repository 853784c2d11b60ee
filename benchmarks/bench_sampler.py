"""Crop sampling speed vs. one training step, across annotation sparsities.

Writes a ``size³`` float32 image and one ``size³`` uint8 mask per vessel fraction (random
short 2D vessel patches on slices, plus 1% annotated background) as ``.npy`` memmaps, slab
by slab, into a temporary folder. Then for each fraction it measures the annotation index
build and ``CropSampler.sample`` (+ normalisation + augmentation) crops/s, and compares with
one forward + backward + optimizer step of ``build_model(ModelConfig())`` at batch 2.

    python benchmarks/bench_sampler.py [--size 512] [--crop 64] [--n 200] [--steps 2]

Sampling should be >= 20x faster than a step and flat across sparsity. Files are freshly
written and touched once before timing, so region reads hit the page cache (as they would
after the first epoch); the index build reads the mask from the page cache too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vesselseg.data.annotation_index import build_annotation_index
from vesselseg.data.augment import augment
from vesselseg.data.crops import CropSampler
from vesselseg.data.normalize import compute_stats, normalize
from vesselseg.io import open_volume
from vesselseg.io.slabs import iter_slabs

FRACTIONS = (0.0001, 0.001, 0.01, 0.05)
PATCH = 8  # vessel patches are PATCH x PATCH voxels on one slice
SLAB = 32


def write_image(path: Path, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(size,) * 3)
    for z0 in range(0, size, SLAB):
        depth = min(SLAB, size - z0)
        slab = rng.standard_normal((depth, size, size), dtype=np.float32)
        out[z0 : z0 + depth] = slab * np.float32(50) + np.float32(100)
    out.flush()
    del out


def write_mask(
    path: Path, size: int, vessel_fraction: float, background_fraction: float = 0.01, seed: int = 0
) -> None:
    """Random PATCH x PATCH patches on slices: background (2) first, vessel (1) on top."""
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(size,) * 3)
    for z0 in range(0, size, SLAB):
        depth = min(SLAB, size - z0)
        slab = np.zeros((depth, size, size), np.uint8)
        for label, fraction in ((2, background_fraction), (1, vessel_fraction)):
            expected = fraction * slab.size / PATCH**2
            n = rng.poisson(expected)
            zs = rng.integers(0, depth, n)
            ys = rng.integers(0, size - PATCH + 1, n)
            xs = rng.integers(0, size - PATCH + 1, n)
            for z, y, x in zip(zs, ys, xs, strict=True):
                slab[z, y : y + PATCH, x : x + PATCH] = label
        out[z0 : z0 + depth] = slab
    out.flush()
    del out


def touch(volume: object) -> None:
    """Map every page of a memmap into this process, so timings do not include first faults."""
    for _, slab in iter_slabs(volume):
        float(slab.max())


def time_train_step(crop: int, steps: int) -> float | None:
    """Seconds per forward+backward+step at batch 2 (None if the model is not importable)."""
    try:
        from vesselseg.config import ModelConfig
        from vesselseg.models import build_model
    except ImportError:
        return None
    torch.manual_seed(0)
    model = build_model(ModelConfig())
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(2, 1, crop, crop, crop)
    target = (torch.rand(2, 1, crop, crop, crop) > 0.9).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--n", type=int, default=200, help="crops per sparsity")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps")
    parser.add_argument("--dir", type=str, default=None, help="scratch folder (default: tmp)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        write_image(folder / "data_bench.npy", args.size)
        image = open_volume(folder / "data_bench.npy")
        stats = compute_stats(image)
        touch(image)
        setup_s = time.perf_counter() - t0
        rows = []
        for i, fraction in enumerate(FRACTIONS):
            mask_path = folder / f"mask_{i}.npy"
            write_mask(mask_path, args.size, fraction, seed=i + 1)
            mask = open_volume(mask_path)
            t0 = time.perf_counter()
            index = build_annotation_index(mask)
            index_s = time.perf_counter() - t0
            touch(mask)
            sampler = CropSampler(
                image,
                mask,
                index,
                args.crop,
                min_vessel_voxels=1,
                background_crop_fraction=0.25,
                image_pad_value=stats.lo,
            )
            rng = np.random.default_rng(0)
            for _ in range(5):  # warm-up
                sampler.sample(rng)
            t0 = time.perf_counter()
            hits = 0
            for _ in range(args.n):
                crop_image, label = sampler.sample(rng)
                hits += bool((label > 0).any())
            sample_s = (time.perf_counter() - t0) / args.n
            t0 = time.perf_counter()
            for _ in range(args.n):
                crop_image, label = sampler.sample(rng)
                augment(
                    normalize(crop_image, stats.lo, stats.hi),
                    label,
                    rng,
                    intensity_scale=0.1,
                    intensity_shift=0.1,
                )
            full_s = (time.perf_counter() - t0) / args.n
            actual = index.n_vessel / float(np.prod(mask.shape))
            rows.append((fraction, actual, index_s, sample_s, full_s, hits / args.n))
            del sampler, mask
            mask_path.unlink()
        step_s = time_train_step(args.crop, args.steps)

    print(
        f"volume {args.size}^3 (image float32 + mask uint8 memmaps, written in "
        f"{setup_s:.1f} s incl. stats), crop {args.crop}^3, {args.n} crops per row, "
        f"{torch.get_num_threads()} torch threads"
    )
    print()
    header = (
        f"{'vessel target':>13} {'vessel actual':>13} {'index build s':>13} "
        f"{'sample ms':>9} {'crops/s':>8} {'+aug ms':>8} {'+aug crops/s':>12} "
        f"{'annotated':>9}"
    )
    print(header)
    print("-" * len(header))
    for target, actual, index_s, sample_s, full_s, hit in rows:
        print(
            f"{target:>12.2%} {actual:>13.4%} {index_s:>13.2f} {sample_s * 1e3:>9.2f} "
            f"{1 / sample_s:>8.0f} {full_s * 1e3:>8.2f} {1 / full_s:>12.0f} {hit:>9.0%}"
        )
    print()
    worst = max(r[4] for r in rows)
    flat = worst / min(r[4] for r in rows)
    if step_s is None:
        print("train step (batch 2): n/a (vesselseg.models not importable)")
    else:
        ratio = step_s / worst
        print(f"train step (batch 2, {args.crop}^3, fwd+bwd+AdamW): {step_s:.2f} s")
        print(
            f"step / crop (slowest sparsity, +aug): {ratio:.0f}x  -> sampling >= 20x faster "
            f"than a step: {'yes' if ratio >= 20 else 'NO'}"
        )
    print(
        f"crop time max/min across sparsity: {flat:.2f}  -> flat (< 1.5): "
        f"{'yes' if flat < 1.5 else 'NO'}"
    )


if __name__ == "__main__":
    main()
