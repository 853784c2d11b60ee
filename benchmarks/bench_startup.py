"""How long `vesselseg --help` takes (goal < 0.5 s) and what each heavy import would cost.

Run: python benchmarks/bench_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import print_table  # noqa: E402


def timed(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    exe = shutil.which("vesselseg") or str(Path(sys.executable).parent / "vesselseg")
    rows = [["vesselseg --help", f"{timed([exe, '--help'], args.repeat):.3f}", "< 0.5"]]
    rows.append(["python -c pass", f"{timed([sys.executable, '-c', 'pass'], args.repeat):.3f}", ""])
    for module in ["numpy", "torch", "pytorch_lightning", "mlflow", "monai", "optuna"]:
        rows.append(
            [f"import {module}", f"{timed([sys.executable, '-c', f'import {module}'], 1):.3f}", ""]
        )
    print_table("CLI start-up (median wall seconds)", ["what", "seconds", "goal"], rows)


if __name__ == "__main__":
    main()
