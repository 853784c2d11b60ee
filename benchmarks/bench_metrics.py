"""Metric speed and peak memory on a size³ pair on disk (default 512³, uint8 truth + float32 p).

Run: python benchmarks/bench_metrics.py [--size 512] [--slab-mib 256] [--skip cldice ...]

The pair is written as .npy files: random tubes (radius 2–10) as truth; the prediction is the
same tubes with jittered radii and centres, a few gaps, spurious blobs and background noise
below 0.35, as float32 probabilities. Each metric runs in a fresh subprocess that reads the
files slab by slab with positioned reads (like a chunked zarr/TIFF reader), so its peak RSS
(``resource.getrusage``) is the metric's working memory plus the interpreter. A last row runs
``evaluate_pair`` on the same files opened with ``vesselseg.io.open_volume`` (memmaps): there
the RSS also counts the clean file pages the mapping touched, which the kernel can drop.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import print_table  # noqa: E402

CHILD = """
import json, os, resource, sys, time
import numpy as np

class PreadVolume:
    '''A .npy file read region by region with os.pread: no mapping, no cache of our own.'''
    def __init__(self, path):
        arr = np.load(path, mmap_mode="r")
        self.shape, self.dtype, self.offset = arr.shape, arr.dtype, arr.offset
        del arr
        self.fd = os.open(path, os.O_RDONLY)
        self.plane = int(np.prod(self.shape[1:])) * self.dtype.itemsize
    def __getitem__(self, key):
        z = range(self.shape[0])[key if isinstance(key, slice) else key[0]]
        n = len(z)
        buf = os.pread(self.fd, n * self.plane, self.offset + z.start * self.plane)
        return np.frombuffer(buf, self.dtype).reshape(n, *self.shape[1:])

from vesselseg import metrics as M
pred_path, truth_path, which, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if which == "evaluate_pair (memmap)":
    from vesselseg.io import open_volume
    pred, truth = open_volume(pred_path), open_volume(truth_path)
else:
    pred, truth = PreadVolume(pred_path), PreadVolume(truth_path)
start = time.perf_counter()
if which == "(imports: scipy, skimage, cc3d)":
    import cc3d, scipy.ndimage, skimage.measure, skimage.morphology
    value = ""
elif which == "confusion (Dice, IoU, P, R)":
    value = M.confusion_counts(pred, truth, slab_bytes=budget).dice
elif which == "threshold sweep (101 thr.)":
    value = M.threshold_sweep(pred, truth, np.linspace(0, 1, 101), slab_bytes=budget).best()[1]
elif which == "clDice":
    value = M.cldice(pred, truth, slab_bytes=budget).cldice
elif which == "surface Dice tau=0":
    value = M.surface_dice(pred, truth, 0.0, slab_bytes=budget).surface_dice
elif which == "surface Dice tau=2":
    value = M.surface_dice(pred, truth, 2.0, slab_bytes=budget).surface_dice
elif which == "components (pred + truth)":
    n_pred = M.count_components(pred, slab_bytes=budget)
    value = f"{n_pred} / {M.count_components(truth, labels=True, slab_bytes=budget)}"
else:
    r = M.evaluate_pair(pred, truth, thresholds=101, slab_bytes=budget)
    value = r["surface_dice"]
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_kib": peak, "value": value}))
"""

METRICS = (
    "(imports: scipy, skimage, cc3d)",
    "confusion (Dice, IoU, P, R)",
    "threshold sweep (101 thr.)",
    "clDice",
    "surface Dice tau=0",
    "surface Dice tau=2",
    "components (pred + truth)",
    "evaluate_pair (memmap)",
)


def ball(radius: int) -> np.ndarray:
    grid = np.indices((2 * radius + 1,) * 3) - radius
    return (grid**2).sum(axis=0) <= radius**2


def stamp(volume: np.ndarray, center: np.ndarray, radius: int, value: float) -> None:
    """``volume = max(volume, value)`` on a ball; ``volume`` may be a memmap."""
    shape = np.array(volume.shape)
    lo = np.maximum(center - radius, 0)
    hi = np.minimum(center + radius + 1, shape)
    if np.any(hi <= lo):
        return
    offset = radius - center
    kernel = ball(radius)[tuple(slice(a, b) for a, b in zip(lo + offset, hi + offset))]
    region = tuple(slice(a, b) for a, b in zip(lo, hi))
    volume[region] = np.maximum(volume[region], kernel * np.asarray(value, volume.dtype))


def make_pair(folder: Path, size: int, seed: int = 0) -> tuple[Path, Path]:
    """Random tubes as truth (uint8) and a perturbed probability map (float32), on disk."""
    rng = np.random.default_rng(seed)
    truth_path, pred_path = folder / "truth.npy", folder / "pred.npy"
    truth = np.lib.format.open_memmap(truth_path, "w+", np.uint8, (size,) * 3)
    pred = np.lib.format.open_memmap(pred_path, "w+", np.float32, (size,) * 3)
    for z0 in range(0, size, 32):
        pred[z0 : z0 + 32] = rng.random((min(32, size - z0), size, size), np.float32) * 0.35
    for _ in range(max(4, size // 12)):
        point = rng.uniform(0, size, 3)
        direction = rng.normal(size=3)
        radius = float(rng.uniform(2, 10))
        confidence = float(rng.uniform(0.6, 0.95))
        gap_at = rng.integers(0, 400) if rng.random() < 0.3 else -1
        for step in range(int(1.5 * size / max(radius / 2, 1))):
            direction = direction / np.linalg.norm(direction) + rng.normal(scale=0.15, size=3)
            point = point + direction / np.linalg.norm(direction) * max(radius / 2, 1)
            radius = float(np.clip(radius + rng.normal(scale=0.2), 2, 10))
            center = np.round(point).astype(int)
            stamp(truth, center, round(radius), 1)
            if gap_at <= step < gap_at + 3:
                continue
            jitter = np.round(rng.normal(scale=0.5, size=3)).astype(int)
            pred_radius = max(1, round(radius + rng.normal(scale=0.7)))
            stamp(pred, center + jitter, pred_radius, confidence)
    for _ in range(size // 8):  # spurious blobs
        stamp(pred, rng.integers(0, size, 3), int(rng.integers(1, 4)), float(rng.uniform(0.5, 0.9)))
    truth.flush()
    pred.flush()
    return pred_path, truth_path


def run_child(pred_path: Path, truth_path: Path, which: str, budget: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(pred_path), str(truth_path), which, str(budget)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slab-mib", type=int, default=256, help="slab_bytes budget in MiB")
    parser.add_argument("--skip", nargs="*", default=[], help="metrics to skip (name prefixes)")
    parser.add_argument("--make-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_into is not None:
        _, truth_path = make_pair(args.make_into, args.size)
        truth = np.load(truth_path, mmap_mode="r")
        print(float(np.mean([truth[z].mean() for z in range(0, args.size, 8)])))
        return
    budget = args.slab_mib * 2**20
    with tempfile.TemporaryDirectory() as tmp:
        # made in a subprocess: a child's ru_maxrss starts at its parent's RSS at fork time,
        # so this process must never hold the pair's pages itself
        start = time.perf_counter()
        fraction = float(
            subprocess.run(
                [sys.executable, __file__, "--size", str(args.size), "--make-into", tmp],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()[-1]
        )
        made = time.perf_counter() - start
        pred_path, truth_path = Path(tmp) / "pred.npy", Path(tmp) / "truth.npy"
        rows = []
        for which in METRICS:
            if any(which.startswith(s) for s in args.skip):
                continue
            result = run_child(pred_path, truth_path, which, budget)
            value, seconds = result["value"], result["seconds"]
            timed = not which.startswith("(")
            rows.append(
                [
                    which,
                    f"{seconds:.1f}" if timed else "-",
                    f"{args.size**3 / seconds / 1e6:.1f}" if timed else "-",
                    f"{result['peak_kib'] / 1024:.0f}",
                    f"{value:.4f}" if isinstance(value, float) else str(value),
                ]
            )
            print(f"  {which}: {result['seconds']:.1f} s", file=sys.stderr, flush=True)
    pair_mib = args.size**3 * 5 / 2**20
    print_table(
        f"vesselseg metrics: {args.size}^3 pair (uint8 truth, float32 p; {pair_mib:.0f} MiB on "
        f"disk; vessel fraction {fraction:.3f}; made in {made:.0f} s), slab budget "
        f"{args.slab_mib} MiB",
        ["metric", "seconds", "Mvox/s", "peak RSS MiB", "value"],
        rows,
    )


if __name__ == "__main__":
    main()
