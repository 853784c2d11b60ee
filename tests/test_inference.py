"""Streamed sliding-window inference: grid, blending, memory, resume, outputs and CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vesselseg.cli import app
from vesselseg.config import InferConfig, ModelConfig
from vesselseg.inference.network import FLIPS, fold_batchnorm, make_predict_fn
from vesselseg.inference.outputs import output_paths
from vesselseg.inference.plan import make_plan
from vesselseg.inference.predictor import StreamingPredictor
from vesselseg.inference.run import predict_path
from vesselseg.inference.sinks import ArraySink
from vesselseg.inference.tiling import axis_starts, gaussian_importance, make_grid, scan_step
from vesselseg.io import open_volume
from vesselseg.models import build_model

runner = CliRunner()


def plus_one(x: torch.Tensor) -> torch.Tensor:
    return x + 1


def blend(volume: np.ndarray, fn, tile=(16, 16, 16), batch_size=3, **grid_kw) -> tuple:
    grid = make_grid(volume.shape, tile, **grid_kw)
    sink = ArraySink(volume.shape)
    stats = StreamingPredictor(fn, grid, batch_size=batch_size).run(volume, sink)
    return sink, stats


@pytest.fixture(scope="module")
def conv_fn():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 1, 3, padding=1)
    return lambda x: torch.sigmoid(conv(x))


@pytest.fixture(scope="module")
def volume_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vol") / "vol.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.normal(100, 20, (20, 24, 28)).astype(np.float32))
    return path


# --------------------------------------------------------------------------- tiling


def fp32_outputs(model_file: Path, volume_file: Path, save_dir: Path) -> Any:
    """Output paths of a plain float32 prediction (16³ tiles, defaults otherwise)."""
    run = predict_path(
        volume_file,
        model_file,
        save_dir,
        InferConfig(tile_size=16),
        device="cpu",
        show_progress=False,
    )
    return run.results[0].outputs


def test_grid_matches_monai_dense_patch_slices() -> None:
    from monai.data.utils import dense_patch_slices

    for size in (16, 17, 40, 50, 63, 64, 100):
        for overlap in (0.0, 0.25, 0.5, 0.7):
            step = scan_step(size, 16, overlap)
            ours = axis_starts(size, 16, step)
            theirs = sorted({s[0].start for s in dense_patch_slices((size,), (16,), (step,))})
            assert ours == theirs, (size, overlap)


def test_gaussian_matches_monai_importance_map() -> None:
    from monai.data.utils import compute_importance_map

    theirs = compute_importance_map((16, 12, 20), mode="gaussian", sigma_scale=0.125)
    assert torch.equal(gaussian_importance((16, 12, 20)), theirs)


# --------------------------------------------------------------------------- blending


@pytest.mark.parametrize(
    "kw",
    [
        {"blend": "gaussian", "overlap": 0.25},
        {"blend": "constant", "overlap": 0.5},
        {"blend": "constant", "border": 3},
        {"blend": "gaussian", "border": 4},
    ],
)
def test_identity_oracle(kw: dict) -> None:
    volume = np.random.default_rng(1).standard_normal((40, 50, 60)).astype(np.float32)
    sink, _ = blend(volume, plus_one, **kw)
    np.testing.assert_allclose(sink.array, volume + 1, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(40, 50, 60), (33, 17, 70), (10, 12, 9)])
@pytest.mark.parametrize("mode,tol", [("constant", 1e-5), ("gaussian", 1e-4)])
def test_equals_monai_sliding_window(conv_fn, shape, mode: str, tol: float) -> None:
    """Same net, grid and blending as MONAI: non-multiple sizes and smaller-than-tile too."""
    from monai.inferers import sliding_window_inference

    volume = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    for overlap in (0.25, 0.6):
        sink, _ = blend(volume, conv_fn, overlap=overlap, blend=mode)
        with torch.inference_mode():
            ref = sliding_window_inference(
                torch.from_numpy(volume)[None, None],
                (16, 16, 16),
                3,
                conv_fn,
                overlap=overlap,
                mode=mode,
            )[0, 0].numpy()
        np.testing.assert_allclose(sink.array, ref, rtol=0, atol=tol)


@pytest.mark.parametrize("block", [None, (20, 25)])
def test_plan_cells_tile_the_volume_and_know_their_windows(block) -> None:
    """Pure planning: the cells cover every voxel once, and ``first``/``last`` are the first
    and last windows (in processing order) that add to each cell."""
    grid = make_grid((40, 50, 60), (16, 16, 16), overlap=0.4)
    plan = make_plan(grid, block)
    cover = np.zeros(grid.shape, np.int32)
    for key in plan.cells:
        cover[plan.cell_slices(key)] += 1
    assert (cover == 1).all()
    touching: dict = {}
    for tile in plan.tiles:
        for a in plan.z_cells_of_row[tile.iz]:
            for b in plan.y_cells_of_strip[tile.region][tile.jy]:
                touching.setdefault((tile.region, a, b), []).append(tile.index)
    assert set(touching) == set(plan.cells)
    for key, cell in plan.cells.items():
        assert (cell.first, cell.last) == (min(touching[key]), max(touching[key]))
    keys = plan.strip_keys(0)
    assert len(keys) == len(set(keys)) == sum(len(r.iy) for r in plan.regions) * len(grid.starts[0])
    assert plan.restart_tile(0) == 0 and plan.restart_tile(plan.n_tiles) == plan.n_tiles


def test_plane_regions_give_the_same_result(conv_fn) -> None:
    volume = np.random.default_rng(3).standard_normal((24, 50, 60)).astype(np.float32)
    whole, _ = blend(volume, conv_fn)
    grid = make_grid(volume.shape, (16, 16, 16))
    cut = StreamingPredictor(conv_fn, grid, batch_size=3, block=(20, 25))
    sink = ArraySink(volume.shape)
    stats = cut.run(volume, sink)
    assert len(cut.plan.regions) == 9
    np.testing.assert_allclose(sink.array, whole.array, rtol=0, atol=1e-6)
    assert stats.peak_buffer_bytes < blend(volume, conv_fn)[1].peak_buffer_bytes


def test_buffer_memory_does_not_grow_with_depth() -> None:
    peaks = []
    for depth in (64, 256):
        volume = np.zeros((depth, 32, 40), np.float32)
        _, stats = blend(volume, plus_one, batch_size=2)
        peaks.append((stats.peak_buffer_bytes, stats.peak_strip_bytes))
    assert peaks[0] == peaks[1]
    assert peaks[0][0] < 64 * 32 * 40 * 4  # far less than a float32 copy of the small volume


def test_max_buffer_cuts_the_plane() -> None:
    grid = make_grid((64, 256, 256), (16, 16, 16))
    small = StreamingPredictor(plus_one, grid, max_buffer_bytes=2 << 20)
    assert small.block is not None and len(small.plan.regions) > 1
    assert StreamingPredictor(plus_one, grid).block is None


def test_resume_in_process_from_every_checkpoint(conv_fn) -> None:
    volume = np.random.default_rng(4).standard_normal((40, 20, 24)).astype(np.float32)
    full, _ = blend(volume, conv_fn, overlap=0.6)
    grid = make_grid(volume.shape, (16, 16, 16), overlap=0.6)
    for next_tile in full.checkpoints[:-1]:
        sink = ArraySink(volume.shape)
        sink.array[:] = full.array
        predictor = StreamingPredictor(conv_fn, grid, batch_size=3)
        for cell in predictor.plan.cells.values():  # spoil what was not final yet
            if cell.last >= next_tile:
                sink.array[slice(*cell.z), slice(*cell.y)] = -1
        predictor.run(volume, sink, resume_from=next_tile)
        assert np.array_equal(sink.array, full.array)


# --------------------------------------------------------------------------- network


def test_fold_batchnorm_keeps_the_output() -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="unet", base_channels=4, depth=2, norm="batch")).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        before = net(x)
        assert fold_batchnorm(net) > 0
        after = net(x)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_fold_batchnorm_folds_transposed_convs_too() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.ConvTranspose3d(2, 3, 2, stride=2),
        torch.nn.BatchNorm3d(3),
        torch.nn.Conv3d(3, 2, 3, padding=1, bias=False),
        torch.nn.BatchNorm3d(2, affine=False),
    ).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 2, 4, 4, 4)
    with torch.inference_mode():
        before = net(x)
        assert fold_batchnorm(net) == 2
        after = net(x)
    assert [type(m).__name__ for m in net] == ["ConvTranspose3d", "Identity", "Conv3d", "Identity"]
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_tta_averages_the_eight_flips() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 1, 3, padding=1).eval()
    x = torch.randn(2, 1, 8, 8, 8)
    got = make_predict_fn(conv, torch.device("cpu"), tta=True)(x)
    with torch.inference_mode():
        want = (
            sum(
                torch.sigmoid(conv(x.flip(a))).flip(a) if a else torch.sigmoid(conv(x))
                for a in FLIPS
            )
            / 8
        )
    assert len(FLIPS) == 8
    torch.testing.assert_close(got, want)


# --------------------------------------------------------------------------- files


def run_cli(*args: str):
    return runner.invoke(app, ["predict", *args])


def test_cli_writes_named_outputs(model_file: Path, volume_file: Path, tmp_path: Path) -> None:
    result = run_cli(
        str(volume_file),
        "--model",
        str(model_file),
        "--out-dir",
        str(tmp_path),
        "--tile-size",
        "16",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "Mvoxels/s" in result.output and "peak memory" in result.output
    prob = np.load(tmp_path / "vol.tiny.prob.npy")
    mask = np.load(tmp_path / "vol.tiny.mask.npy")
    assert prob.shape == mask.shape == (20, 24, 28) and prob.dtype == np.float32
    assert mask.dtype == np.uint8 and np.array_equal(mask, (prob >= 0.5).astype(np.uint8))
    assert 0 <= prob.min() and prob.max() <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.tiny.mask.npy", "vol.tiny.prob.npy"]


def test_seed_spellings_and_naming(model_file: Path, volume_file: Path, tmp_path: Path) -> None:
    result = run_cli(
        str(model_file),
        "--data-dir",
        str(volume_file.parent),
        "--out-dir",
        str(tmp_path),
        "--crop-size",
        "16",
        "--naming",
        "seed",
        "--file-type",
        "npy",
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["tiny.pt.vol.npy.mask.npy", "tiny.pt.vol.npy.pred.npy"]
    default = output_paths(tmp_path, "vol.npy", model_file)
    assert default.prob.name == "vol.tiny.prob.npy"


@pytest.mark.parametrize("prob_dtype", ["uint8", "float16"])
@pytest.mark.parametrize("fmt", ["zarr", "tiff"])
def test_formats_and_dtypes(
    model_file: Path, volume_file: Path, tmp_path: Path, fmt: str, prob_dtype: str
) -> None:
    cfg = InferConfig(tile_size=[16, 16, 16], out_format=fmt, prob_dtype=prob_dtype)
    ref = fp32_outputs(model_file, volume_file, tmp_path / "ref")
    got = (
        predict_path(
            volume_file, model_file, tmp_path / fmt, cfg, device="cpu", show_progress=False
        )
        .results[0]
        .outputs
    )
    assert got.prob.name.endswith(".zarr" if fmt == "zarr" else ".tif")
    prob, mask = open_volume(got.prob)[...], open_volume(got.mask)[...]
    want = np.load(ref.prob)
    assert prob.dtype == np.dtype(prob_dtype)
    tol = 1 / 255 if prob_dtype == "uint8" else 1e-3
    scale = 255.0 if prob_dtype == "uint8" else 1.0
    np.testing.assert_allclose(prob.astype(np.float32) / scale, want, atol=tol)
    assert np.array_equal(mask, np.load(ref.mask))


def test_pairs_folder_predicts_only_images(model_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "in"
    data.mkdir()
    np.save(data / "data_a.npy", np.ones((16, 16, 16), np.float32))
    np.save(data / "mask_a.npy", np.zeros((16, 16, 16), np.uint8))
    summary = predict_path(
        data,
        model_file,
        tmp_path / "out",
        InferConfig(tile_size=16),
        device="cpu",
        show_progress=False,
    )
    assert [r.input.name for r in summary.results] == ["data_a.npy"]
    again = predict_path(
        data,
        model_file,
        tmp_path / "out",
        InferConfig(tile_size=16),
        device="cpu",
        show_progress=False,
        resume=True,
    )
    assert again.results[0].skipped


# --------------------------------------------------------------------------- resume
# (the SIGKILL-then-resume test lives in tests/test_crash_recovery.py)


def test_resume_with_other_settings_starts_over(
    model_file: Path, volume_file: Path, tmp_path: Path
) -> None:
    paths = output_paths(tmp_path, volume_file.name, model_file)
    tmp_path.mkdir(exist_ok=True)
    paths.progress.write_text(
        json.dumps(
            {"format": "vesselseg-progress/1", "key": {"x": 1}, "next_tile": 5, "n_tiles": 9}
        )
    )
    result = predict_path(
        volume_file,
        model_file,
        tmp_path,
        InferConfig(tile_size=16),
        device="cpu",
        resume=True,
        show_progress=False,
    ).results[0]
    assert result.resumed_from == 0 and paths.prob.exists() and not paths.progress.exists()


def test_bf16_and_tta_run_end_to_end(model_file: Path, volume_file: Path, tmp_path: Path) -> None:
    ref = fp32_outputs(model_file, volume_file, tmp_path / "fp32")
    cfg = InferConfig(tile_size=16, precision="bf16", tta=True)
    got = (
        predict_path(
            volume_file, model_file, tmp_path / "bf16", cfg, device="cpu", show_progress=False
        )
        .results[0]
        .outputs
    )
    np.testing.assert_allclose(np.load(got.prob), np.load(ref.prob), atol=0.1)


def test_kaggle_case_folder_is_one_input(model_file: Path, tmp_path: Path) -> None:
    import tifffile

    images = tmp_path / "kidney_9" / "images"
    images.mkdir(parents=True)
    (tmp_path / "kidney_9" / "labels").mkdir()
    for z in range(16):
        tifffile.imwrite(images / f"{z:04d}.tif", np.full((16, 20), z, np.uint16))
        tifffile.imwrite(
            tmp_path / "kidney_9" / "labels" / f"{z:04d}.tif", np.zeros((16, 20), np.uint8)
        )
    for source in (tmp_path / "kidney_9", tmp_path):
        summary = predict_path(
            source,
            model_file,
            tmp_path / "out",
            InferConfig(tile_size=16),
            device="cpu",
            show_progress=False,
        )
        assert [r.outputs.prob.name for r in summary.results] == ["kidney_9.tiny.prob.npy"]
    assert np.load(summary.results[0].outputs.prob).shape == (16, 16, 20)
