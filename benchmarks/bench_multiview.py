"""Inference cost of 2D multiview models against a 3D U-Net, and of a 2D + 3D ensemble.

Each row predicts one random volume with ``vesselseg predict``'s streaming predictor (untrained
models of the demo sizes: 3D U-Net base 8 depth 3; 2.5D U-Net base 16 depth 4, context 3), in
its own process, and reports throughput and peak memory. The 2D model runs slice by slice
along each of its views inside every window, so its cost grows with the number of views.

Run: python benchmarks/bench_multiview.py [--size 96] [--tile 48]
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
import json, sys, time
import numpy as np, torch
from vesselseg.bundle import ModelMeta, save_bundle
from vesselseg.config import InferConfig, ModelConfig, params_to_dict
from vesselseg.inference.ensemble import write_ensemble
from vesselseg.inference.run import peak_rss_mib, predict_path
from vesselseg.models import build_model

kind, size, tile, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
root = __import__("pathlib").Path(folder)

def save(name, cfg):
    torch.manual_seed(0)
    return save_bundle(root / f"{name}.pt", build_model(cfg).state_dict(),
                       ModelMeta(model=params_to_dict(cfg)))

unet3d = ModelConfig(name="unet", base_channels=8, depth=3, norm="batch")  # as measured
views = {"unet2d-z": ["z"], "unet2d-zyx": ["z", "y", "x"]}
if kind == "unet3d":
    model = save("unet3d", unet3d)
elif kind in views:
    model = save(kind, ModelConfig(name="unet2d", base_channels=16, depth=4, views=views[kind]))
else:
    a = save("unet3d", unet3d)
    b = save("unet2d", ModelConfig(name="unet2d", base_channels=16, depth=4))
    model = write_ensemble([(str(a), 1.0), (str(b), 1.0)], root / "ensemble.json")
volume = root / "volume.npy"
np.save(volume, np.random.default_rng(0).normal(100, 20, (size,) * 3).astype(np.float32))
start = time.perf_counter()
summary = predict_path(volume, model, root / "out", InferConfig(tile_size=tile), device="cpu",
                       show_progress=False)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss": peak_rss_mib()}))
"""

KINDS = [
    ("unet3d", "3D U-Net (base 8, depth 3)"),
    ("unet2d-z", "2.5D U-Net, z only (base 16, depth 4)"),
    ("unet2d-zyx", "2.5D U-Net, z + y + x (multiview)"),
    ("ensemble", "ensemble: 3D + multiview 2D"),
]


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--tile", type=int, default=48)
    args = parser.parse_args()
    rows = []
    base = None
    for kind, label in KINDS:
        with tempfile.TemporaryDirectory() as tmp:
            out = (
                subprocess.run(
                    [sys.executable, "-c", CHILD, kind, str(args.size), str(args.tile), tmp],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
        result = json.loads(out)
        seconds = result["seconds"]
        base = base or seconds
        rows.append(
            [
                label,
                f"{seconds:.1f}",
                f"{args.size**3 / seconds / 1e6:.2f}",
                f"{seconds / base:.1f}x",
                f"{result['rss']:.0f}",
            ]
        )
    print_table(
        f"predict one {args.size}^3 volume, {args.tile}^3 windows, overlap 0.25, CPU",
        ["model", "seconds", "Mvox/s", "vs 3D", "peak RSS MiB"],
        rows,
    )


if __name__ == "__main__":
    main()
