"""Out of core: a volume whose input plus outputs exceed a memory cap, ours vs MONAI.

A ``Z x Y x X`` uint16 .npy volume (default 1024 x 512 x 512: 512 MiB of input, 1 GiB of
float32 probabilities and 256 MiB of mask out) is predicted by two child processes under the
same memory cap (default 1 GiB):

* ``ours``: ``vesselseg predict`` as a library call (``predict_path``): the input is memory-
  mapped and read strip by strip, outputs are written cell by cell to memory-mapped files
  whose pages are released as they are written;
* ``monai``: the common way: ``np.load`` the volume, normalise it to float32,
  ``sliding_window_inference`` (which allocates the whole float32 output and weight map), save.

The cap: with ``--cap cgroup`` (or ``auto`` where a cgroup-v2 memory controller is delegated
to this process's cgroup) each child runs in its own child cgroup with ``memory.max`` set
(swap off): it is killed when its memory - RSS and page cache - exceeds the cap. Otherwise
(``rlimit``, and ``auto`` without such a cgroup) ``RLIMIT_DATA`` is set in the child before it
starts Python: the kernel then refuses every private writable mapping (heap, anonymous
``mmap``: what NumPy and torch allocate, and the libraries' data segments - about 500 MiB
for Python with torch and MONAI imported) beyond the cap, while file-backed shared mappings
(our memory-mapped input and outputs) do not count. An allocation beyond it fails with
``MemoryError`` (or torch's ``RuntimeError``) instead of an OOM kill. Peak RSS is each child's
``ru_maxrss`` (``os.wait4``).

Run: python benchmarks/bench_out_of_core.py [--size 1024,512,512] [--cap-mib 1024]
     [--cap auto|cgroup|rlimit] [--tile 64] [--base-channels 4 --depth 2]
Smoke run: python benchmarks/bench_out_of_core.py --size 128,128,128 --cap-mib 700
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import print_table  # noqa: E402

OURS = """
import json, sys, time
args = json.loads(sys.argv[1])
import vesselseg.models.unet3d  # noqa: F401
from vesselseg.config import InferConfig
from vesselseg.inference.run import predict_path
cfg = InferConfig(tile_size=args["tile"], overlap=0.25, batch_size=2, blend="gaussian")
start = time.perf_counter()
s = predict_path(args["volume"], args["model"], args["out"], cfg, device="cpu",
                 show_progress=False, max_buffer_mib=args["buffer_mib"])
print(json.dumps({"seconds": time.perf_counter() - start, "windows": s.results[0].tiles}))
"""

MONAI = """
import json, sys, time
args = json.loads(sys.argv[1])
import numpy as np, torch
from monai.inferers import sliding_window_inference
from vesselseg.bundle import build_from_bundle
from vesselseg.data.normalize import compute_stats, normalize
from vesselseg.inference.network import make_predict_fn, prepare_network
net, meta = build_from_bundle(args["model"])
device = torch.device("cpu")
fn = make_predict_fn(prepare_network(net, device), device)
start = time.perf_counter()
volume = np.load(args["volume"])
stats = compute_stats(volume, meta.percentiles)
x = torch.from_numpy(normalize(volume, stats.lo, stats.hi))[None, None]
del volume
with torch.inference_mode():
    prob = sliding_window_inference(x, args["tile"], 2, fn, overlap=0.25, mode="gaussian")
    prob = prob[0, 0].numpy()
np.save(args["out"] + "/prob.npy", prob)
np.save(args["out"] + "/mask.npy", (prob >= 0.5).astype(np.uint8))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""

SETUP = """
import json, sys
import numpy as np
args = json.loads(sys.argv[1])
if "volume" in args:  # uint16 noise, written slab by slab through a memmap
    shape = tuple(args["shape"])
    out = np.lib.format.open_memmap(args["volume"], mode="w+", dtype=np.uint16, shape=shape)
    rng = np.random.default_rng(0)
    for z in range(0, shape[0], 16):
        part = out[z : z + 16]
        part[:] = rng.normal(1000.0, 200.0, part.shape).clip(0, 65535).astype(np.uint16)
    out.flush()
else:
    import torch
    from vesselseg.bundle import ModelMeta, save_bundle
    from vesselseg.config import ModelConfig, params_to_dict
    from vesselseg.models import build_model
    torch.manual_seed(0)
    cfg = ModelConfig(
        name="unet", base_channels=args["base_channels"], depth=args["depth"], norm="batch"
    )
    save_bundle(args["model"], build_model(cfg).eval().state_dict(),
                ModelMeta(model=params_to_dict(cfg)))
"""


def own_cgroup_v2() -> Path | None:
    """This process's cgroup-v2 directory when its memory controller is delegated to it
    (children can be created and capped), else None."""
    try:
        line = next(x for x in Path("/proc/self/cgroup").read_text().splitlines() if x[:3] == "0::")
    except (OSError, StopIteration):
        return None
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        group = root / line[3:].lstrip("/")
        controls = group / "cgroup.subtree_control"
        try:
            if "memory" in controls.read_text().split() and os.access(group, os.W_OK):
                return group
        except OSError:
            continue
    return None


def run_capped(code: str, args: dict, cap: int, method: str) -> dict:
    """Run ``code`` in a child under ``cap`` bytes; its JSON result (or the error), status,
    peak RSS (MiB) and wall time."""
    group = None
    if method == "cgroup":
        parent = own_cgroup_v2()
        if parent is None:
            raise SystemExit("--cap cgroup: no delegated cgroup-v2 memory controller here")
        group = parent / f"vesselseg-bench-{os.getpid()}-{time.monotonic_ns()}"
        group.mkdir()
        (group / "memory.max").write_text(str(cap))
        if (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")

    def limit() -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))
        else:
            resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
        env={**os.environ, "VESSELSEG_PROGRESS": "0"},
    )
    streams: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda k=k, f=f: streams.__setitem__(k, f.read()))
        for k, f in (("out", child.stdout), ("err", child.stderr))
    ]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
    child.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    out, err = streams["out"], streams["err"]
    wall = time.perf_counter() - start
    rss = usage.ru_maxrss / 1024
    if group is not None:
        group.rmdir()
    if child.returncode == 0:
        return {"ok": True, "rss": rss, "wall": wall, **json.loads(out.strip().splitlines()[-1])}
    lines = [x for x in err.strip().splitlines() if x.strip()]
    if child.returncode < 0:
        why = f"killed by signal {-child.returncode}"
    else:
        why = lines[-1][:90] if lines else f"exit {child.returncode}"
    return {"ok": False, "rss": rss, "wall": wall, "error": why}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1024,512,512", help="Z,Y,X (or N).")
    parser.add_argument("--cap-mib", type=int, default=1024)
    parser.add_argument("--cap", choices=["auto", "cgroup", "rlimit"], default="auto")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--base-channels", type=int, default=4)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--buffer-mib", type=float, default=256.0, help="Our --max-buffer-mib.")
    args = parser.parse_args()
    shape = [int(v) for v in args.size.replace("x", ",").split(",")]
    shape = shape * 3 if len(shape) == 1 else shape
    method = args.cap
    if method == "auto":
        method = "cgroup" if own_cgroup_v2() is not None else "rlimit"
    cap = args.cap_mib << 20
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        setup = [sys.executable, "-c", SETUP]
        model, volume = tmp / "bench.pt", tmp / "volume.npy"
        subprocess.run([*setup, json.dumps({"model": str(model), **vars(args)})], check=True)
        subprocess.run([*setup, json.dumps({"volume": str(volume), "shape": shape})], check=True)
        common = {"model": str(model), "volume": str(volume), "tile": [args.tile] * 3}
        common["buffer_mib"] = args.buffer_mib
        results = {}
        for name, code in (("MONAI sliding_window_inference", MONAI), ("vesselseg predict", OURS)):
            out = tmp / name.split()[0]
            out.mkdir()
            results[name] = run_capped(code, {**common, "out": str(out)}, cap, method)
    voxels = shape[0] * shape[1] * shape[2]
    rows = []
    for name, r in results.items():
        rate = f"{voxels / r['seconds'] / 1e6:.2f}" if r["ok"] else "-"
        status = "completed" if r["ok"] else f"failed: {r['error']}"
        seconds = f"{r['seconds']:.0f}" if r["ok"] else "-"
        rows.append([name, status, f"{r['wall']:.0f}", seconds, rate, f"{r['rss']:.0f}"])
    inputs = voxels * 2 / 2**20
    outputs = voxels * 5 / 2**20
    print_table(
        f"{'x'.join(map(str, shape))} uint16 ({inputs:,.0f} MiB in, {outputs:,.0f} MiB out), "
        f"cap {args.cap_mib} MiB ({'cgroup memory.max' if method == 'cgroup' else 'RLIMIT_DATA'}"
        f"), U-Net base {args.base_channels} depth {args.depth}, tile {args.tile}^3, CPU",
        ["engine", "result", "wall s", "predict s", "Mvox/s", "peak RSS MiB"],
        rows,
    )
    print(
        "\nwall: the child process (imports included); predict: from reading the volume to the"
        " saved outputs; peak RSS: each child's ru_maxrss (os.wait4), MONAI's up to its failure"
    )


if __name__ == "__main__":
    main()
