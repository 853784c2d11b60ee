"""Synthetic volume generation speed (goal: 256^3 in < 20 s on 2 cores) and peak memory.

Run: python benchmarks/bench_synth.py [--sizes 128 256]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import print_table  # noqa: E402

CHILD = """
import sys, time, resource
from vesselseg.config import SynthConfig
from vesselseg.synth import synthesize_dataset
n = int(sys.argv[1])
cfg = SynthConfig(shape=[n, n, n], n_train=1, n_val=0, n_test=0, n_unlabelled=0)
start = time.perf_counter()
synthesize_dataset(cfg, sys.argv[2])
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(n), tmp],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
        seconds, rss_kib = float(out[0]), int(out[1])
        rows.append(
            [
                f"{n}^3",
                f"{seconds:.1f}",
                f"{n**3 / seconds / 1e6:.2f}",
                f"{rss_kib / 1024:.0f}",
                "< 20 s" if n == 256 else "",
            ]
        )
    print_table(
        "vesselseg synth: one volume (image + truth + mask)",
        ["size", "seconds", "Mvox/s", "peak RSS MiB", "goal"],
        rows,
    )


if __name__ == "__main__":
    main()
