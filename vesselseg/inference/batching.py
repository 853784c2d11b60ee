"""``infer.batch_size: auto``: windows per network call from the device's memory budget.

* CUDA: the predict function is run once on 1 and once on 2 windows of the tile, and the peak
  allocated memory of each gives a fixed part and a part per window (activations, TTA copies,
  autocast casts: whatever the network really allocates); the batch is the largest that fits
  in 80 % of the free device memory less the blending buffers (which live on the device too),
  at most :data:`MAX_CUDA_BATCH`.
* CPU: a network call on the CPU gains little from more windows once the cores are busy, so
  the batch is at most :data:`MAX_CPU_BATCH`, and smaller when a quarter of the available RAM
  cannot hold that many windows' activations (estimated without computing anything: the
  network is run on the ``meta`` device with a hook summing every module's output bytes, an
  upper bound of what a forward keeps alive).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from itertools import chain

import torch
from torch import nn

log = logging.getLogger(__name__)

MAX_CPU_BATCH = 4
MAX_CUDA_BATCH = 64
CUDA_SHARE = 0.8  # of the free device memory
CPU_SHARE = 0.25  # of the available RAM


def fit_batch(per_window: int, fixed: int, budget: int, cap: int) -> int:
    """The largest ``b`` in ``[1, cap]`` with ``fixed + b * per_window <= budget`` (1 when even
    one window does not fit: the run will say so if it really runs out)."""
    if per_window <= 0:
        return cap
    return max(1, min(cap, (budget - fixed) // per_window))


def available_ram_bytes() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` (free pages elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def activation_bytes(net: nn.Module, tile: tuple[int, int, int]) -> int | None:
    """Sum of the output bytes of every module for one window, run on the ``meta`` device
    (no memory, no compute); None when the network cannot run there."""
    meta = {
        name: torch.empty_like(t, device="meta")
        for name, t in chain(net.named_parameters(), net.named_buffers())
    }
    total = 0

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    hooks = [m.register_forward_hook(count) for m in net.modules()]
    try:
        with torch.inference_mode():
            torch.func.functional_call(net, meta, (torch.zeros((1, 1, *tile), device="meta"),))
    except Exception:  # noqa: BLE001 - a network that does not run on meta: no estimate
        log.debug("meta-device estimate failed", exc_info=True)
        return None
    finally:
        for hook in hooks:
            hook.remove()
    return total


def cpu_batch_size(net: nn.Module, tile: tuple[int, int, int], copies: int = 1) -> int:
    """The CPU batch: :data:`MAX_CPU_BATCH`, less when RAM is short (``copies``: TTA flips)."""
    per_window = activation_bytes(net, tile)
    if per_window is None:
        per_window = 64 * 4 * tile[0] * tile[1] * tile[2]  # 64 float32 channels at full size
    budget = int(CPU_SHARE * available_ram_bytes())
    return fit_batch(per_window * copies, 0, budget, MAX_CPU_BATCH)


def cuda_batch_size(
    predict_fn: Callable[[torch.Tensor], torch.Tensor],
    tile: tuple[int, int, int],
    device: torch.device,
    reserve_bytes: int,
) -> int:
    """The CUDA batch measured with two probe calls of ``predict_fn`` (see the module doc);
    ``reserve_bytes`` is kept free for the blending buffers."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    peaks = []
    for n in (1, 2):
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            predict_fn(torch.zeros((n, 1, *tile), device=device))
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    per_window = max(peaks[1] - peaks[0], 1)
    fixed = max(peaks[0] - per_window, 0)
    free, _total = torch.cuda.mem_get_info(device)
    budget = int(CUDA_SHARE * free) - reserve_bytes
    batch = fit_batch(per_window, fixed, budget, MAX_CUDA_BATCH)
    log.info(
        "batch size auto: %d (%.0f MiB per window, %.0f MiB free on %s)",
        batch,
        per_window / 2**20,
        free / 2**20,
        device,
    )
    return batch
