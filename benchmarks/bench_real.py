"""Real-data benchmark: leave-one-volume-out on the three two-photon stacks of ../shared/realdata.

    python benchmarks/bench_real.py                 # full run (defaults + plan), ~1 h on 2 cores
    python benchmarks/bench_real.py --quick         # smoke run: one fold, 256 x 256, 1 short epoch
    python benchmarks/bench_real.py --folds 0 --labels sparse --set data.normalization=dataset

For each held-out volume the other two are the training set, labelled two ways: (a) sparse
boxes like a person's (``vesselseg.synth.boxes``: a few 128 x 128 boxes on distinct z-slices
around vessels, 1 vessel / 2 background inside, 0 elsewhere, ~1 % of the voxels; seeded) and
(b) the dense labels (1/2 everywhere). Validation is one more box per training volume on
other slices (what the calibrated threshold is chosen on). Each model is trained with
``vesselseg train`` and the defaults of params.yaml plus the plan (no size is given), then
``vesselseg evaluate`` scores the held-out volume against its dense truth: Dice, clDice and
surface Dice at tau = 2 um in the volume's voxel size. The baseline is Frangi vesselness
(scikit-image, per z-slice, bright ridges) with the threshold that maximises Dice on the
training volumes' dense truth. The data are read from $VESSELSEG_REALDATA or
../shared/realdata (or --data) and written only to a temporary work folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _table import print_table
from realdata import ROOT, RealVolume, load_volumes, realdata_dir, write_fold

FRANGI_SIGMAS_UM = (1.0, 2.0, 4.0, 8.0, 16.0)  # vessel scales in um, converted to pixels per volume
TOLERANCE_UM = 2.0


def vesselseg(*args: str, cwd: Path) -> str:
    env = {**os.environ, "VESSELSEG_PROGRESS": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "vesselseg.cli", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"vesselseg {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def frangi_response(volume: RealVolume) -> np.ndarray:
    """Frangi vesselness per z-slice (bright ridges), scaled by its 99.9th percentile."""
    from skimage.filters import frangi

    data = volume.data.astype(np.float32)
    lo, hi = np.percentile(data, [0.5, 99.5])
    data = np.clip((data - lo) / max(hi - lo, 1e-6), 0, 1)
    sigmas = [s / volume.spacing[1] for s in FRANGI_SIGMAS_UM]
    out = np.stack([frangi(plane, sigmas=sigmas, black_ridges=False) for plane in data])
    scale = np.percentile(out, 99.9)
    return (out / scale if scale > 0 else out).astype(np.float32)


def frangi_threshold(train: list[RealVolume]) -> float:
    """The threshold of the best Dice summed over the training volumes' dense truth."""
    grid = np.geomspace(1e-4, 1.0, 81)
    tp, fp, fn = (np.zeros(grid.size) for _ in range(3))
    for v in train:
        r, t = frangi_response(v).ravel(), v.truth.ravel() > 0
        for i, thr in enumerate(grid):
            p = r >= thr
            tp[i] += np.count_nonzero(p & t)
            fp[i] += np.count_nonzero(p & ~t)
            fn[i] += np.count_nonzero(~p & t)
    return float(grid[int(np.argmax(2 * tp / np.maximum(2 * tp + fp + fn, 1)))])


def frangi_scores(volumes: list[RealVolume], held: int) -> dict[str, float]:
    from vesselseg.metrics import evaluate_pair

    threshold = frangi_threshold([v for i, v in enumerate(volumes) if i != held])
    test = volumes[held]
    pred = (frangi_response(test) >= threshold).astype(np.uint8)
    m = evaluate_pair(pred, test.truth, 0.5, TOLERANCE_UM, spacing=test.spacing, sparse=False)
    return {k: m[k] for k in ("dice", "cldice", "surface_dice", "precision", "recall")} | {
        "threshold": threshold
    }


def train_and_score(fold: Path, labels: str, args: argparse.Namespace) -> dict[str, float]:
    """``vesselseg train`` on ``fold/labels`` (validated on ``fold/val``), then ``evaluate``."""
    sets = [a for item in args.set or [] for a in ("--set", item)]
    extra = [*sets, *(["--max-epochs", str(args.epochs)] if args.epochs else [])]
    model = f"models/{labels}.pt"
    start = time.perf_counter()
    vesselseg(
        "train", "--train-dir", labels, "--val-dir", "val", "--out", model, "--run-name",
        f"{fold.name}-{labels}", "-p", str(ROOT / "params.yaml"), *extra, cwd=fold,
    )  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    metrics = fold / f"metrics-{labels}.json"
    vesselseg(
        "evaluate", "--model", model, "--data-dir", "test", "--pred-dir", f"pred-{labels}",
        "--metrics", str(metrics), "--plots", f"plots-{labels}", "--no-mlflow",
        "--tolerance", str(TOLERANCE_UM), "-p", str(ROOT / "params.yaml"), *sets, cwd=fold,
    )  # fmt: skip
    (volume,) = json.loads(metrics.read_text())["per_volume"].values()
    meta = json.loads((fold / model).with_suffix(".json").read_text())
    scores = {k: volume[k] for k in ("dice", "cldice", "surface_dice", "precision", "recall")}
    return scores | {"threshold": meta["threshold"], "minutes": minutes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="realdata folder (default: $VESSELSEG_REALDATA "
                        "or ../shared/realdata)")  # fmt: skip
    parser.add_argument("--epochs", type=int, help="train.max_epochs (default: params.yaml)")
    parser.add_argument("--quick", action="store_true", help="smoke run: fold 0 on 256^2 "
                        "crops, 1 epoch of 4 crops per volume")  # fmt: skip
    parser.add_argument("--folds", help="held-out volumes, e.g. 0,2 (default all; --quick: 0)")
    parser.add_argument("--labels", default="sparse,dense", help="sparse, dense or both")
    parser.add_argument("--no-frangi", action="store_true", help="skip the Frangi baseline")
    parser.add_argument("--set", action="append", help="extra train/evaluate --set KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sparse boxes")
    parser.add_argument("--work", type=Path, help="work folder (default: a new temporary one)")
    args = parser.parse_args()
    folder = realdata_dir(args.data)
    if folder is None:
        print("no real volumes (set $VESSELSEG_REALDATA or --data): skipped")
        return
    if args.quick:
        args.epochs = args.epochs or 1
        args.set = ["data.samples_per_volume=4", *(args.set or [])]
    args.folds = args.folds or ("0" if args.quick else "0,1,2")
    volumes = load_volumes(folder, crop=(256, 256) if args.quick else None)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-real-"))
    labels = [s for s in args.labels.split(",") if s]
    rows, results = [], {}
    for held in (int(f) for f in args.folds.split(",")):
        fold = work / f"fold-{volumes[held].id}"
        info = write_fold(volumes, held, fold, args.seed)
        for name in labels:
            results[(held, name)] = train_and_score(fold, name, args)
            print(f"{volumes[held].id} {name}: {json.dumps(results[(held, name)])}", flush=True)
        if not args.no_frangi:
            results[(held, "frangi")] = frangi_scores(volumes, held)
            print(f"{volumes[held].id} frangi: {json.dumps(results[(held, 'frangi')])}", flush=True)
        results[(held, "info")] = info
    methods = [*labels, *([] if args.no_frangi else ["frangi"])]
    folds = sorted({h for h, _ in results})
    for method in methods:
        cells = [results[(h, method)] for h in folds]
        for h, r in zip(folds, cells):
            ratio = ""
            if method == "sparse" and (h, "dense") in results:
                ratio = f"{r['dice'] / results[(h, 'dense')]['dice']:.2f}"
            rows.append(_row(volumes[h].id, method, r, ratio))
        mean = {k: float(np.mean([c[k] for c in cells])) for k in cells[0]}
        ratio = ""
        if method == "sparse" and "dense" in methods:
            dense = np.mean([results[(h, "dense")]["dice"] for h in folds])
            ratio = f"{mean['dice'] / dense:.2f}"
        rows.append(_row("mean", method, mean, ratio))
    fractions = [results[(h, "info")]["annotated_fraction"] for h in folds]
    print_table(
        f"Held-out real volumes: sparse boxes ({100 * np.mean(fractions):.2f} % of the training "
        f"voxels) vs dense labels vs Frangi; tau = {TOLERANCE_UM:g} um (work folder {work})",
        ["held out", "labels", "Dice", "clDice", "surface Dice", "precision", "recall",
         "threshold", "sparse/dense", "train min"],
        rows,
    )  # fmt: skip


def _row(volume: str, method: str, r: dict[str, float], ratio: str) -> list[object]:
    minutes = f"{r['minutes']:.1f}" if "minutes" in r else "-"
    return [
        volume, method, f"{r['dice']:.3f}", f"{r['cldice']:.3f}", f"{r['surface_dice']:.3f}",
        f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['threshold']:.3g}", ratio, minutes,
    ]  # fmt: skip


if __name__ == "__main__":
    main()
