"""Streamed prediction vs MONAI ``sliding_window_inference`` on the same network.

For each cube size N (a float32 ``N^3`` .npy volume of noise), the same model, tile, overlap,
batch and Gaussian blending, these child processes are timed separately (peak RSS of each
from ``resource.getrusage``; on CUDA also the peak allocated device memory):

* ``ours``: ``vesselseg.inference.run.predict_path`` end to end (percentiles, streamed
  prediction with the weighted sums on the device and a writer thread, probabilities + mask
  written to .npy);
* ``monai``: the same steps the common way: ``np.load`` the whole volume, normalise it with the
  same percentiles, ``sliding_window_inference(..., mode="gaussian")`` (input and output on
  the device), ``np.save`` probabilities + mask. MONAI is given *our* prepared network and
  predict function (BatchNorm folded, channels-last on the CPU, the same autocast): the same
  network, so the comparison is of the engines;
* ``monai-plain`` (``--monai-plain``): MONAI with ``sigmoid(net(x))`` on the network as built
  (what a MONAI user gets without our preparation) - an extra, unfair column;
* ``forward``: only the predict-function calls on the same number and size of batches as
  ``ours`` (random input), the first call's set-up included as in the other two: the floor
  for our overhead.

``ours`` and ``monai`` are both timed from the model file to the outputs on disk (ours
prepares the network inside ``predict_path``; MONAI's child prepares it inside its timer).

Each measurement runs ``--repeat`` times (at least 2), interleaved and in a rotating order so
load bursts hit all alike, and the fastest is shown (the build machine is shared and noisy).

``--half-empty N`` (default: the smallest size; 0: off) also predicts an ``N^3`` volume whose
upper half along x is 0 (air) with ``--tissue-threshold 1`` (``infer.skip_empty``): windows
that lie entirely in the empty half are not computed, MONAI computes them all. Our time
without skipping is the main table's at that size (it does not depend on the voxel values),
measured separately when N is not one of ``--sizes``.

Goals on the CPU: ours >= MONAI's speed with the same network, overhead <= +5 %, our peak RSS
growing < 15 % from 128^3 to 512^3; on a GPU >= 1.2x MONAI; half empty >= 1.6x MONAI.

Run: python benchmarks/bench_predict.py [--sizes 128 256] [--repeat 2] [--device cpu|cuda]
     [--model unet|vnet] [--base-channels 8 --depth 3] [--norm batch|group] [--tile 48]
     [--batch 2] [--precision 32|bf16|fp16] [--monai-plain] [--half-empty 128] [--skip-forward]
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
device = torch.device(args["device"])
def report(**kw):
    kw["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kw["gpu"] = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
    print(json.dumps(kw))
def prepared():
    from vesselseg.bundle import build_from_bundle
    from vesselseg.inference.network import make_predict_fn, prepare_network
    net, meta = build_from_bundle(args["model"])
    fn = make_predict_fn(prepare_network(net, device), device, precision=args["precision"])
    return fn, meta
"""

OURS = (
    COMMON
    + """
import vesselseg.models.unet3d  # noqa: F401  (imports MONAI, as the MONAI child does)
from vesselseg.config import InferConfig
from vesselseg.inference.run import predict_path
cfg = InferConfig(tile_size=args["tile"], overlap=args["overlap"], batch_size=args["batch"],
                  blend="gaussian", precision=args["precision"],
                  tissue_threshold=args.get("tissue_threshold"))
start = time.perf_counter()
summary = predict_path(args["volume"], args["model"], args["out"], cfg, device=args["device"],
                       show_progress=False)
seconds = time.perf_counter() - start
r = summary.results[0]
report(seconds=summary.seconds, total_seconds=seconds, tiles=r.tiles, skipped=r.empty_windows,
       forward_in_run=r.forward_seconds, buffers=r.peak_buffer_bytes)
"""
)

MONAI = (
    COMMON
    + """
from monai.inferers import sliding_window_inference
from vesselseg.data.normalize import compute_stats, normalize
start = time.perf_counter()  # from the model file, as ours (which prepares it in the run)
if args["plain"]:
    from vesselseg.bundle import build_from_bundle
    net, meta = build_from_bundle(args["model"])
    net = net.eval().to(device)
    predictor = lambda t: torch.sigmoid(net(t))
else:
    predictor, meta = prepared()
volume = np.load(args["volume"])
stats = compute_stats(volume, meta.percentiles)
x = torch.from_numpy(normalize(volume, stats.lo, stats.hi))[None, None].to(device)
del volume
with torch.inference_mode():
    prob = sliding_window_inference(x, args["tile"], args["batch"], predictor,
                                    overlap=args["overlap"], mode="gaussian")
    prob = prob[0, 0].float().cpu().numpy()
np.save(args["out"] + "/prob.npy", prob)
np.save(args["out"] + "/mask.npy", (prob >= 0.5).astype(np.uint8))
report(seconds=time.perf_counter() - start)
"""
)

FORWARD = (
    COMMON
    + """
fn, _ = prepared()
tile, batch, n = args["tile"], args["batch"], args["tiles"]
x = torch.randn(batch, 1, *tile)
if device.type == "cuda":
    torch.cuda.synchronize()
start = time.perf_counter()  # the first call's set-up is network time too, as in the others
for b in range(0, n, batch):
    fn(x[: min(batch, n - b)])
if device.type == "cuda":
    torch.cuda.synchronize()
report(seconds=time.perf_counter() - start)
"""
)

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
        if args.get("half_empty"):
            out[z : z + 32, :, n // 2 :] = 0.0
    out.flush()
else:  # the benchmark model, BatchNorm statistics randomised to look trained
    import torch
    from vesselseg.bundle import ModelMeta, save_bundle
    from vesselseg.config import ModelConfig, params_to_dict
    from vesselseg.models import build_model
    torch.manual_seed(0)
    cfg = ModelConfig(
        name=args["name"], base_channels=args["base_channels"], depth=args["depth"],
        norm=args["norm"],
    )
    net = build_model(cfg).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    save_bundle(args["model"], net.state_dict(), ModelMeta(model=params_to_dict(cfg)))
print("{}")
"""


def child(code: str, args: dict, nice: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        env={**os.environ, "VESSELSEG_PROGRESS": "0"},
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )
    if out.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def n_windows(n: int, tile: int, overlap: float) -> int:
    step = max(int(tile * (1 - overlap)), 1) if tile != n else tile
    per_axis = next(d for d in range(math.ceil(n / step)) if d * step + tile >= n) + 1
    return per_axis**3


def measure(variants: dict[str, tuple[str, dict]], repeat: int, tmp: Path, nice: int) -> dict:
    """Run each variant ``repeat`` times, interleaved in a rotating order; the fastest of each
    (peak memory: the largest)."""
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            code, args = variants[name]
            out = tmp / name
            out.mkdir()
            for stale in tmp.glob("*.stats.json"):
                stale.unlink()
            runs[name].append(child(code, {**args, "out": str(out)}, nice))
            shutil.rmtree(out)
    best = {}
    for name, results in runs.items():
        best[name] = dict(min(results, key=lambda x: x["seconds"]))
        best[name]["rss"] = max(x["rss"] for x in results)
        best[name]["gpu"] = max(x["gpu"] for x in results)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--tile", type=int, default=48)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--model", choices=["unet", "vnet"], default="unet")
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument(
        "--norm",
        choices=["batch", "group"],
        default="batch",
        help="batch (folded into the convolutions by both engines) or group",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["32", "bf16", "fp16"], default="32")
    parser.add_argument("--monai-plain", action="store_true", help="Add MONAI on the plain net.")
    parser.add_argument("--half-empty", type=int, default=None, help="Size; 0: off.")
    parser.add_argument("--skip-forward", action="store_true", help="Skip the forward floor.")
    parser.add_argument("--repeat", type=int, default=2, help="Runs of each (>= 2).")
    parser.add_argument("--nice", type=int, default=0, help="Niceness of the children.")
    args = parser.parse_args()
    repeat = max(args.repeat, 2)
    half = min(args.sizes) if args.half_empty is None else args.half_empty
    cuda = args.device == "cuda"

    rows, mem, sized = [], [], {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = tmp / "bench.pt"
        setup = {"model": str(model), "name": args.model, "depth": args.depth, "norm": args.norm}
        child(SETUP, {**setup, "base_channels": args.base_channels}, 0)
        base = {
            "model": str(model),
            "tile": [args.tile] * 3,
            "overlap": args.overlap,
            "batch": args.batch,
            "device": args.device,
            "precision": args.precision,
            "plain": False,
        }
        for n in args.sizes:
            volume = tmp / f"vol{n}.npy"
            child(SETUP, {"volume": str(volume), "n": n}, 0)
            common = {**base, "volume": str(volume), "tiles": n_windows(n, args.tile, args.overlap)}
            variants = {"ours": (OURS, common), "monai": (MONAI, common)}
            if args.monai_plain:
                variants["monai-plain"] = (MONAI, {**common, "plain": True})
            if not args.skip_forward:
                variants["forward"] = (FORWARD, common)
            best = measure(variants, repeat, tmp, args.nice)
            ours, monai, fwd = best["ours"], best["monai"], best.get("forward")
            plain = best.get("monai-plain")
            rows.append(
                [
                    f"{n}^3",
                    ours["tiles"],
                    f"{ours['seconds']:.1f}",
                    f"{monai['seconds']:.1f}",
                    f"{monai['seconds'] / ours['seconds']:.2f}x",
                    f"{plain['seconds'] / ours['seconds']:.2f}x" if plain else "-",
                    f"{fwd['seconds']:.1f}" if fwd else "-",
                    f"{100 * (ours['seconds'] / fwd['seconds'] - 1):+.0f}%" if fwd else "-",
                    f"{100 * ours['forward_in_run'] / ours['seconds']:.0f}%",
                ]
            )
            mem.append([n, ours, monai])
            sized[n] = ours
            volume.unlink()
        half_row = None
        if half:
            volume = tmp / f"half{half}.npy"
            child(SETUP, {"volume": str(volume), "n": half, "half_empty": True}, 0)
            common = {**base, "volume": str(volume)}
            skip = {**common, "tissue_threshold": 1.0}
            variants = {"ours": (OURS, skip), "monai": (MONAI, common)}
            if half not in args.sizes:  # without skipping, the time does not depend on the data
                variants["ours-all"] = (OURS, common)
            best = measure(variants, repeat, tmp, args.nice)
            best.setdefault("ours-all", sized.get(half, {}))
            half_row = [half, best]
    net = f"{args.model} base {args.base_channels} depth {args.depth}"
    setup_text = (
        f"tile {args.tile}^3, overlap {args.overlap}, batch {args.batch}, gaussian, "
        f"{args.device}, precision {args.precision}"
    )
    print_table(
        f"vesselseg predict vs MONAI sliding_window_inference, same network - {net}, {setup_text}",
        [
            "size",
            "windows",
            "ours s",
            "MONAI s",
            "ours/MONAI",
            "ours/MONAI-plain",
            "forward s",
            "overhead",
            "net share",
        ],
        rows,
    )
    smallest = mem[0][1]["rss"]
    header = ["size", "ours RSS", "ours growth", "MONAI RSS", "our blend buffers"]
    if cuda:
        header += ["ours GPU peak", "MONAI GPU peak"]
    table = []
    for n, ours, monai in mem:
        row = [
            f"{n}^3",
            f"{ours['rss']:.0f}",
            f"{100 * (ours['rss'] / smallest - 1):+.1f}%",
            f"{monai['rss']:.0f}",
            f"{ours['buffers'] / 2**20:.1f}",
        ]
        if cuda:
            row += [f"{ours['gpu']:.0f}", f"{monai['gpu']:.0f}"]
        table.append(row)
    print_table("peak memory per process (MiB, the largest of the repeats)", header, table)
    if half_row is not None:
        n, best = half_row
        ours, every, monai = best["ours"], best["ours-all"], best["monai"]
        print_table(
            f"half-empty {n}^3 volume (x >= {n // 2} is 0), --tissue-threshold 1 (skip_empty)",
            ["windows run", "skipped", "ours s", "ours, no skip s", "MONAI s", "ours/MONAI"],
            [
                [
                    ours["tiles"],
                    ours["skipped"],
                    f"{ours['seconds']:.1f}",
                    f"{every['seconds']:.1f}",
                    f"{monai['seconds']:.1f}",
                    f"{monai['seconds'] / ours['seconds']:.2f}x",
                ]
            ],
        )
    print(
        "\nours/MONAI: MONAI's time / ours (> 1: ours faster); overhead: ours over the pure"
        " forward time of the same batches; net share: our time inside the network"
        f"\ntimes: fastest of {repeat} interleaved runs; each run is its own process"
    )


if __name__ == "__main__":
    main()
