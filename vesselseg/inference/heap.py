"""A fixed glibc mmap threshold, so a long streamed run does not fragment the C heap.

glibc serves an allocation below its *mmap threshold* from the heap and maps a larger one
separately (returned to the system when freed). The threshold is dynamic by default: each
time a mapped block is freed, it rises to that block's size (up to 32 MiB), and the heap's
trim threshold with it. In a streamed prediction the network's activations (MiBs each, freed
after every batch) then move onto the heap, where they interleave with the live cells,
strips and finished outputs of other sizes and lifetimes. The free gaps that leaves are never
handed back: measured on a 512^3 volume (U-Net base 8, 48^3 tiles, batch 2, 2 CPU threads),
the heap grew from 195 to 309 MiB over the first 500 of 1372 batches, with 129 MiB of it
free, while the memory in use stayed at 163 MiB - the run's peak RSS grew with the volume's
depth although its buffers do not.

:func:`fix_mmap_threshold` sets the threshold once, to a fixed value (``mallopt``, which also
stops the dynamic adjustment and keeps the default trim threshold): blocks of
:data:`MMAP_THRESHOLD` and more are mapped and unmapped every time, smaller ones reuse heap
space of stable sizes. With 8 MiB the same 512^3 run held its heap at 194 MiB throughout. A
much smaller threshold (64 KiB) also stops the growth but maps and unmaps so many blocks that
the CPU forward pass ran ~50 % slower. It is a process-wide setting, applied by
:class:`~vesselseg.inference.predictor.StreamingPredictor` when a run starts; on a C library
other than glibc it does nothing.

The fixed threshold still leaves the network's activations (a few MiB each, freed after
every batch) on the heap, and with them the live cells of the blend when those are allocated
there: a cell lives for a row of windows, between many batches' activations.
:func:`mapped_zeros` gives such long-lived buffers an anonymous mapping of their own, outside
the heap and unmapped when freed. The heap still varies from run to run (measured at 512^3:
its resident size at the run's peak between 210 and 254 MiB over four runs), which is most of
the remaining spread of the run's peak RSS.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import mmap

import numpy as np

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 8 << 20  # blocks of this size and more are mapped (see the module doc)


@functools.cache
def _mallopt() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """glibc's ``mallopt``, or None where the C library has none (looked up among the
    process's own symbols: no library search, which would start a subprocess)."""
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """Set glibc's mmap threshold to ``nbytes`` for the rest of the process (no longer
    dynamic). True when the C library took it; False elsewhere (nothing changes)."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, int(nbytes)))
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", nbytes)
    return ok


def mapped_zeros(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Zeros of ``shape`` in an anonymous memory mapping of their own (not on the C heap:
    the pages go back to the system as soon as the array and its views are freed)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    buffer = mmap.mmap(-1, max(count * dtype.itemsize, 1))
    return np.frombuffer(buffer, dtype, count=count).reshape(shape)
