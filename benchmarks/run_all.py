"""Run every benchmark in this folder, one after the other: python benchmarks/run_all.py"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARGS = {"bench_real.py": ["--quick"]}  # the full real-data run takes hours on 2 cores

if __name__ == "__main__":
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {script.name}", flush=True)
        subprocess.run([sys.executable, str(script), *ARGS.get(script.name, [])], check=True)
