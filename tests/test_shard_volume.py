"""Sharding inside a volume (``predict --shard i/n`` with fewer volumes than shards): z-blocks of
one shared zarr / OME-Zarr store, byte-identical to one process; the OME-Zarr pyramid; ``view``.

The oracle throughout is an ordinary single-process run: the sharded stores must hold the same
bytes (every file, chunk by chunk), and level 0 the same bytes as the ``.npy`` output.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vesselseg.cli import app
from vesselseg.config import InferConfig
from vesselseg.inference.blocks import (
    assign_blocks,
    batch_starts,
    cells_in_z,
    runs_of,
    tiles_for,
    z_blocks,
)
from vesselseg.inference.plan import choose_block, make_plan
from vesselseg.inference.predictor import StreamingPredictor
from vesselseg.inference.run import predict_path
from vesselseg.inference.shared_store import blocks_folder
from vesselseg.inference.sinks import ArraySink
from vesselseg.inference.tiling import make_grid
from vesselseg.inference.tissue import Tissue
from vesselseg.io import open_volume, write_volume
from vesselseg.io.formats.pyramid import build_level, downsample, level_shapes
from vesselseg.io.spacing import VoxelSize

runner = CliRunner()
SPACING = VoxelSize((2.0, 0.5, 0.5), "um", True)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``: relative path → bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture()
def volume(tmp_path: Path) -> Path:
    """A 44 x 30 x 26 volume at 2 x 0.5 x 0.5 um (npy + sidecar)."""
    data = np.random.default_rng(0).normal(100, 20, (44, 30, 26)).astype(np.float32)
    return write_volume(tmp_path / "v.npy", data, voxel_size=SPACING)


def cfg(**kw) -> InferConfig:
    return InferConfig(tile_size=16, batch_size=3, chunk_size=8, **{"out_format": "ome-zarr", **kw})


def run(path: Path, model: Path, out: Path, config: InferConfig, **kw):
    return predict_path(path, model, out, config, device="cpu", show_progress=False, **kw)


# --------------------------------------------------------------------------- the pure plan


@pytest.mark.parametrize("block", [None, (20, 20)])
def test_blocks_cover_every_cell_and_window_once(block) -> None:
    grid = make_grid((44, 50, 40), (16, 16, 16), overlap=0.4)
    plan = make_plan(grid, block)
    ranges = z_blocks(44, 8)
    assert ranges[0] == (0, 8) and ranges[-1] == (40, 44) and len(ranges) == 6
    per_block = [cells_in_z(plan, *r) for r in ranges]
    assert set().union(*per_block) == set(plan.cells)
    assert tiles_for(plan, set(plan.cells)) == list(range(plan.n_tiles))
    assert batch_starts(plan, set(plan.cells), 4) == list(range(0, plan.n_tiles, 4))
    for r, cells in zip(ranges, per_block):  # a block's cells reach into it, no further
        for key in cells:
            z = plan.cell_slices(key)[0]
            assert z.start < r[1] and z.stop > r[0]
    assert assign_blocks([3, 2], (0, 2)) + assign_blocks([3, 2], (1, 2)) == [
        (0, 0), (0, 1), (0, 2), (1, 0), (1, 1),
    ]  # fmt: skip
    assert assign_blocks([2], (3, 4)) == [(0, 1)] and assign_blocks([2], (0, 4)) == []
    assert runs_of([5, 1, 2, 7, 6]) == [[1, 2], [5, 6, 7]]


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"blend": "constant"},
        {"border": 3},
        {"overlap": 0.5, "block": (18, 18)},
        {"tissue": True},
        {"tissue": True, "block": (18, 18)},
    ],
)
def test_block_runs_equal_the_whole_run_bit_for_bit(kw: dict) -> None:
    """Blocks predicted apart (each with its halo windows) hold exactly the whole run's bits,
    also when windows without tissue are skipped and the others regrouped (this convolution's
    last bit depends on the batch size, so a block must group its windows as the whole run)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 1, 3, padding=1)

    def net(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(conv(x))

    block = kw.pop("block", None)
    tissue = Tissue(threshold=0.5) if kw.pop("tissue", False) else None
    volume = np.random.default_rng(1).normal(0, 1, (37, 40, 33)).astype(np.float32)
    if tissue is not None:
        volume[:, :, 17:] = -1  # no tissue there: the windows there are skipped
        volume[:, 20:30, :] = -1
    grid = make_grid(volume.shape, (16, 16, 16), **kw)
    predictor = StreamingPredictor(net, grid, batch_size=3, block=block, tissue=tissue)
    whole = ArraySink(volume.shape)
    with torch.no_grad():
        full = predictor.run(volume, whole)
        parts = ArraySink(volume.shape)
        tiles = 0
        for z0, z1 in z_blocks(37, 8):
            sink = ArraySink(volume.shape)
            tiles += predictor.run(volume, sink, cells=cells_in_z(predictor.plan, z0, z1)).tiles
            parts.array[z0:z1] = sink.array[z0:z1]
    assert not np.isnan(parts.array).any()
    assert parts.array.tobytes() == whole.array.tobytes()
    assert tiles > full.tiles  # halos were recomputed
    assert (full.skipped > 0) == (tissue is not None)


# --------------------------------------------------------------------------- shards in process


def test_shards_of_one_volume_give_the_bytes_of_one_run(
    volume: Path, tiny_model: Path, tmp_path: Path
) -> None:
    config = cfg()
    one = run(volume, tiny_model, tmp_path / "one", config).results[0]
    for i in (2, 0, 3, 1):  # any order; the last one to finish finalizes
        summary = run(volume, tiny_model, tmp_path / "four", config, shard=(i, 4))
        (result,) = summary.results
        assert result.blocks is not None and result.blocks[1] == 6
        assert result.finalized == (i == 1)
        assert "z-blocks" in summary.line()
    assert tree(tmp_path / "four") == tree(tmp_path / "one")  # pyramids included
    ref = run(volume, tiny_model, tmp_path / "npy", cfg(out_format="npy")).results[0]
    level0 = np.asarray(open_volume(one.outputs.prob)[:])
    assert level0.tobytes() == np.load(ref.outputs.prob).tobytes()
    assert (
        np.asarray(open_volume(one.outputs.mask)[:]).tobytes()
        == np.load(ref.outputs.mask).tobytes()
    )
    assert not blocks_folder(one.outputs).exists()


def test_plane_cut_into_regions_and_zarr_format(tiny_model: Path, tmp_path: Path) -> None:
    data = np.random.default_rng(2).normal(0, 1, (40, 56, 48)).astype(np.float32)
    path = write_volume(tmp_path / "w.npy", data)
    config = cfg(out_format="zarr", prob_dtype="uint8")
    budget = 0.25  # MiB: the plane is cut into regions
    assert choose_block(make_grid(data.shape, (16, 16, 16)), int(budget * 2**20)) is not None
    run(path, tiny_model, tmp_path / "one", config, max_buffer_mib=budget)
    for i in range(3):
        run(path, tiny_model, tmp_path / "three", config, shard=(i, 3), max_buffer_mib=budget)
    assert tree(tmp_path / "three") == tree(tmp_path / "one")


def test_folder_with_fewer_volumes_than_shards(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    for name in ("b", "a"):
        np.save(tmp_path / f"in_{name}.npy", rng.normal(0, 1, (20, 18, 18)).astype(np.float32))
    folder = tmp_path / "in"
    folder.mkdir()
    for p in tmp_path.glob("in_*.npy"):
        p.rename(folder / p.name)
    args = ["predict", str(folder), "--model", str(tiny_model), "--tile-size", "16"]
    args += ["--device", "cpu", "--set", "infer.chunk_size=8"]
    # npy cannot be shared by workers: one line, exit 2, nothing written
    bad = runner.invoke(app, [*args, "--out-dir", "bad", "--shard", "0/3"])
    assert bad.exit_code == 2 and "--out-format zarr or ome-zarr" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()

    zarr_args = [*args, "--out-format", "zarr"]
    assert runner.invoke(app, [*zarr_args, "--out-dir", "one"]).exit_code == 0
    lines = []
    for i in range(3):  # 2 volumes x 3 blocks: 2 blocks a shard, shard 1 takes one of each
        result = runner.invoke(app, [*zarr_args, "--out-dir", "three", "--shard", f"{i}/3"])
        assert result.exit_code == 0, result.output
        lines.append(result.stdout)
    assert "predicted 2 of 6 z-blocks of 2 volume(s)" in lines[1]
    assert tree(tmp_path / "three") == tree(tmp_path / "one")


def test_resume_skips_done_blocks_and_finalize_takes_over(
    volume: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vesselseg.inference import shared_store

    config, out = cfg(), tmp_path / "out"
    first = run(volume, tiny_model, out, config, shard=(0, 2)).results[0]
    again = run(volume, tiny_model, out, config, shard=(0, 2), resume=True).results[0]
    assert first.tiles > 0 and again.tiles == 0 and again.blocks == (0, 6)
    folder = blocks_folder(first.outputs)

    def dies(*args) -> None:
        raise RuntimeError("killed while finalizing")

    with monkeypatch.context() as patch:  # the last worker takes the lock, then dies
        patch.setattr(shared_store, "finish_outputs", dies)
        with pytest.raises(RuntimeError, match="killed"):
            run(volume, tiny_model, out, config, shard=(1, 2))
    assert (folder / "finalize.lock").exists() and not first.outputs.prob.exists()
    late = run(volume, tiny_model, out, config, shard=(1, 2), resume=True).results[0]
    assert late.tiles == 0 and not late.finalized  # the lock is held: it leaves it alone
    # --finalize: one line, exit 2 while blocks are missing; then it finishes the store
    args = ["predict", str(volume), "--model", str(tiny_model), "--out-dir", str(out)]
    args += ["--out-format", "ome-zarr", "--finalize"]
    (folder / "done-000005").rename(folder / "moved")
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "1 of 6 z-blocks are not predicted" in missing.stderr
    (folder / "moved").rename(folder / "done-000005")
    done = runner.invoke(app, args)
    assert done.exit_code == 0 and "finalized 1 volume(s)" in done.stdout, done.output
    run(volume, tiny_model, tmp_path / "one", config)
    assert tree(out) == tree(tmp_path / "one")
    skipped = run(volume, tiny_model, out, config, shard=(0, 2)).results[0]
    assert skipped.skipped  # complete: every shard leaves it alone


def test_shards_with_other_settings_are_refused(
    volume: Path, tiny_model: Path, tmp_path: Path
) -> None:
    run(volume, tiny_model, tmp_path / "out", cfg(), shard=(0, 2))
    args = ["predict", str(volume), "--model", str(tiny_model), "--out-dir", str(tmp_path / "out")]
    args += ["--tile-size", "16", "--batch-size", "3", "--out-format", "ome-zarr", "--device"]
    args += ["cpu", "--set", "infer.chunk_size=8", "--threshold", "0.6", "--shard", "1/2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "other settings" in lines[0]


# --------------------------------------------------------------------------- OME-Zarr


def test_downsampling_oracle_and_pieces(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import zarr

    from vesselseg.io.formats import pyramid

    data = np.random.default_rng(4).integers(0, 256, (5, 7, 6)).astype(np.uint8)
    mean, top = downsample(data, (2, 2, 1), "mean"), downsample(data, (2, 2, 1), "max")
    assert mean.shape == top.shape == (3, 4, 6)
    for z, y, x in np.ndindex(mean.shape):
        box = data[2 * z : 2 * z + 2, 2 * y : 2 * y + 2, x]  # edge boxes: what there is
        assert mean[z, y, x] == np.rint(box.astype(np.float64).mean())
        assert top[z, y, x] == box.max()
    assert level_shapes((44, 30, 26), (8, 8, 8)) == [
        (44, 30, 26),
        (22, 15, 13),
        (11, 8, 7),
        (6, 8, 7),
    ]
    big = np.random.default_rng(5).random((33, 40, 50), dtype=np.float32)
    target = zarr.open_array(
        str(tmp_path / "t.zarr"), mode="w", shape=(17, 20, 25), dtype="f4", chunks=(4, 4, 4)
    )
    monkeypatch.setattr(pyramid, "PIECE_BYTES", 1000)  # many pieces
    build_level(big, target, (2, 2, 2), "mean")
    assert np.asarray(target[:]).tobytes() == downsample(big, (2, 2, 2), "mean").tobytes()


def test_ome_zarr_opens_with_an_independent_reader(
    volume: Path, tiny_model: Path, tmp_path: Path
) -> None:
    import zarr

    result = run(volume, tiny_model, tmp_path / "out", cfg(), shard=(0, 1)).results[0]
    shapes = [(44, 30, 26), (22, 15, 13), (11, 8, 7), (6, 8, 7)]
    for path, method in ((result.outputs.prob, "mean"), (result.outputs.mask, "max")):
        meta = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
        assert meta["version"] == "0.5"
        (multiscale,) = meta["multiscales"]
        assert multiscale["type"] == method
        assert [a["unit"] for a in multiscale["axes"]] == ["micrometer"] * 3
        group = zarr.open_group(str(path), mode="r")
        factors = [(1, 1, 1), (2, 2, 2), (4, 4, 4), (8, 4, 4)]
        for k, (level, factor) in enumerate(zip(multiscale["datasets"], factors)):
            assert group[level["path"]].shape == shapes[k]
            transforms = {t["type"]: t[t["type"]] for t in level["coordinateTransformations"]}
            assert transforms["scale"] == [s * f for s, f in zip(SPACING.spacing, factor)]
            expected = [(f - 1) / 2 * s for s, f in zip(SPACING.spacing, factor)]
            assert transforms.get("translation", [0.0] * 3) == expected
        assert open_volume(path).spacing == SPACING.spacing  # our reader: level 0
    reader = pytest.importorskip("ome_zarr.reader")
    from ome_zarr.io import parse_url

    (node, *_) = list(reader.Reader(parse_url(str(result.outputs.prob)))())
    assert [tuple(d.shape) for d in node.data] == shapes
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales[0] == [2.0, 0.5, 0.5] and scales[3] == [16.0, 2.0, 2.0]
    assert (
        np.asarray(node.data[0]).tobytes()
        == np.asarray(open_volume(result.outputs.prob)[:]).tobytes()
    )


# --------------------------------------------------------------------------- view


def test_view_writes_a_png_headless(
    volume: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vesselseg import view

    for key in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(key, raising=False)
    result = run(volume, tiny_model, tmp_path / "out", cfg()).results[0]
    monkeypatch.setattr(view, "VIEW_VOXELS", 3000)  # big for the viewer: a coarser level
    ok = runner.invoke(app, ["view", str(result.outputs.prob), "--image", str(volume)])
    assert ok.exit_code == 0, ok.output
    png = result.outputs.prob.with_name(result.outputs.prob.name + ".png")
    assert ok.stdout.strip() == f"wrote {png}"
    from matplotlib.image import imread

    picture = imread(png)
    assert picture.shape[0] > 400 and picture.shape[1] > 600
    assert picture[..., :3].std() > 0.05  # not a blank page
    layers = view.open_layers(result.outputs.prob, volume)
    assert layers.mask is not None and len(layers.mask) == 4  # the mask beside it, every level
    assert view.coarse(layers.prob, 3000)[0] == 2  # level 2 (11 x 8 x 7) is the finest that fits

    other = write_volume(tmp_path / "o.npy", np.zeros((4, 5, 6), np.float32))
    bad = runner.invoke(app, ["view", str(result.outputs.prob), "--image", str(other)])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "differs" in bad.stderr
    missing = runner.invoke(app, ["view", str(tmp_path / "nope.npy")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_view_opens_napari_layers_at_the_voxel_size(
    volume: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a display and napari, the layers napari gets: a stand-in records them."""
    calls: list[tuple[str, dict]] = []

    class Viewer:
        def __init__(self, **kw) -> None:
            calls.append(("viewer", kw))

        def add_image(self, data, **kw) -> None:
            calls.append(("image", {**kw, "levels": len(data) if isinstance(data, list) else 1}))

        def add_labels(self, data, **kw) -> None:
            calls.append(("labels", {**kw, "levels": len(data) if isinstance(data, list) else 1}))

    fake = types.ModuleType("napari")
    fake.Viewer, fake.run = Viewer, lambda: calls.append(("run", {}))
    fake.__spec__ = types.SimpleNamespace(name="napari")  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "napari", fake)
    monkeypatch.setenv("DISPLAY", ":0")
    from vesselseg import view

    monkeypatch.setattr(view, "napari_available", lambda: True)
    result = run(volume, tiny_model, tmp_path / "out", cfg()).results[0]
    shown = runner.invoke(app, ["view", str(result.outputs.prob), "--image", str(volume)])
    assert shown.exit_code == 0, shown.output
    kinds = [(kind, kw.get("name"), kw.get("levels")) for kind, kw in calls]
    assert kinds == [
        ("viewer", None, None), ("image", "image", 1), ("image", "probability", 4),
        ("labels", "mask", 4), ("run", None, None),
    ]  # fmt: skip
    assert all(kw["scale"] == SPACING.spacing for kind, kw in calls if kind in ("image", "labels"))


# --------------------------------------------------------------------------- real processes


@pytest.mark.slow
def test_four_cli_processes_on_one_volume_give_the_bytes_of_one(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Four `vesselseg predict --shard i/4` processes at once (racing to create the store)."""
    from test_crash_recovery import finish, start_cli

    data = np.random.default_rng(6).normal(100, 20, (48, 30, 26)).astype(np.float32)
    path = write_volume(tmp_path / "v.npy", data, voxel_size=SPACING)
    args = ["predict", str(path), "--model", str(tiny_model), "--tile-size", "16"]
    args += ["--batch-size", "3", "--out-format", "ome-zarr", "--device", "cpu"]
    args += ["--set", "infer.chunk_size=8"]
    four = tmp_path / "four"
    procs = [
        start_cli([*args, "--out-dir", str(four), "--shard", f"{i}/4"], tmp_path / f"w{i}")
        for i in range(4)
    ]
    logs = [finish(proc) for proc in procs]
    assert sum("finalized 1" in log for log in logs) == 1, logs  # the last one, only
    run(path, tiny_model, tmp_path / "one", cfg())  # one process (this one), same threads
    assert tree(four) == tree(tmp_path / "one")
    assert {p.name for p in four.iterdir()} == {"v.stage1.prob.ome.zarr", "v.stage1.mask.ome.zarr"}


SLOW_SHARD = """
import sys, time
from vesselseg.config import InferConfig
from vesselseg.inference.run import predict_path

def slow(fn):
    def wrapped(x):
        time.sleep(0.3)
        return fn(x)
    return wrapped

cfg = InferConfig(tile_size=16, batch_size=2, chunk_size=8, out_format="ome-zarr")
predict_path(sys.argv[1], sys.argv[2], sys.argv[3], cfg, device="cpu", show_progress=False,
             net_hook=slow, shard=(0, 2))
"""


@pytest.mark.slow
def test_sigkilled_shard_resumed_gives_the_same_bytes(tiny_model: Path, tmp_path: Path) -> None:
    import subprocess

    from test_crash_recovery import cli_env, kill_when

    data = np.random.default_rng(7).normal(0, 1, (64, 24, 24)).astype(np.float32)
    path = write_volume(tmp_path / "v.npy", data)
    out = tmp_path / "killed"
    config = InferConfig(tile_size=16, batch_size=2, chunk_size=8, out_format="ome-zarr")
    log = tmp_path / "shard.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_SHARD, str(path), str(tiny_model), str(out)],
            env=cli_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    proc.log = log  # type: ignore[attr-defined]
    folder = out / "v.stage1.prob.ome.zarr.blocks"
    # blocks 0-2 done: the block left (planes 24-32) needs fewer windows than all four
    kill_when(proc, lambda: (folder / "done-000002").is_file(), timeout=120)
    done = sorted(p.name for p in folder.glob("done-*"))
    assert done == ["done-000000", "done-000001", "done-000002"]  # killed inside its share
    assert not (out / "v.stage1.prob.ome.zarr").exists()  # nothing looks finished

    resumed = run(path, tiny_model, out, config, shard=(0, 2), resume=True).results[0]
    fresh = run(path, tiny_model, tmp_path / "fresh", config, shard=(0, 2)).results[0]
    assert 0 < resumed.tiles < fresh.tiles and resumed.blocks == (1, 8)
    last = run(path, tiny_model, out, config, shard=(1, 2)).results[0]
    assert last.finalized
    run(path, tiny_model, tmp_path / "one", config)
    assert tree(out) == tree(tmp_path / "one")
