"""The fixed glibc mmap threshold of a streamed run (vesselseg.inference.heap)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vesselseg.inference.heap import _mallopt

# In a fresh interpreter: count the mapped blocks (glibc's mallinfo2().hblks) an array adds.
# Freeing a mapped 20 MiB block raises the dynamic threshold to 20 MiB, so 9 MiB comes from the
# heap (then free at its top); after fix_mmap_threshold (8 MiB) a 12 MiB block, which the free
# top cannot hold, is mapped, and 1 MiB still comes from the heap. (glibc maps only what its
# free heap space cannot serve, whatever the threshold.)
PROBE = r"""
import ctypes, json, numpy as np
from vesselseg.inference.heap import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks "
                                               "fsmblks uordblks fordblks keepcost").split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped_by(nbytes):
    before = libc.mallinfo2().hblks
    a = np.ones(nbytes, np.uint8)
    added = libc.mallinfo2().hblks - before
    del a
    return added

mapped_by(20 << 20)  # freed: the dynamic threshold rises to 20 MiB
dynamic = mapped_by(9 << 20)
fixed = fix_mmap_threshold()
print(json.dumps({"dynamic": dynamic, "fixed": fixed, "after": mapped_by(12 << 20),
                  "small": mapped_by(1 << 20)}))
"""


@pytest.mark.skipif(_mallopt() is None or not sys.platform.startswith("linux"), reason="glibc")
def test_fixed_threshold_maps_large_blocks_the_dynamic_one_had_moved_to_the_heap():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["dynamic"] == 0  # the dynamic threshold moved 9 MiB onto the heap
    assert got["fixed"] is True
    assert got["after"] == 1  # fixed at 8 MiB: 12 MiB is mapped (unmapped when freed)
    assert got["small"] == 0  # and 1 MiB still comes from the heap (no slow mapping churn)


def test_streaming_run_fixes_the_threshold(monkeypatch):
    import numpy as np

    from vesselseg.inference import predictor as predictor_module
    from vesselseg.inference.predictor import StreamingPredictor
    from vesselseg.inference.sinks import ArraySink
    from vesselseg.inference.tiling import make_grid

    calls = []
    monkeypatch.setattr(predictor_module, "fix_mmap_threshold", lambda: calls.append(1))
    sink = ArraySink((8, 8, 8))
    StreamingPredictor(lambda x: x + 1, make_grid((8, 8, 8), (8, 8, 8), 0.0)).run(
        np.zeros((8, 8, 8), np.float32), sink
    )
    assert calls == [1]
    assert np.array_equal(sink.array, np.ones((8, 8, 8), np.float32))
