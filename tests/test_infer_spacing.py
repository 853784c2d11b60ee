"""Inference at any voxel size: resampling to the model's spacing, streamed, resumable.

Oracles: the interpolation equals scipy's ``map_coordinates`` and torch's ``interpolate`` at the
voxel-centre convention, and any box of it equals the same box of the whole; a network that
returns ``input + 1`` on an input at half the model's spacing gives exactly the input resampled
to the model grid, plus one, resampled back (computed here with scipy on the whole volume).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from typer.testing import CliRunner

from vesselseg.bundle import ModelMeta, save_bundle
from vesselseg.cli import app
from vesselseg.config import InferConfig, ModelConfig, params_to_dict
from vesselseg.data.normalize import normalize
from vesselseg.data.resample import linear_resample
from vesselseg.errors import ConfigError
from vesselseg.inference.outputs import looks_like_output, output_paths, volume_stem
from vesselseg.inference.resample import ResampledVolume, grid_shape, source_positions
from vesselseg.inference.run import predict_path
from vesselseg.inference.voxels import merged_voxel_size, scale_decision
from vesselseg.io import VoxelSize, open_volume
from vesselseg.io.sidecar import write_sidecar
from vesselseg.models import build_model

runner = CliRunner()
HALF = (0.5, 0.5, 0.5)


def save_model(folder: Path, spacing=(1.0, 1.0, 1.0), unit: str = "um", name="m") -> Path:
    """A tiny seeded U-Net saved with its training voxel size (None: recorded without one)."""
    torch.manual_seed(0)
    cfg = ModelConfig(name="unet", base_channels=2, depth=2)
    meta = ModelMeta(
        model=params_to_dict(cfg),
        tile_size=[16, 16, 16],
        spacing=None if spacing is None else list(spacing),
        unit=None if spacing is None else unit,
    )
    return save_bundle(folder / f"{name}.pt", build_model(cfg).state_dict(), meta)


def save_input(path: Path, shape, spacing=HALF, unit: str = "um", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32))
    if spacing is not None:
        write_sidecar(path, {"spacing": list(spacing), "unit": unit})
    return path


def plus(offset: float):
    """A ``net_hook`` replacing the network by ``input + offset``."""
    return lambda fn: lambda x: x + offset


def run(volume: Path, model: Path, out: Path, cfg: InferConfig | None = None, **kw):
    cfg = cfg or InferConfig(tile_size=16)
    return predict_path(volume, model, out, cfg, device="cpu", show_progress=False, **kw)


def trilinear(a: np.ndarray, shape) -> np.ndarray:
    """Independent oracle: scipy on the whole volume at voxel centres, x = (i + 0.5) * s."""
    axes = [(np.arange(m) + 0.5) * n / m - 0.5 for n, m in zip(a.shape, shape)]
    coords = np.meshgrid(*axes, indexing="ij")
    return ndi.map_coordinates(a.astype(np.float64), coords, order=1, mode="nearest")


# --------------------------------------------------------------------------- interpolation


def test_convention_is_voxel_centres() -> None:
    # 4 voxels of 1 um -> 2 of 2 um: centres at 1 and 3 um are source positions 0.5 and 2.5
    np.testing.assert_allclose(source_positions(4, 2), [0.5, 2.5])
    np.testing.assert_allclose(source_positions(2, 4), [-0.25, 0.25, 0.75, 1.25])
    assert grid_shape((128, 15, 512), (0.5, 5.0, 1.0), (1.0, 1.0, 1.0)) == (64, 75, 512)
    assert grid_shape((3, 3, 3), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0)) == (1, 1, 1)


@pytest.mark.parametrize(
    "src,dst", [((10, 13, 17), (5, 7, 9)), ((9, 11, 12), (20, 5, 30)), ((1, 4, 5), (3, 2, 5))]
)
def test_resampling_equals_scipy_and_torch_and_any_box_equals_the_whole(src, dst) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=src).astype(np.float32)
    view = ResampledVolume(a, dst)
    whole = view[...]
    np.testing.assert_allclose(whole, trilinear(a, dst), rtol=0, atol=1e-5)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(a)[None, None], size=dst, mode="trilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(whole, ref, rtol=0, atol=1e-5)
    pieces = ResampledVolume(a, dst, max_box_bytes=256)  # computed in thin x-pieces
    for _ in range(40):
        box = []
        for n in dst:
            lo = int(rng.integers(0, n))
            box.append(slice(lo, int(rng.integers(lo + 1, n + 1))))
        assert np.array_equal(view[tuple(box)], whole[tuple(box)])  # bit for bit
        assert np.array_equal(pieces[tuple(box)], whole[tuple(box)])
    assert np.array_equal(ResampledVolume(np.full(src, 7, np.float32), dst)[...], np.full(dst, 7))
    # the training crops' kernel, at the same source positions, gives the same bits
    positions = [np.clip(source_positions(n, m), 0, n - 1) for n, m in zip(src, dst)]
    assert np.array_equal(whole, linear_resample(a, positions))


# --------------------------------------------------------------------------- prediction


def normalised_on_grid(raw: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """``raw`` resampled to ``grid`` and normalised with the percentiles of its own voxels (the
    network sees the model grid: its percentiles, not the raw input's, set the contrast)."""
    on_grid = trilinear(raw, grid)
    lo, hi = np.percentile(on_grid.astype(np.float64), [0.5, 99.5])
    return normalize(on_grid, lo, hi)


def test_plus_one_at_half_the_model_spacing_is_the_resampled_input_plus_one(
    tmp_path: Path,
) -> None:
    model = save_model(tmp_path)
    volume = save_input(tmp_path / "in" / "vol.npy", (40, 44, 52))
    result = run(volume, model, tmp_path / "out", net_hook=plus(1.0)).results[0]
    assert result.grid == (20, 22, 26)  # downsampled 2x to the model's 1 um
    raw = np.load(volume)
    on_grid = normalised_on_grid(raw, result.grid)
    want = trilinear(on_grid + 1, raw.shape)
    prob = np.load(result.outputs.prob)
    assert prob.shape == raw.shape
    np.testing.assert_allclose(prob, want, rtol=0, atol=1e-5)

    same = run(volume, model, tmp_path / "id", net_hook=plus(0.0)).results[0].outputs
    prob, mask = np.load(same.prob), np.load(same.mask)
    np.testing.assert_allclose(prob, trilinear(on_grid, raw.shape), rtol=0, atol=1e-5)
    assert 0 < mask.mean() < 1  # thresholded after resampling back
    assert np.array_equal(mask, (prob >= 0.5).astype(np.uint8))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "vol.m.mask.npy",
        "vol.m.mask.npy.json",
        "vol.m.prob.npy",
        "vol.m.prob.npy.json",
    ]  # the model-grid file is gone


def test_units_are_converted_and_a_coarser_input_is_upsampled(tmp_path: Path) -> None:
    model = save_model(tmp_path, spacing=(0.001, 0.001, 0.001), unit="mm")  # 1 um
    volume = save_input(tmp_path / "vol.npy", (10, 24, 12), spacing=(2.0, 1.0, 0.5))
    result = run(volume, model, tmp_path / "out", net_hook=plus(1.0)).results[0]
    assert result.grid == (20, 24, 6)
    raw = np.load(volume)
    lo, hi = np.percentile(raw.astype(np.float64), [0.5, 99.5])  # not averaged down: its own
    want = trilinear(normalize(trilinear(raw, result.grid), lo, hi) + 1, raw.shape)
    np.testing.assert_allclose(np.load(result.outputs.prob), want, rtol=0, atol=1e-5)


def test_plane_cut_into_regions_gives_the_same_result(tmp_path: Path) -> None:
    model = save_model(tmp_path)
    volume = save_input(tmp_path / "vol.npy", (32, 96, 112))
    whole = run(volume, model, tmp_path / "whole").results[0]
    cut = run(volume, model, tmp_path / "cut", max_buffer_mib=0.25).results[0]
    assert cut.peak_buffer_bytes < whole.peak_buffer_bytes  # the plane was cut
    np.testing.assert_allclose(np.load(cut.outputs.prob), np.load(whole.outputs.prob), atol=1e-6)


def test_resampled_buffers_do_not_grow_with_depth(tmp_path: Path) -> None:
    model = save_model(tmp_path)
    peaks = []
    for depth in (64, 256):
        volume = save_input(tmp_path / f"d{depth}" / "vol.npy", (depth, 24, 28))
        result = run(volume, model, tmp_path / f"out{depth}", net_hook=plus(1.0)).results[0]
        assert result.grid == (depth // 2, 12, 14)
        peaks.append((result.peak_buffer_bytes, result.resample_peak_bytes))
    assert peaks[0] == peaks[1]  # O(tile x plane): the predictor's and the resampling's
    assert 0 < peaks[0][1] < 256 * 24 * 28 * 4 / 2  # far less than a float32 copy of the input


class Interrupted(Exception):
    pass


def fail_after(calls: int):
    """A ``net_hook`` that raises on network call ``calls + 1``."""
    count = {"n": 0}

    def hook(fn):
        def wrapped(x):
            count["n"] += 1
            if count["n"] > calls:
                raise Interrupted
            return fn(x)

        return wrapped

    return hook


def test_resume_after_an_interruption_is_byte_identical(tmp_path: Path) -> None:
    model = save_model(tmp_path)
    volume = save_input(tmp_path / "in" / "vol.npy", (64, 48, 56))
    cfg = InferConfig(tile_size=16, batch_size=2)
    out = tmp_path / "out"
    paths = output_paths(out, volume.name, model)
    with pytest.raises(Interrupted):
        run(volume, model, out, cfg, net_hook=fail_after(4))
    progress = json.loads(paths.grid.with_name(paths.grid.name + ".progress.json").read_text())
    assert 0 < progress["next_tile"] < progress["n_tiles"]
    assert (out / (paths.grid.name + ".part")).exists()
    assert not paths.prob.exists() and not paths.mask.exists()  # nothing looks finished

    resumed = run(volume, model, out, cfg, resume=True).results[0]
    assert resumed.resumed_from == progress["next_tile"]
    assert 0 < resumed.tiles < progress["n_tiles"]
    ref = run(volume, model, tmp_path / "ref", cfg).results[0].outputs
    assert paths.prob.read_bytes() == ref.prob.read_bytes()
    assert paths.mask.read_bytes() == ref.mask.read_bytes()
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in ref.prob.parent.iterdir())


def test_interrupted_while_writing_back_resumes_without_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vesselseg.inference import volume_run

    model = save_model(tmp_path)
    volume = save_input(tmp_path / "in" / "vol.npy", (32, 24, 28))
    ref = run(volume, model, tmp_path / "ref").results[0]

    def broken(*args, **kw):
        raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(volume_run, "write_back", broken)
        with pytest.raises(Interrupted):
            run(volume, model, tmp_path / "out")
    again = run(volume, model, tmp_path / "out", resume=True).results[0]
    assert again.tiles == 0 and again.resumed_from > 0  # pass 1 was complete
    assert again.outputs.prob.read_bytes() == ref.outputs.prob.read_bytes()
    assert again.outputs.mask.read_bytes() == ref.outputs.mask.read_bytes()


def test_no_resample_unknown_spacing_or_no_model_spacing_give_todays_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plain = save_model(tmp_path / "plain", spacing=None)
    model = save_model(tmp_path)
    bare = save_input(tmp_path / "bare" / "vol.npy", (20, 24, 28), spacing=None)
    known = save_input(tmp_path / "known" / "vol.npy", (20, 24, 28))
    today = run(bare, plain, tmp_path / "today").results[0].outputs  # neither knows a spacing
    with caplog.at_level(logging.INFO, logger="vesselseg.inference.voxels"):
        caplog.clear()
        runs = {
            "unknown input": run(bare, model, tmp_path / "a").results[0],
            "no model spacing": run(known, plain, tmp_path / "b").results[0],
            "--no-resample": run(
                known, model, tmp_path / "c", InferConfig(tile_size=16, resample=False)
            ).results[0],
        }
    for name, result in runs.items():
        assert result.grid is None, name
        assert result.outputs.prob.read_bytes() == today.prob.read_bytes(), name
        assert result.outputs.mask.read_bytes() == today.mask.read_bytes(), name
    said = [r.getMessage() for r in caplog.records if r.name == "vesselseg.inference.voxels"]
    assert len(said) == 3
    assert "voxel size unknown" in said[0] and "predicted as is" in said[0]
    assert "records no training voxel size" in said[1]
    assert "--no-resample" in said[2]


@pytest.mark.parametrize("fmt", ["npy", "tiff", "zarr", "ome-zarr", "nifti"])
def test_outputs_carry_the_input_spacing(tmp_path: Path, fmt: str) -> None:
    model = save_model(tmp_path)
    volume = save_input(tmp_path / "vol.npy", (8, 40, 48), spacing=(2.0, 0.5, 0.5))
    cfg = InferConfig(tile_size=16, out_format=fmt)
    result = run(volume, model, tmp_path / "out", cfg).results[0]
    assert result.grid == (16, 20, 24)
    for path in (result.outputs.prob, result.outputs.mask):
        written = open_volume(path)
        assert written.shape == (8, 40, 48)
        assert written.spacing_known and written.unit == "um"
        np.testing.assert_allclose(written.spacing, (2.0, 0.5, 0.5), rtol=1e-5)


def test_shards_of_resampled_inputs_equal_one_run(tmp_path: Path) -> None:
    model = save_model(tmp_path)
    for i, name in enumerate(("c", "a", "b")):
        save_input(tmp_path / "in" / f"vol_{name}.npy", (24, 20, 24), seed=i)
    whole = run(tmp_path / "in", model, tmp_path / "all").results
    assert all(r.grid == (12, 10, 12) for r in whole)
    for i in range(2):
        run(tmp_path / "in", model, tmp_path / "parts", shard=(i, 2))
    files = {p.name: p.read_bytes() for p in (tmp_path / "all").iterdir()}
    assert files == {p.name: p.read_bytes() for p in (tmp_path / "parts").iterdir()}


def test_datasets_predicted_for_evaluate_and_pseudo_take_the_override(tmp_path: Path) -> None:
    from vesselseg.inference.run import ensure_predictions
    from vesselseg.io import discover_dataset

    model = save_model(tmp_path)
    save_input(tmp_path / "data" / "data_a.npy", (20, 24, 28), spacing=None)
    np.save(tmp_path / "data" / "mask_a.npy", np.zeros((20, 24, 28), np.uint8))
    cfg = InferConfig(tile_size=16, spacing=[0.5, 0.5, 0.5])
    probs = ensure_predictions(discover_dataset(tmp_path / "data"), model, tmp_path / "p", cfg)
    assert open_volume(probs["a"]).spacing == HALF


def test_ensemble_members_must_agree_on_their_spacing() -> None:
    um = SimpleNamespace(spacing=[1.0, 1.0, 1.0], unit="um")
    mm = SimpleNamespace(spacing=[0.001, 0.001, 0.001], unit="mm")
    none = SimpleNamespace()
    assert merged_voxel_size([um, mm, none], "e.json").spacing == (1.0, 1.0, 1.0)
    assert merged_voxel_size([none, none], "e.json") is None
    with pytest.raises(ConfigError, match="different voxel sizes"):
        merged_voxel_size([um, SimpleNamespace(spacing=[2, 1, 1], unit="um")], "e.json")


def test_a_shape_that_rounds_to_itself_is_not_resampled() -> None:
    size = VoxelSize((1.01, 1.0, 1.0), "um", True)
    assert scale_decision("v", (20, 20, 20), size, VoxelSize((1.0,) * 3, "um", True)) is None


def test_output_names_of_every_input_format(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    for name in ("X.nii.gz", "X.nii", "X.mha", "X.mhd", "X.nrrd", "X.nhdr", "X.ome.zarr"):
        assert volume_stem(name) == "X", name
        assert output_paths(tmp_path, name, model).prob.name == "X.m.prob.npy"
    assert volume_stem("X.jp2") == "X" and volume_stem("X.zarr") == "X"
    paths = output_paths(tmp_path, "X.npy", model, "nifti")
    assert paths.prob.name == "X.m.prob.nii.gz"
    assert output_paths(tmp_path, "X.npy", model, "ome-zarr").mask.name == "X.m.mask.ome.zarr"
    for written in (paths.prob, paths.mask, paths.grid, Path(str(paths.grid) + ".part")):
        assert looks_like_output(written), written
    assert not looks_like_output(tmp_path / "X.nii.gz")


# --------------------------------------------------------------------------- CLI


def predict_cli(volume: Path, model: Path, out: Path, *extra: str):
    args = ["predict", str(volume), "--model", str(model), "--out-dir", str(out)]
    return runner.invoke(app, [*args, "--tile-size", "16", "--device", "cpu", *extra])


def test_spacing_option_overrides_the_file(tmp_path: Path) -> None:
    model = save_model(tmp_path)
    known = save_input(tmp_path / "known" / "vol.npy", (20, 24, 28))
    bare = save_input(tmp_path / "bare" / "vol.npy", (20, 24, 28), spacing=None)
    ref = run(known, model, tmp_path / "ref").results[0].outputs
    result = predict_cli(bare, model, tmp_path / "cli", "--spacing", "0.5,0.5,0.5")
    assert result.exit_code == 0, result.output
    got = output_paths(tmp_path / "cli", "vol.npy", model)
    assert got.prob.read_bytes() == ref.prob.read_bytes()
    assert open_volume(got.prob).spacing == HALF
    # --unit mm: 0.0005 mm is the same 0.5 um
    result = predict_cli(bare, model, tmp_path / "mm", "--spacing", "5e-4,5e-4,5e-4", "--unit=mm")
    assert result.exit_code == 0, result.output
    mm = output_paths(tmp_path / "mm", "vol.npy", model)
    assert mm.prob.read_bytes() == ref.prob.read_bytes()
    assert open_volume(mm.prob).voxel_size.unit == "mm"
    # --no-resample on the command line, and infer.resample=false in the params
    today = run(bare, model, tmp_path / "today").results[0].outputs
    for i, extra in enumerate((["--no-resample"], ["--set", "infer.resample=false"])):
        result = predict_cli(known, model, tmp_path / f"no{i}", *extra)
        assert result.exit_code == 0, result.output
        no = output_paths(tmp_path / f"no{i}", "vol.npy", model)
        assert no.prob.read_bytes() == today.prob.read_bytes()


BAD = [
    ("--spacing", "0,1,1"),
    ("--spacing", "-1,1,1"),
    ("--spacing", "nan,1,1"),
    ("--spacing", "1,2"),
    ("--spacing", "a,b,c"),
    ("--unit", "parsec"),
]


@pytest.mark.parametrize("command", ["predict", "evaluate", "pseudo", "info"])
@pytest.mark.parametrize("option,value", BAD)
def test_bad_spacing_is_one_line_exit_2(
    tmp_path: Path, command: str, option: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    volume = save_input(tmp_path / "in" / "data_a.npy", (16, 16, 16), spacing=None)
    out = tmp_path / "out"
    model = str(tmp_path / "m.pt")
    args = {
        "predict": [str(volume), "--model", model, "--out-dir", str(out)],
        "evaluate": ["--model", model, "--data-dir", str(volume.parent), "--pred-dir", str(out)],
        "pseudo": ["--model", model, "--data-dir", str(volume.parent), "--out-dir", str(out)],
        "info": [str(volume)],
    }[command]
    extra = [option, value] if option == "--spacing" else ["--spacing", "1,1,1", option, value]
    result = runner.invoke(app, [command, *args, *extra])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(("error: --spacing", "error: --unit")), lines
    assert not out.exists()


def test_info_prints_the_override(tmp_path: Path) -> None:
    volume = save_input(tmp_path / "vol.npy", (8, 8, 8), spacing=None)
    result = runner.invoke(app, ["info", str(volume)])
    assert result.exit_code == 0 and "spacing: unknown" in result.output
    result = runner.invoke(app, ["info", str(volume), "--spacing", "5,1,1"])
    assert result.exit_code == 0 and "spacing: 5 x 1 x 1 um (z, y, x)" in result.output
    result = runner.invoke(app, ["info", str(volume), "--spacing", "5,1,1", "--unit", "mm"])
    assert "spacing: 5 x 1 x 1 mm (z, y, x)" in result.output
    result = runner.invoke(app, ["info", str(volume), "--spacing", "2"])  # one side: isotropic
    assert result.exit_code == 0 and "spacing: 2 x 2 x 2 um (z, y, x)" in result.output
    result = runner.invoke(app, ["info", str(volume.parent), "--spacing", "5,1,1"])
    assert result.exit_code == 0 and "5 x 1 x 1 um" in result.output
