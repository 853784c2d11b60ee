"""How much the demo's test Dice moves with the seed and the torch thread count.

Runs the real DVC pipeline (this repository's dvc.yaml and params.yaml, `dvc repro` in a
scratch copy) once per (train.seed, threads) pair and prints each model's test Dice, then the
mean, standard deviation and range per model:

    python benchmarks/bench_demo.py                          # seeds 0 1 2 x threads 1 2
    python benchmarks/bench_demo.py --seeds 0 1 --threads 2  # fewer runs
    python benchmarks/bench_demo.py --until compare_stage1   # stage 1 only (much faster)
    python benchmarks/bench_demo.py --set model.norm=group   # a params.yaml key changed

Each full pipeline takes ~12 min on 2 cores; runs go one after the other. The synthetic data
(synth.seed) stays the same: only training randomness and float reduction order change.
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
from collections.abc import Sequence
from pathlib import Path

from _table import print_table

ROOT = Path(__file__).resolve().parents[1]
METRICS = {  # model -> metrics file written by the pipeline
    "stage 1": "metrics/stage1.json",
    "stage 2": "metrics.json",
    "2D multiview": "metrics/multiview.json",
    "ensemble": "metrics/ensemble.json",
}


def set_param(params: Path, key: str, value: str) -> None:
    """Rewrite ``section.key`` (a top-level key of a section) in a params.yaml, keeping its
    comments and every other key; a key that is not there is an error."""
    want_section, _, want_key = key.partition(".")
    section, out, found = None, [], False
    for line in params.read_text().splitlines(keepends=True):
        if line[:1].isalpha() and line.rstrip().endswith(":"):
            section = line.strip()[:-1]
        if section == want_section and line.startswith(f"  {want_key}:"):
            line, found = f"  {want_key}: {value}\n", True
        out.append(line)
    if not found:
        raise SystemExit(f"--set {key}: no such key in params.yaml")
    params.write_text("".join(out))


def run_pipeline(seed: int, threads: int, until: str | None, settings: Sequence[str] = ()) -> dict:
    """Test Dice per model of one `dvc repro` with train.seed = seed and `threads` threads."""
    work = Path(tempfile.mkdtemp(prefix=f"demo-s{seed}-t{threads}-"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, work / name)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(VESSELSEG_PROGRESS="0", MLFLOW_DISABLE_TELEMETRY="true", DVC_NO_ANALYTICS="1")

    def sh(*args: str) -> None:
        subprocess.run(args, cwd=work, env=env, check=True, capture_output=True, text=True)

    sh(str(bin_dir / "dvc"), "init", "--no-scm", "-q")
    sh(str(bin_dir / "dvc"), "config", "core.analytics", "false")
    set_param(work / "params.yaml", "train.seed", str(seed))  # synth.seed stays: same data
    for setting in settings:
        key, _, value = setting.partition("=")
        set_param(work / "params.yaml", key, value)
    start = time.perf_counter()
    repro = [str(bin_dir / "dvc"), "repro", "-q"] + ([until] if until else [])
    result = subprocess.run(repro, cwd=work, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"dvc repro failed in {work}:\n{result.stdout}\n{result.stderr}")
    minutes = (time.perf_counter() - start) / 60
    detail = {}
    for model, rel in METRICS.items():
        path = work / rel
        if path.is_file():
            metrics = json.loads(path.read_text())
            detail[model] = {"threshold": metrics.get("threshold"), **metrics["overall"]}
    dice = {model: d["dice"] for model, d in detail.items()}
    shutil.rmtree(work, ignore_errors=True)
    return {"seed": seed, "threads": threads, "minutes": minutes, "dice": dice, "detail": detail}


def threshold_text(value: float | None) -> str:
    """A threshold as written in params (0.425, not 0.42500000000000004)."""
    return "n/a" if value is None else f"{value:.4g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--until", help="dvc stage to stop at (e.g. compare_stage1)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a params.yaml key in every run (e.g. model.norm=group)",
    )
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        for threads in args.threads:
            r = run_pipeline(seed, threads, args.until, args.settings)
            results.append(r)
            shown = ", ".join(
                f"{m} {d:.3f} (threshold {threshold_text(r['detail'][m]['threshold'])})"
                for m, d in r["dice"].items()
            )
            print(f"seed {seed}, {threads} thread(s): {shown} ({r['minutes']:.1f} min)", flush=True)
    models = [m for m in METRICS if all(m in r["dice"] for r in results)]
    rows = []
    for m in models:
        values = [r["dice"][m] for r in results]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(
            [
                m,
                f"{statistics.mean(values):.3f} ± {sd:.3f}",
                f"{min(values):.3f}–{max(values):.3f}",
                f"{max(values) - min(values):.3f}",
            ]  # fmt: skip
        )
    runs = f"{len(args.seeds)} seeds x threads {args.threads}"
    print_table(f"Demo test Dice over {runs}", ["model", "mean ± sd", "range", "spread"], rows)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
