"""The inference engine at the hardware limit: device-side blending, the writer thread,
batched TTA, automatic batch size, compile, skipping windows without tissue, and the CUDA
path (those tests run only where CUDA is available; they are never faked)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vesselseg.config import InferConfig
from vesselseg.errors import ConfigError
from vesselseg.inference.batching import activation_bytes, cpu_batch_size, fit_batch
from vesselseg.inference.network import FLIPS, make_predict_fn
from vesselseg.inference.predictor import StreamingPredictor
from vesselseg.inference.run import predict_path
from vesselseg.inference.sinks import ArraySink
from vesselseg.inference.tiling import make_grid
from vesselseg.inference.tissue import Tissue

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TILE = (16, 16, 16)


@pytest.fixture(scope="module")
def conv():
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, 1, 3, padding=1).eval()


@pytest.fixture(scope="module")
def volume_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vol") / "vol.npy"
    np.save(path, np.random.default_rng(0).normal(100, 20, (20, 24, 28)).astype(np.float32))
    return path


def conv_fn_of(conv):
    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(conv.to(x.device)(x))

    return fn


def run_blend(volume, fn, batch_size=3, resume=None, sink=None, **kw) -> tuple:
    grid_kw = {k: kw.pop(k) for k in ("overlap", "blend", "border") if k in kw}
    grid = make_grid(volume.shape, TILE, **grid_kw)
    predictor = StreamingPredictor(fn, grid, batch_size=batch_size, **kw)
    sink = sink or ArraySink(volume.shape)
    stats = predictor.run(volume, sink, resume_from=resume or 0)
    return sink, stats, predictor


def half_empty(shape=(40, 36, 60), seed=5) -> np.ndarray:
    """Noise in [1, 2) in the first half of x, zeros in the rest (plus an empty z-slab)."""
    rng = np.random.default_rng(seed)
    volume = np.zeros(shape, np.float32)
    volume[:, :, : shape[2] // 2] = 1 + rng.random((shape[0], shape[1], shape[2] // 2))
    volume[:8] = 0
    return volume


# --------------------------------------------------------------------------- writer thread


class SlowSink(ArraySink):
    """Records the order of calls, from which thread, and is slow to write."""

    def __init__(self, shape) -> None:
        super().__init__(shape)
        self.calls: list = []
        self.threads: set = set()

    def write(self, z, y, x, values) -> None:
        time.sleep(0.002)
        self.threads.add(threading.get_ident())
        self.calls.append(("w", z.stop))
        super().write(z, y, x, values)

    def checkpoint(self, next_tile: int) -> None:
        self.calls.append(("c", next_tile))
        super().checkpoint(next_tile)


def test_writer_thread_writes_in_order_and_before_each_checkpoint(conv) -> None:
    """The sink is called from the writer thread only, every cell finished before a
    checkpoint is written before it, and the result equals a fast in-memory sink's."""
    volume = np.random.default_rng(1).standard_normal((40, 30, 34)).astype(np.float32)
    fast, _, predictor = run_blend(volume, conv_fn_of(conv))
    slow = SlowSink(volume.shape)
    run_blend(volume, conv_fn_of(conv), sink=slow)
    assert np.array_equal(slow.array, fast.array)
    assert slow.threads and threading.get_ident() not in slow.threads
    plan = predictor.plan
    written = 0
    for kind, value in slow.calls:
        if kind == "w":
            written += 1
        else:  # every cell whose last window is before the checkpoint has been written
            assert written == sum(1 for c in plan.cells.values() if c.last < value)
    assert slow.checkpoints == fast.checkpoints


def test_writer_thread_errors_reach_the_caller(conv) -> None:
    class Broken(ArraySink):
        def write(self, z, y, x, values) -> None:
            raise OSError(28, "No space left on device")

    volume = np.zeros((40, 20, 20), np.float32)
    with pytest.raises(OSError, match="No space"):
        run_blend(volume, conv_fn_of(conv), sink=Broken(volume.shape))


def test_writer_queue_is_bounded(conv) -> None:
    """With a tiny budget at most one finished cell waits for the writer at a time."""
    volume = np.random.default_rng(2).standard_normal((48, 20, 20)).astype(np.float32)
    slow = SlowSink(volume.shape)
    _, stats, predictor = run_blend(volume, conv_fn_of(conv), sink=slow, max_pending_bytes=4)
    biggest = max(4 * int(np.prod(predictor.plan.cell_shape(k))) for k in predictor.plan.cells)
    assert 0 < stats.peak_pending_bytes <= biggest
    fast, _, _ = run_blend(volume, conv_fn_of(conv))
    assert np.array_equal(slow.array, fast.array)


# --------------------------------------------------------------------------- network side


class Recording(torch.nn.Module):
    """``conv``, recording the batch size of every call in ``seen``."""

    def __init__(self, conv: torch.nn.Module, seen: list[int]) -> None:
        super().__init__()
        self.conv, self.seen = conv, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(len(x))
        return self.conv(x)


def test_tta_is_one_batched_network_call(conv) -> None:
    calls: list[int] = []
    x = torch.randn(3, 1, 8, 8, 8)
    got = make_predict_fn(Recording(conv, calls), torch.device("cpu"), tta=True)(x)
    assert calls == [3 * len(FLIPS)]
    with torch.inference_mode():
        want = sum(torch.sigmoid(conv(x.flip(a))).flip(a) for a in FLIPS) / len(FLIPS)
    torch.testing.assert_close(got, want)


def test_pad_to_gives_the_network_one_batch_size(conv) -> None:
    seen: list[int] = []
    fn = make_predict_fn(Recording(conv, seen), torch.device("cpu"), pad_to=4)
    x = torch.randn(3, 1, 8, 8, 8)
    out = fn(x)
    assert seen == [4] and out.shape == x.shape
    with torch.inference_mode():
        torch.testing.assert_close(out, torch.sigmoid(conv(x)))


def test_a_lone_window_is_never_a_batch_of_one_on_cpu(conv) -> None:
    seen: list[int] = []
    fn = make_predict_fn(Recording(conv, seen), torch.device("cpu"))
    one, three = torch.randn(1, 1, 8, 8, 8), torch.randn(3, 1, 8, 8, 8)
    out_one, out_three = fn(one), fn(three)
    assert seen == [2, 3] and out_one.shape == one.shape and out_three.shape == three.shape
    with torch.inference_mode():
        torch.testing.assert_close(out_one, torch.sigmoid(conv(one)))
        torch.testing.assert_close(out_three, torch.sigmoid(conv(three)))


def test_fp16_is_refused_on_cpu(conv) -> None:
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        make_predict_fn(conv, torch.device("cpu"), precision="fp16")


def test_fit_batch() -> None:
    assert fit_batch(per_window=10, fixed=5, budget=100, cap=64) == 9
    assert fit_batch(per_window=10, fixed=5, budget=100, cap=4) == 4
    assert fit_batch(per_window=1000, fixed=5, budget=100, cap=4) == 1


def test_activation_estimate_counts_every_module_output() -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 2, 1)
    )
    voxels = 8 * 12 * 16
    # conv (4 ch) + relu (4 ch) + conv (2 ch) + the Sequential's own output (2 ch), float32
    assert activation_bytes(net, (8, 12, 16)) == 4 * voxels * (4 + 4 + 2 + 2)
    assert 1 <= cpu_batch_size(net, (8, 12, 16)) <= 4


def test_batch_size_auto_end_to_end(model_file: Path, volume_file: Path, tmp_path: Path) -> None:
    cfg = InferConfig(tile_size=16, batch_size="auto")
    result = predict_path(volume_file, model_file, tmp_path, cfg, device="cpu", show_progress=False)
    assert result.results[0].tiles > 0
    ref = predict_path(
        volume_file,
        model_file,
        tmp_path / "ref",
        InferConfig(tile_size=16, batch_size=4),
        device="cpu",
        show_progress=False,
    )  # fmt: skip  (the tiny model fits 4 windows in any RAM: auto is 4)
    assert np.array_equal(
        np.load(result.results[0].outputs.prob), np.load(ref.results[0].outputs.prob)
    )


@pytest.mark.slow
def test_compile_gives_the_same_probabilities(
    model_file: Path, volume_file: Path, tmp_path: Path
) -> None:
    """``infer.compile`` (torch.compile on the CPU: inductor, a C++ compiler) matches eager."""
    plain = predict_path(
        volume_file, model_file, tmp_path / "eager", InferConfig(tile_size=16),
        device="cpu", show_progress=False,
    )  # fmt: skip
    compiled = predict_path(
        volume_file, model_file, tmp_path / "compiled", InferConfig(tile_size=16, compile=True),
        device="cpu", show_progress=False,
    )  # fmt: skip
    np.testing.assert_allclose(
        np.load(compiled.results[0].outputs.prob),
        np.load(plain.results[0].outputs.prob),
        atol=1e-5,
    )


# --------------------------------------------------------------------------- skip empty


def zero_on_empty(fn, threshold: float):
    """The oracle: a network that returns 0 for windows holding no voxel >= ``threshold``
    (the predictor's input is the raw volume here; padding is 0 < threshold)."""

    def oracle(x: torch.Tensor) -> torch.Tensor:
        empty = ~(x >= threshold).flatten(1).any(1)
        out = fn(x)
        out[empty] = 0.0
        return out

    return oracle


def window_by_window(fn, calls: list[int] | None = None):
    """``fn`` applied to each window on its own (a CPU convolution rounds the last bit
    differently with the batch size, so this one's values never depend on the batch);
    ``calls`` records each call's batch size."""

    def each(x: torch.Tensor) -> torch.Tensor:
        if calls is not None:
            calls.append(len(x))
        return torch.cat([fn(x[i : i + 1]) for i in range(len(x))])

    return each


@pytest.mark.parametrize("kw", [{"blend": "gaussian"}, {"blend": "constant", "overlap": 0.5}])
def test_skip_empty_equals_a_network_returning_zero(conv, kw: dict) -> None:
    volume = half_empty()
    fn = conv_fn_of(conv)
    for batch in (1, 3):
        calls: list[int] = []
        want, full, _ = run_blend(volume, zero_on_empty(window_by_window(fn), 0.5), batch, **kw)
        got, stats, predictor = run_blend(
            volume, window_by_window(fn, calls), batch, tissue=Tissue(threshold=0.5), **kw
        )
        assert stats.skipped > 0 and stats.tiles + stats.skipped == full.tiles
        assert np.array_equal(got.array, want.array)
        assert (got.array[8:, :, 48:] == 0).all()  # far from tissue: no window adds anything
        whole, _, _ = run_blend(volume, zero_on_empty(fn, 0.5), batch, **kw)
        np.testing.assert_allclose(got.array, whole.array, rtol=0, atol=1e-6)
        # windows with tissue are regrouped: full calls, but for the last one of each z-row
        rows = len(predictor.plan.row_ends)
        assert sum(calls) == stats.tiles and sum(c < batch for c in calls) <= rows
        assert len(calls) <= -(-stats.tiles // batch) + rows


def test_skip_empty_with_a_mask_volume_and_resume(conv) -> None:
    """A mask volume marking the same voxels skips the same windows; resuming from every
    checkpoint of a skipping run gives the same bytes."""
    volume = half_empty()
    fn = conv_fn_of(conv)
    by_threshold, _, _ = run_blend(volume, fn, tissue=Tissue(threshold=0.5))
    mask = (volume >= 0.5).astype(np.uint8)
    by_mask, stats, predictor = run_blend(volume, fn, tissue=Tissue(mask=mask))
    assert stats.skipped > 0 and np.array_equal(by_mask.array, by_threshold.array)
    for next_tile in by_mask.checkpoints[:-1:3]:
        sink = ArraySink(volume.shape)
        sink.array[:] = by_mask.array
        for cell in predictor.plan.cells.values():
            if cell.last >= next_tile:
                sink.array[slice(*cell.z), slice(*cell.y)] = -1
        run_blend(volume, fn, resume=next_tile, sink=sink, tissue=Tissue(mask=mask))
        assert np.array_equal(sink.array, by_mask.array)


def test_skip_empty_end_to_end(model_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "half.npy"
    np.save(path, half_empty() * 100)
    cfg = InferConfig(tile_size=16, tissue_threshold=50.0)
    run = predict_path(path, model_file, tmp_path / "skip", cfg, device="cpu", show_progress=False)
    plain = predict_path(
        path, model_file, tmp_path / "all", InferConfig(tile_size=16), device="cpu",
        show_progress=False,
    )  # fmt: skip
    skipped, full = run.results[0], plain.results[0]
    assert skipped.empty_windows > 0 and skipped.tiles + skipped.empty_windows == full.tiles
    prob, ref = np.load(skipped.outputs.prob), np.load(full.outputs.prob)
    assert (prob[8:, :, 48:] == 0).all() and (ref[8:, :, 48:] > 0).all()
    # windows there all hold tissue: equal up to the batch-size rounding of the convolutions
    np.testing.assert_allclose(prob[8:, :, :14], ref[8:, :, :14], rtol=0, atol=1e-6)
    mask_file = tmp_path / "tissue.npy"
    np.save(mask_file, (half_empty() * 100 >= 50).astype(np.uint8))
    by_mask = predict_path(
        path, model_file, tmp_path / "mask", InferConfig(tile_size=16, tissue_mask=str(mask_file)),
        device="cpu", show_progress=False,
    )  # fmt: skip
    assert np.array_equal(np.load(by_mask.results[0].outputs.prob), prob)


def test_tissue_mask_of_another_shape_is_a_user_error(model_file: Path, tmp_path: Path) -> None:
    from vesselseg.errors import ShapeMismatchError

    path = tmp_path / "v.npy"
    np.save(path, half_empty())
    np.save(tmp_path / "m.npy", np.ones((4, 4, 4), np.uint8))
    cfg = InferConfig(tile_size=16, tissue_mask=str(tmp_path / "m.npy"))
    with pytest.raises(ShapeMismatchError, match="tissue mask shape"):
        predict_path(path, model_file, tmp_path / "o", cfg, device="cpu", show_progress=False)


# --------------------------------------------------------------------------- CUDA


@CUDA
@pytest.mark.parametrize("mode,tol", [("constant", 1e-5), ("gaussian", 1e-4)])
def test_cuda_accumulates_on_the_device_and_equals_monai(conv, mode: str, tol: float) -> None:
    from monai.inferers import sliding_window_inference

    volume = np.random.default_rng(3).standard_normal((40, 50, 60)).astype(np.float32)
    fn = conv_fn_of(conv)
    sink, stats, predictor = run_blend(volume, fn, blend=mode, device="cuda")
    assert predictor.weights(0, 0, 0, 0).device.type == "cuda"
    assert stats.peak_buffer_bytes > 0
    with torch.inference_mode():
        ref = (
            sliding_window_inference(
                torch.from_numpy(volume)[None, None].cuda(), TILE, 3, fn, overlap=0.25, mode=mode
            )[0, 0]
            .cpu()
            .numpy()
        )
    np.testing.assert_allclose(sink.array, ref, rtol=0, atol=tol)
    cpu, _, _ = run_blend(volume, fn, blend=mode)
    np.testing.assert_allclose(sink.array, cpu.array, rtol=0, atol=tol)


@CUDA
def test_cuda_finished_cells_are_pinned_and_copied_without_blocking(conv) -> None:
    from vesselseg.inference.blender import Blender

    volume = np.random.default_rng(4).standard_normal((40, 20, 24)).astype(np.float32)
    finished = []
    original = Blender.finish

    def spy(self, key):
        cell = original(self, key)
        if cell is not None:
            finished.append(cell)
        return cell

    Blender.finish = spy  # type: ignore[method-assign]
    try:
        sink, _, _ = run_blend(volume, conv_fn_of(conv), device="cuda")
    finally:
        Blender.finish = original  # type: ignore[method-assign]
    assert finished and all(c.host is not None and c.host.is_pinned() for c in finished)
    assert all(isinstance(c.ready, torch.cuda.Event) for c in finished)
    assert np.isfinite(sink.array).all()


@CUDA
def test_cuda_resume_is_byte_identical(conv) -> None:
    volume = np.random.default_rng(6).standard_normal((40, 20, 24)).astype(np.float32)
    fn = conv_fn_of(conv)
    full, _, predictor = run_blend(volume, fn, overlap=0.6, device="cuda")
    for next_tile in full.checkpoints[:-1]:
        sink = ArraySink(volume.shape)
        sink.array[:] = full.array
        for cell in predictor.plan.cells.values():
            if cell.last >= next_tile:
                sink.array[slice(*cell.z), slice(*cell.y)] = -1
        run_blend(volume, fn, overlap=0.6, device="cuda", resume=next_tile, sink=sink)
        assert np.array_equal(sink.array, full.array)


@CUDA
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_autocast_is_close_to_fp32(precision: str) -> None:
    from vesselseg.config import ModelConfig
    from vesselseg.inference.network import prepare_network
    from vesselseg.models import build_model

    torch.manual_seed(0)
    dev = torch.device("cuda")
    net = prepare_network(build_model(ModelConfig(name="unet", base_channels=4, depth=2)), dev)
    x = torch.randn(2, 1, 32, 32, 32)
    ref = make_predict_fn(net, dev)(x)
    got = make_predict_fn(net, dev, precision=precision, tta=True)(x)
    assert got.device.type == "cuda" and got.dtype == torch.float32
    ref_tta = make_predict_fn(net, dev, tta=True)(x)
    assert (got - ref_tta).abs().max().item() < 2e-2
    assert ref.shape == got.shape


@CUDA
def test_cuda_batch_size_auto_fits_the_device(model_file: Path, volume_file: Path) -> None:
    from vesselseg.inference.batching import MAX_CUDA_BATCH
    from vesselseg.inference.run import prepare_model

    model = prepare_model(model_file, InferConfig(tile_size=16, batch_size="auto"), "cuda")
    assert 1 <= model.batch_size <= MAX_CUDA_BATCH and model.device == "cuda"


def test_skip_empty_is_part_of_the_resume_key(model_file: Path, tmp_path: Path) -> None:
    """An interrupted skipping run resumes with the same tissue test, and starts over
    without it (its output differs)."""
    path = tmp_path / "half.npy"
    np.save(path, half_empty() * 100)
    skip = InferConfig(tile_size=16, tissue_threshold=50.0)

    def crash_after(n: int):
        def hook(fn):
            calls = []

            def wrapped(x):
                calls.append(1)
                if len(calls) > n:
                    raise RuntimeError("interrupted")
                return fn(x)

            return wrapped

        return hook

    def run(cfg, out, hook=None, resume=False):
        return predict_path(
            path, model_file, tmp_path / out, cfg, device="cpu", show_progress=False,
            net_hook=hook, resume=resume,
        ).results[0]  # fmt: skip

    for out in ("a", "b"):
        with pytest.raises(RuntimeError, match="interrupted"):
            run(skip, out, crash_after(9))
    assert run(InferConfig(tile_size=16), "a", resume=True).resumed_from == 0  # other key
    resumed = run(skip, "b", resume=True)
    assert resumed.resumed_from > 0
    fresh = run(skip, "fresh")
    assert np.array_equal(np.load(resumed.outputs.prob), np.load(fresh.outputs.prob))


def test_cli_engine_options(model_file: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vesselseg.cli import app

    path = tmp_path / "half.npy"
    np.save(path, half_empty() * 100)
    base = ["predict", str(path), "--model", str(model_file), "--tile-size", "16"]
    base += ["--device", "cpu", "--out-dir", str(tmp_path / "out")]
    ok = CliRunner().invoke(app, [*base, "--batch-size", "auto", "--tissue-threshold", "50"])
    assert ok.exit_code == 0, ok.output
    assert "without tissue skipped" in ok.output
    for bad, message in (
        (["--batch-size", "two"], "--batch-size: expected a positive integer or auto"),
        (["--skip-empty"], "infer.skip_empty needs infer.tissue_threshold or infer.tissue_mask"),
        (["--precision", "fp16"], "fp16 needs CUDA"),
    ):
        result = CliRunner().invoke(app, [*base, *bad])
        assert result.exit_code == 2 and message in result.output, result.output


def test_writer_thread_writes_what_was_finished_before_a_failure() -> None:
    """A run failing while the sink is slow still writes the cells and checkpoints queued
    before the failure, in order, so the resume point does not depend on thread timing."""
    import threading

    from vesselseg.inference.blender import Finished
    from vesselseg.inference.sinks import ArraySink
    from vesselseg.inference.writer import SinkThread

    gate = threading.Event()

    class SlowSink(ArraySink):
        def write(self, z: slice, y: slice, x: slice, values: np.ndarray) -> None:
            gate.wait()
            super().write(z, y, x, values)

    sink = SlowSink((4, 2, 2))
    out = SinkThread(sink)
    for z in range(3):
        out.write(
            Finished((slice(z, z + 1), slice(0, 2), slice(0, 2)), np.full((1, 2, 2), z + 1.0))
        )
        out.checkpoint(z + 1)
    try:
        raise KeyboardInterrupt  # the predictor fails while the thread waits on the sink
    except KeyboardInterrupt:
        gate.set()
        out.close(reraise=False)
    assert sink.checkpoints == [1, 2, 3]
    assert sink.array[:3, 0, 0].tolist() == [1.0, 2.0, 3.0] and np.isnan(sink.array[3]).all()
