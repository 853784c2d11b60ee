"""Scale robustness: a model trained at 1 um, tested on the same kind of vessels at 0.5, 1, 2 um.

    python benchmarks/bench_scale.py            # trains the demo 3D U-Net (~6 min on 2 cores)
    python benchmarks/bench_scale.py --model models/stage1.pt   # reuse a model trained at 1 um

The test volumes are rendered by `vesselseg synth --spacing S` from the same seeds and the
same physical extent (96 um), so they hold the same vessel trees on grids of 192³, 96³ and 48³
voxels. Each is predicted twice, resampled to the model's voxel size (the default) and as it is
(`--no-resample`), and scored against its dense truth: Dice per spacing, the drop from the
training spacing, and the time per volume.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model trained at 1 um (default: train one)")
    parser.add_argument("--n-test", type=int, default=2, help="test volumes per spacing")
    parser.add_argument("--seed", type=int, default=100, help="synth seed of the test volumes")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    params = ["-p", str(ROOT / "params.yaml")]
    model = args.model.resolve() if args.model else None
    if model is None:
        vesselseg("synth", "data/raw", *params, cwd=work)
        start = time.perf_counter()
        vesselseg("train", "--out", "model.pt", "--run-name", "bench-scale", *params, cwd=work)
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
            out = work / "pred" / f"{folder}-{'r' if resample else 'n'}"
            flag = [] if resample else ["--no-resample"]
            start = time.perf_counter()
            vesselseg("predict", f"{folder}/test", "--model", str(model), "--out-dir", str(out),
                      *flag, *params, cwd=work)  # fmt: skip
            seconds = (time.perf_counter() - start) / args.n_test
            metrics = work / f"{folder}-{tag.replace(' ', '')}.json"
            vesselseg("evaluate", "--model", str(model), "--data-dir", f"{folder}/test",
                      "--pred-dir", str(out), "--metrics", str(metrics), "--plots",
                      str(work / "plots" / out.name), "--no-mlflow", *params,
                      "--set", f"infer.resample={str(resample).lower()}", cwd=work)  # fmt: skip
            value = json.loads(metrics.read_text())["overall"]["dice"]
            dice[(spacing, resample)] = value
            rows.append([f"{spacing:g} um ({size}³)", tag, f"{value:.3f}", f"{seconds:.1f}"])
    base = dice[(1.0, True)]
    for row, key in zip(rows, dice):
        row.insert(3, f"{dice[key] - base:+.3f}")
    print_table(
        f"Dice of a 1 um model on the same vessels at other voxel sizes (work folder {work})",
        ["test spacing", "input", "Dice", "vs 1 um", "s/volume"],
        rows,
    )


if __name__ == "__main__":
    main()
