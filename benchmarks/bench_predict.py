"""Streamed prediction vs MONAI ``sliding_window_inference``: speed, peak memory, overhead.

For each cube size N (a float32 ``N^3`` .npy volume) and the same model, tile, overlap, batch
and Gaussian blending, three child processes are timed separately (peak RSS per process from
``resource.getrusage``):

* ``ours``: ``vesselseg.inference.run.predict_path`` end to end (percentiles, streamed
  prediction, probabilities + mask written to .npy);
* ``monai``: the same steps the common way: ``np.load`` the whole volume, normalise it with the
  same percentiles, ``sliding_window_inference(..., mode="gaussian")`` with
  ``sigmoid(net(x))`` on the network as built (``--monai-net optimized`` gives MONAI our
  BatchNorm-folded, channels-last network instead), ``np.save`` probabilities + mask;
* ``forward``: only the network calls on the same number and size of batches as ``ours``
  (our prepared network) - the floor for (c), our overhead over pure compute.

Goals: (a) ours >= 1.2x MONAI's voxels/s; (b) our peak RSS grows < 15 % from the smallest to
the largest size; (c) ours <= 1.10x the pure forward time. Each measurement runs ``--repeat``
times, interleaved, and the fastest is shown (the build machine is shared and noisy); "net
share" is the fraction of our run spent inside the network, a load-independent view of (c).
Model and volumes are made in child processes too: a child started from a big parent would
report the parent's RSS high-water mark as its own ``ru_maxrss`` (Linux vfork + exec).

Run: python benchmarks/bench_predict.py [--sizes 128 256 512] [--repeat 1]
     [--base-channels 4 --depth 2] [--monai-net optimized] [--skip-forward]
The default sizes (128, 256; ~5 minutes on 2 cores) stop below 512^3, which takes another
~7-12 minutes for the three processes; pass ``--sizes 128 256 512 --repeat 1`` for it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import print_table  # noqa: E402

COMMON = """
import json, resource, sys, time
import numpy as np, torch
args = json.loads(sys.argv[1])
def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

OURS = (
    COMMON
    + """
import vesselseg.models.unet3d  # noqa: F401  (imports MONAI, as the MONAI child does)
from vesselseg.config import InferConfig
from vesselseg.inference.run import predict_path
cfg = InferConfig(tile_size=args["tile"], overlap=args["overlap"], batch_size=args["batch"],
                  blend="gaussian")
start = time.perf_counter()
summary = predict_path(args["volume"], args["model"], args["out"], cfg, device="cpu",
                       show_progress=False)
seconds = time.perf_counter() - start
r = summary.results[0]
print(json.dumps({"seconds": seconds, "rss": rss_mib(), "tiles": r.tiles,
                  "forward_in_run": r.forward_seconds, "buffers": r.peak_buffer_bytes}))
"""
)

MONAI = (
    COMMON
    + """
from monai.inferers import sliding_window_inference
from vesselseg.bundle import build_from_bundle
from vesselseg.data.normalize import compute_stats, normalize
from vesselseg.inference.network import prepare_network
net, meta = build_from_bundle(args["model"])
channels_last = args["monai_net"] == "optimized"
if channels_last:
    net = prepare_network(net, torch.device("cpu"))
start = time.perf_counter()
volume = np.load(args["volume"])
stats = compute_stats(volume, meta.percentiles)
x = torch.from_numpy(normalize(volume, stats.lo, stats.hi))[None, None]
del volume
def predictor(t):
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last_3d)
    return torch.sigmoid(net(t))
with torch.inference_mode():
    prob = sliding_window_inference(x, args["tile"], args["batch"], predictor,
                                    overlap=args["overlap"], mode="gaussian")[0, 0].numpy()
np.save(args["out"] + "/prob.npy", prob)
np.save(args["out"] + "/mask.npy", (prob >= 0.5).astype(np.uint8))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss": rss_mib()}))
"""
)

FORWARD = (
    COMMON
    + """
from vesselseg.inference.loader import load_model
from vesselseg.inference.network import make_predict_fn, prepare_network
net, meta = load_model(args["model"])
device = torch.device("cpu")
fn = make_predict_fn(prepare_network(net, device), device)
tile, batch, n = args["tile"], args["batch"], args["tiles"]
x = torch.randn(batch, 1, *tile)
start = time.perf_counter()
for b in range(0, n, batch):
    fn(x[: min(batch, n - b)])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss": rss_mib()}))
"""
)


def child(code: str, args: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        env={**os.environ, "VESSELSEG_PROGRESS": "0"},
    )
    if out.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


SETUP = """
import json, sys
import numpy as np
args = json.loads(sys.argv[1])
if "volume" in args:  # a float32 n^3 volume of noise, written slab by slab
    n = args["n"]
    out = np.lib.format.open_memmap(args["volume"], mode="w+", dtype=np.float32, shape=(n, n, n))
    rng = np.random.default_rng(0)
    for z in range(0, n, 32):
        out[z : z + 32] = rng.normal(100.0, 20.0, out[z : z + 32].shape).astype(np.float32)
    out.flush()
else:  # the benchmark model, BatchNorm statistics randomised to look trained
    import torch
    from vesselseg.bundle import ModelMeta, save_bundle
    from vesselseg.config import ModelConfig, params_to_dict
    from vesselseg.models import build_model
    torch.manual_seed(0)
    cfg = ModelConfig(name="unet", base_channels=args["base_channels"], depth=args["depth"])
    net = build_model(cfg).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    save_bundle(args["model"], net.state_dict(), ModelMeta(model=params_to_dict(cfg)))
print("{}")
"""


def n_windows(n: int, tile: int, overlap: float) -> int:
    step = max(int(tile * (1 - overlap)), 1) if tile != n else tile
    per_axis = next(d for d in range(math.ceil(n / step)) if d * step + tile >= n) + 1
    return per_axis**3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--base-channels", type=int, default=4)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--monai-net", choices=["plain", "optimized"], default="plain")
    parser.add_argument("--skip-forward", action="store_true", help="Skip (c).")
    parser.add_argument("--repeat", type=int, default=2, help="Runs of each; the fastest is shown.")
    args = parser.parse_args()

    rows, mem = [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = tmp / "bench.pt"
        child(
            SETUP, {"model": str(model), "base_channels": args.base_channels, "depth": args.depth}
        )
        for n in args.sizes:
            volume = tmp / f"vol{n}.npy"
            child(SETUP, {"volume": str(volume), "n": n})
            common = {
                "model": str(model),
                "volume": str(volume),
                "tile": [args.tile] * 3,
                "overlap": args.overlap,
                "batch": args.batch,
                "monai_net": args.monai_net,
                "tiles": n_windows(n, args.tile, args.overlap),
            }
            runs: dict[str, list[dict]] = {"ours": [], "monai": [], "forward": []}
            for _ in range(args.repeat):  # interleaved, so load bursts hit all alike
                for name, code in (("ours", OURS), ("monai", MONAI), ("forward", FORWARD)):
                    if name == "forward" and args.skip_forward:
                        continue
                    out = tmp / name
                    out.mkdir()
                    for stale in tmp.glob("*.stats.json"):
                        stale.unlink()
                    runs[name].append(child(code, {**common, "out": str(out)}))
                    shutil.rmtree(out)
            best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items() if v}
            rss = {k: max(r["rss"] for r in v) for k, v in runs.items() if v}
            ours, monai, fwd = best["ours"], best["monai"], best.get("forward")
            vox = n**3
            rows.append(
                [
                    f"{n}^3",
                    ours["tiles"],
                    f"{vox / ours['seconds'] / 1e6:.2f}",
                    f"{vox / monai['seconds'] / 1e6:.2f}",
                    f"{monai['seconds'] / ours['seconds']:.2f}x",
                    f"{ours['seconds']:.1f}",
                    f"{fwd['seconds']:.1f}" if fwd else "-",
                    f"{100 * (ours['seconds'] / fwd['seconds'] - 1):+.0f}%" if fwd else "-",
                    f"{100 * ours['forward_in_run'] / ours['seconds']:.0f}%",
                ]
            )
            mem.append([f"{n}^3", rss["ours"], rss["monai"], ours["buffers"] / 2**20])
            volume.unlink()
    net = f"UNet3D base {args.base_channels} depth {args.depth}"
    setup = f"tile {args.tile}^3, overlap {args.overlap}, batch {args.batch}, gaussian, CPU"
    print_table(
        f"(a, c) vesselseg predict vs MONAI sliding_window_inference - {net}, {setup}",
        [
            "size",
            "windows",
            "ours Mvox/s",
            "MONAI Mvox/s",
            "ours/MONAI",
            "ours s",
            "forward s",
            "overhead",
            "net share",
        ],
        rows,
    )
    base = mem[0][1]
    print_table(
        "(b) peak RSS per process (MiB, the largest of the repeats); growth vs the smallest size",
        ["size", "ours", "ours growth", "MONAI", "our blend buffers"],
        [
            [m[0], f"{m[1]:.0f}", f"{100 * (m[1] / base - 1):+.1f}%", f"{m[2]:.0f}", f"{m[3]:.1f}"]
            for m in mem
        ],
    )
    print(
        "\ngoals: ours/MONAI >= 1.2x; ours growth < 15 % up to 512^3; overhead <= +10 %"
        f"\nMONAI network: {args.monai_net} (optimized = our BatchNorm-folded, channels-last net)"
        f"\ntimes: fastest of {args.repeat} interleaved runs; each run is its own process"
    )


if __name__ == "__main__":
    main()
