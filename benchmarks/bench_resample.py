"""What resampling to the model's voxel size costs at inference.

A model trained at 1 µm predicts a ``N^3`` float32 volume (default 128³) recorded at 0.5 µm:

* ``resampled``: the default - the input is viewed at the model's spacing (a ``(N/2)^3`` grid,
  1/8 of the network work), predicted there and the probabilities resampled back to ``N^3``;
* ``--no-resample``: the same input predicted on its own grid (``N^3`` network work);
* ``model grid only``: a ``(N/2)^3`` volume at the model's spacing, no resampling: the same
  network work as ``resampled``, so the difference is the resampling's cost.

Reported: wall time, the process's CPU time (less sensitive to other load on the machine),
network time, time inside the interpolation (both ways; the input's runs in the read-ahead
thread, overlapping the network), the write-back pass (model grid to the input's grid:
interpolation, probabilities and mask written), the resampling work as a share of the
resampled run, and the wall/CPU time over the model grid alone,
``(t_resampled - t_model_grid) / t_resampled``.
The two fast cases run ``--repeat`` times, interleaved (``--no-resample``: ``--repeat-slow``),
and the fastest run of each is shown: on a shared machine the wall times of single runs of the
same work differ by 2-3x, and the minimum is the figure that repeats.

Run: python benchmarks/bench_resample.py [--size 128] [--repeat 10] [--tile 48]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=10, help="runs of the two fast cases")
    parser.add_argument("--repeat-slow", type=int, default=1, help="runs of --no-resample")
    parser.add_argument("--tile", type=int, default=48)
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    args = parser.parse_args()

    import torch

    from vesselseg.bundle import ModelMeta, save_bundle
    from vesselseg.config import InferConfig, ModelConfig, params_to_dict
    from vesselseg.inference.run import (
        PredictOptions,
        VolumeResult,
        predict_volume,
        prepare_model,
    )
    from vesselseg.io.sidecar import write_sidecar
    from vesselseg.models import build_model

    root = Path(tempfile.mkdtemp(prefix="bench_resample_"))
    torch.manual_seed(0)
    cfg = ModelConfig(name="unet", base_channels=args.base_channels, depth=args.depth)
    meta = ModelMeta(model=params_to_dict(cfg), spacing=[1.0, 1.0, 1.0], unit="um")
    model_path = save_bundle(root / "m.pt", build_model(cfg).state_dict(), meta)
    infer = InferConfig(tile_size=args.tile)
    prepared = prepare_model(model_path, infer, device="cpu")  # trained at 1 um

    n, half = args.size, args.size // 2
    rng = np.random.default_rng(0)
    fine = root / "fine.npy"
    np.save(fine, rng.normal(100, 20, (n, n, n)).astype(np.float32))
    write_sidecar(fine, {"spacing": [0.5, 0.5, 0.5], "unit": "um"})
    coarse = root / "coarse.npy"
    np.save(coarse, rng.normal(100, 20, (half, half, half)).astype(np.float32))
    write_sidecar(coarse, {"spacing": [1.0, 1.0, 1.0], "unit": "um"})

    cases = {
        f"resampled ({n}^3 at 0.5 um -> {half}^3)": (fine, True),
        f"--no-resample ({n}^3 network work)": (fine, False),
        f"model grid only ({half}^3 at 1 um)": (coarse, True),
    }
    best: dict[str, VolumeResult] = {}
    cpu_best: dict[str, float] = {}
    for rep in range(args.repeat):
        for i, (label, (path, resample)) in enumerate(cases.items()):
            if not resample and rep >= args.repeat_slow:
                continue
            opts = PredictOptions(
                cfg=dataclasses.replace(infer, resample=resample),
                save_dir=root / f"out{rep}_{i}",
                show_progress=False,
            )
            cpu = time.process_time()
            result = predict_volume(path.name, path, prepared, opts)
            cpu = time.process_time() - cpu
            if label not in best or result.seconds < best[label].seconds:
                best[label] = result
            cpu_best[label] = min(cpu, cpu_best.get(label, cpu))
    labels = list(cases)
    t_resampled = best[labels[0]].seconds
    t_grid = best[labels[2]].seconds
    rows = []
    for label in labels:
        r = best[label]
        rows.append(
            [
                label,
                f"{r.seconds:.2f}",
                f"{cpu_best[label]:.2f}",
                f"{r.forward_seconds:.2f}",
                f"{r.resample_seconds:.2f}",
                f"{r.write_back_seconds:.2f}",
                f"{100 * r.resample_seconds / r.seconds:.1f}%",
                f"{r.peak_buffer_bytes / 2**20:.1f}",
            ]
        )
    print_table(
        f"Inference of a {n}^3 volume at half the model's voxel size "
        f"(unet base {args.base_channels} depth {args.depth}, tile {args.tile}, CPU, "
        f"{torch.get_num_threads()} threads, best of {args.repeat})",
        [
            "case",
            "seconds",
            "CPU s",
            "network s",
            "interpolation s",
            "write-back s",
            "interp. share",
            "buffers MiB",
        ],
        rows,
    )
    overhead = 100 * (t_resampled - t_grid) / t_resampled
    c_resampled, c_grid = cpu_best[labels[0]], cpu_best[labels[2]]
    cpu_overhead = 100 * (c_resampled - c_grid) / c_resampled
    speedup = best[labels[1]].seconds / t_resampled
    r = best[labels[0]]
    work = r.resample_seconds + r.write_back_seconds  # counts the way back's interpolation twice
    print(
        f"\nresampling work (interpolation both ways + the write-back pass): at most "
        f"{work:.3f} s = {100 * work / r.seconds:.1f}% of the resampled run; wall time vs the "
        f"model grid alone: {overhead:+.1f}% ({t_resampled:.2f} s vs {t_grid:.2f} s; CPU time "
        f"{cpu_overhead:+.1f}%, {c_resampled:.2f} s vs {c_grid:.2f} s); the resampled run is "
        f"{speedup:.1f}x faster than --no-resample"
    )


if __name__ == "__main__":
    main()
