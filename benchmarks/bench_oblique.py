"""Does training the 2.5D multiview model on oblique slabs (``model.oblique``) help?

Renders the demo's synthetic data once (params.yaml's ``synth`` section), plans it, then trains
the multiview model (``vesselseg train --multiview``, the demo's settings) with axis-aligned and
with oblique slabs at several seeds, and evaluates each on the test volumes (``vesselseg
evaluate``, threshold from the validation volumes). Prints test Dice and clDice per run and the
mean per setting:

    python benchmarks/bench_oblique.py                        # seeds 0 1, tilt 30°
    python benchmarks/bench_oblique.py --seeds 0 --epochs 4   # a quick look
    python benchmarks/bench_oblique.py --max-deg 45

Everything runs through the real CLI in a scratch folder; nothing in the repository changes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _table import print_table

ROOT = Path(__file__).resolve().parents[1]


def vesselseg(work: Path, *args: str) -> None:
    env = {**os.environ, "VESSELSEG_PROGRESS": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "vesselseg.cli", *args]
    subprocess.run(cmd, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)


def train_and_score(work: Path, seed: int, tilt: float | None, epochs: int | None) -> dict:
    name = f"s{seed}-{'oblique' if tilt else 'axis'}"
    sets = ["-s", f"model.oblique={'true' if tilt else 'false'}"]
    if tilt:
        sets += ["-s", f"model.oblique_max_deg={tilt}"]
    if epochs:
        sets += ["-s", f"multiview.max_epochs={epochs}"]
    start = time.perf_counter()
    vesselseg(
        work, "train", "--multiview", "--plan", "plans.json", "--seed", str(seed),
        "--out", f"models/{name}.pt", "--run-name", name, *sets,
    )  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    vesselseg(
        work, "evaluate", "--model", f"models/{name}.pt", "--data-dir", "data/raw/test",
        "--val-dir", "data/raw/val", "--pred-dir", f"predictions/{name}",
        "--metrics", f"metrics/{name}.json", "--no-mlflow",
    )  # fmt: skip
    metrics = json.loads((work / f"metrics/{name}.json").read_text())
    summary = metrics["overall"]
    return {"dice": summary["dice"], "cldice": summary["cldice"], "minutes": minutes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max-deg", type=float, default=30.0)
    parser.add_argument("--epochs", type=int, default=None, help="multiview.max_epochs")
    parser.add_argument("--only", choices=["axis", "oblique"], help="train one setting only")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-oblique-"))
    print(f"scratch folder: {work}", flush=True)
    try:
        shutil.copy(ROOT / "params.yaml", work / "params.yaml")
        vesselseg(work, "synth", "data/raw")
        vesselseg(work, "prepare", "--out", "data/prepared.json", "--plan-out", "plans.json")
        rows, by_setting = [], {}
        tilts = {"axis": [None], "oblique": [args.max_deg]}.get(args.only, [None, args.max_deg])
        for tilt in tilts:
            setting = f"oblique ≤{args.max_deg:g}°" if tilt else "axis-aligned"
            for seed in args.seeds:
                r = train_and_score(work, seed, tilt, args.epochs)
                print(setting, seed, r, flush=True)
                by_setting.setdefault(setting, []).append(r["dice"])
                rows.append(
                    [setting, seed, f"{r['dice']:.3f}", f"{r['cldice']:.3f}", f"{r['minutes']:.1f}"]
                )
        for setting, dice in by_setting.items():
            sd = statistics.stdev(dice) if len(dice) > 1 else 0.0
            rows.append([setting, "mean", f"{statistics.mean(dice):.3f} ± {sd:.3f}", "", ""])
        print_table(
            "2.5D multiview model, demo data: test Dice with axis-aligned vs oblique slabs",
            ["training slabs", "seed", "Dice", "clDice", "train min"],
            rows,
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
