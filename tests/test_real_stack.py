"""A thin real stack (15 x 128 x 128 of a two-photon volume of ../shared/realdata, sparse
boxes) trains one epoch end to end from the CLI with no size given: the plan picks them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from realdata import load_volumes, realdata_dir, save, voxel_size_from_text  # noqa: E402

from vesselseg.bundle import load_meta  # noqa: E402
from vesselseg.cli import app  # noqa: E402
from vesselseg.synth.boxes import boxes_mask, draw_boxes  # noqa: E402

FOLDER = realdata_dir()
runner = CliRunner()


def test_voxel_size_lines_of_the_realdata_notes() -> None:
    assert voxel_size_from_text(
        "voxel size: 0.994 x 0.994 um (xy), 5.0 um z step per full-stack OME metadata"
    ) == (5.0, 0.994, 0.994)
    assert voxel_size_from_text(
        "origin: x\nvoxel size: ~0.621 um xy (like santos2015_tumor), 5.0 um z (metadata missing)"
    ) == (5.0, 0.621, 0.621)
    with pytest.raises(ValueError):
        voxel_size_from_text("no size here")


@pytest.mark.skipif(FOLDER is None, reason="no ../shared/realdata (or $VESSELSEG_REALDATA)")
def test_thin_real_stack_trains_one_epoch_with_planned_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = next(v for v in load_volumes(FOLDER, crop=(128, 128)) if v.id == "tgMouse")
    assert volume.data.shape == (15, 128, 128) and volume.spacing == (5.0, 0.994, 0.994)
    train = draw_boxes(volume.truth, fraction=0.01, side=48, seed=0)
    val = draw_boxes(volume.truth, side=48, seed=1, n_boxes=1, exclude=train)
    for split, boxes in (("train", train), ("val", val)):
        (tmp_path / split).mkdir()
        save(tmp_path / split / "data_a.npy", volume.data, volume.spacing)
        save(tmp_path / split / "mask_a.npy", boxes_mask(volume.truth, boxes), volume.spacing)
    monkeypatch.chdir(tmp_path)  # MLflow store and caches in the test's folder
    args = ["train", "--data-dir", str(tmp_path), "--max-epochs", "1", "--out", "m.pt"]
    result = runner.invoke(app, [*args, "--set", "data.samples_per_volume=4"])
    assert result.exit_code == 0, result.output
    assert "calibrated threshold" in result.output
    meta = load_meta(tmp_path / "m.pt")
    model = meta.model
    # the plan: z is not pooled (5 um against 1 um), the crop fits the 15 slices
    assert model["strides"] is not None and all(s[0] == 1 for s in model["strides"][:2])
    assert meta.tile_size[0] <= 15 and meta.tile_size[1] > meta.tile_size[0]
    assert meta.spacing == pytest.approx([5.0, 0.994, 0.994])
    calibration = meta.info["calibration"]
    assert meta.threshold == calibration["threshold"] and 0.05 <= meta.threshold <= 0.95
    assert calibration["annotated_voxels"] == int(np.count_nonzero(boxes_mask(volume.truth, val)))
