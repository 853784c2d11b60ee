"""Scale robustness: a model trained at 1 um, tested on the same kind of vessels at 0.5, 1, 2 um.

    python benchmarks/bench_scale.py            # trains the demo 3D U-Net (~6 min on 2 cores)
    python benchmarks/bench_scale.py --model models/stage1.pt   # reuse a model trained at 1 um
    python benchmarks/bench_scale.py --no-control    # skip the model trained natively at 2 um
    python benchmarks/bench_scale.py --set data.lowres_factor=2   # train with these settings
    python benchmarks/bench_scale.py --set synth.unlabelled_band=0   # training data's synth

The test volumes are rendered by `vesselseg synth --spacing S` from the same seeds and the
same physical extent (96 um), so they hold the same vessel trees on grids of 192³, 96³ and 48³
voxels. Each is predicted twice, resampled to the model's voxel size (the default) and as it is
(`--no-resample`), and scored against its dense truth: Dice per spacing, the drop from the
training spacing, and the time per volume.

A control separates what a coarser grid loses from what scale robustness can recover: the same
demo 3D U-Net trained natively at 2 um (the training volumes rendered at 2 um from the same
seeds, 48³ voxels for the same 96 um) and tested on the 2 um volumes. Its Dice is what a model
can reach from 2 um voxels at all; the 1 um model resampled should be compared with it, not
only with its own 1 um figure.
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

from _table import print_table

ROOT = Path(__file__).resolve().parents[1]
SPACINGS = (0.5, 1.0, 2.0)
EXTENT = 96  # um per side


def vesselseg(*args: str, cwd: Path) -> str:
    exe = Path(sys.executable).parent / "vesselseg"
    env = {**os.environ, "VESSELSEG_PROGRESS": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"vesselseg {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def predict_and_score(
    work: Path, model: Path, folder: str, name: str, params: list[str], n_test: int,
    resample: bool = True,
) -> tuple[float, float]:  # fmt: skip
    """Predict ``folder/test`` with ``model`` (``--no-resample`` unless ``resample``) into
    ``pred/name`` and score it against its dense truth: (Dice, seconds per volume)."""
    out = work / "pred" / name
    flag = [] if resample else ["--no-resample"]
    start = time.perf_counter()
    vesselseg("predict", f"{folder}/test", "--model", str(model), "--out-dir", str(out),
              *flag, *params, cwd=work)  # fmt: skip
    seconds = (time.perf_counter() - start) / n_test
    metrics = work / f"{name}.json"
    vesselseg("evaluate", "--model", str(model), "--data-dir", f"{folder}/test",
              "--pred-dir", str(out), "--metrics", str(metrics), "--plots",
              str(work / "plots" / name), "--no-mlflow", *params,
              "--set", f"infer.resample={str(resample).lower()}", cwd=work)  # fmt: skip
    return json.loads(metrics.read_text())["overall"]["dice"], seconds


def native_control(
    work: Path, params: list[str], n_test: int, base: float, train_sets: list[str],
    synth_sets: list[str],
) -> list[str]:  # fmt: skip
    """Train the demo U-Net on the training volumes rendered at 2 um and score it on the 2 um
    test volumes: the table row of the control."""
    size = str(round(EXTENT / 2.0))
    vesselseg("synth", "data-2um", "--size", size, "--spacing", "2", *params, *synth_sets,
              cwd=work)  # fmt: skip
    start = time.perf_counter()
    vesselseg("train", "--out", "model-2um.pt", "--run-name", "bench-scale-2um",
              "--train-dir", "data-2um/train", "--val-dir", "data-2um/val", *params,
              *train_sets, cwd=work)  # fmt: skip
    print(f"trained the control at 2 um in {(time.perf_counter() - start) / 60:.1f} min")
    value, seconds = predict_and_score(work, work / "model-2um.pt", "test-2um", "control-2um",
                                       params, n_test)  # fmt: skip
    return [f"2 um ({size}³)", "model trained at 2 um", f"{value:.3f}", f"{value - base:+.3f}",
            f"{seconds:.1f}"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model trained at 1 um (default: train one)")
    parser.add_argument("--n-test", type=int, default=2, help="test volumes per spacing")
    parser.add_argument("--seed", type=int, default=100, help="synth seed of the test volumes")
    parser.add_argument("--no-control", action="store_true", help="skip the native 2 um model")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a training setting (both models), e.g. data.lowres_factor=2; synth.* keys go to"
        " the training data's synth, e.g. synth.unlabelled_band=0",
    )  # fmt: skip
    args = parser.parse_args()
    synth_sets = [item for kv in args.set if kv.startswith("synth.") for item in ("--set", kv)]
    train_sets = [item for kv in args.set if not kv.startswith("synth.") for item in ("--set", kv)]
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    params = ["-p", str(ROOT / "params.yaml")]
    model = args.model.resolve() if args.model else None
    if model is None:
        vesselseg("synth", "data/raw", *params, *synth_sets, cwd=work)
        start = time.perf_counter()
        vesselseg("train", "--out", "model.pt", "--run-name", "bench-scale", *params,
                  *train_sets, cwd=work)  # fmt: skip
        print(f"trained the demo 3D U-Net at 1 um in {(time.perf_counter() - start) / 60:.1f} min")
        model = work / "model.pt"
    rows, dice = [], {}
    for spacing in SPACINGS:
        folder = f"test-{spacing:g}um"
        size = str(round(EXTENT / spacing))
        vesselseg(
            "synth", folder, "--n-train", "0", "--n-val", "0", "--n-unlabelled", "0",
            "--n-test", str(args.n_test), "--size", size, "--spacing", f"{spacing:g}",
            "--seed", str(args.seed), *params, cwd=work,
        )  # fmt: skip
        for resample in (True, False):
            tag = "resampled" if resample else "as is"
            name = f"{folder}-{'r' if resample else 'n'}"
            value, seconds = predict_and_score(work, model, folder, name, params, args.n_test,
                                               resample)  # fmt: skip
            dice[(spacing, resample)] = value
            rows.append([f"{spacing:g} um ({size}³)", tag, f"{value:.3f}", f"{seconds:.1f}"])
    base = dice[(1.0, True)]
    for row, key in zip(rows, dice):
        row.insert(3, f"{dice[key] - base:+.3f}")
    if not args.no_control:
        rows.append(native_control(work, params, args.n_test, base, train_sets, synth_sets))
    print_table(
        f"Dice of a 1 um model on the same vessels at other voxel sizes {' '.join(args.set)}"
        f" (work folder {work})",
        ["test spacing", "input", "Dice", "vs 1 um", "s/volume"],
        rows,
    )


if __name__ == "__main__":
    main()
