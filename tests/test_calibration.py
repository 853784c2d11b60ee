"""Calibrated thresholds: chosen on the validation annotation, kept in the model, used by
predict unless --threshold is given, shown in the registry listing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vesselseg.bundle import load_meta, update_settings
from vesselseg.cli import app
from vesselseg.config import InferConfig
from vesselseg.evaluation.calibrate import (
    calibrate_threshold,
    calibration_grid,
    choose_threshold,
    record_calibration,
)
from vesselseg.inference.outputs import output_paths

runner = CliRunner()


def test_grid_and_choice() -> None:
    grid = calibration_grid()
    assert grid[0] == 0.05 and grid[-1] == 0.95 and len(grid) == 19
    assert choose_threshold([0.1, 0.3, 0.5, 0.7], [0.2, 0.9, 0.5, 0.1]) == 1
    # a plateau of equal Dice keeps the threshold nearest 0.5, on either side
    assert choose_threshold([0.1, 0.3, 0.5, 0.7], [0.9, 0.9, 0.9, 0.2]) == 2
    assert choose_threshold([0.6, 0.7, 0.8], [0.8, 0.8, 0.8]) == 0
    with pytest.raises(ValueError):
        choose_threshold([0.5], [0.1, 0.2])


def test_threshold_leaves_the_default_only_for_a_gain_beyond_the_tie() -> None:
    thresholds = [0.3, 0.35, 0.4, 0.45, 0.5, 0.55]
    slight = [0.880, 0.893, 0.891, 0.890, 0.888, 0.870]  # 0.35 is 0.005 better than 0.5
    assert thresholds[choose_threshold(thresholds, slight)] == 0.5
    clear = [0.880, 0.910, 0.898, 0.895, 0.888, 0.870]  # 0.35 is 0.022 better
    assert thresholds[choose_threshold(thresholds, clear)] == 0.35
    # the nearest to 0.5 among those within the tie of the best, not 0.5 itself
    near = [0.880, 0.910, 0.905, 0.903, 0.888, 0.870]
    assert thresholds[choose_threshold(thresholds, near)] == 0.45


def val_folder(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A validation volume whose annotation is half vessel (1), half background (2), with
    unannotated voxels (0) in between."""
    folder = tmp_path / "val"
    folder.mkdir()
    rng = np.random.default_rng(0)
    mask = rng.choice(np.array([0, 1, 2], np.uint8), size=(8, 16, 16), p=[0.5, 0.25, 0.25])
    np.save(folder / "data_a.npy", rng.normal(size=mask.shape).astype(np.float32))
    np.save(folder / "mask_a.npy", mask)
    return folder, mask


@pytest.mark.parametrize("vessel,background,want", [(0.3, 0.2, 0.3), (0.8, 0.62, 0.65)])
def test_calibration_finds_the_oracle_threshold(
    tmp_path: Path, tiny_model: Path, vessel: float, background: float, want: float
) -> None:
    """Probabilities ``vessel`` on label 1, ``background`` on label 2 and anything on the
    unannotated voxels: every threshold in (background, vessel] separates them perfectly,
    and the one nearest 0.5 is chosen; unannotated voxels do not count."""
    folder, mask = val_folder(tmp_path)
    prob = np.where(mask == 1, vessel, background).astype(np.float32)
    prob[mask == 0] = np.random.default_rng(1).random(int((mask == 0).sum()))
    work = tmp_path / "pred"
    paths = output_paths(work, "data_a.npy", tiny_model)
    work.mkdir()
    np.save(paths.prob, prob)  # already predicted: the calibration reads these
    np.save(paths.mask, prob >= 0.5)
    cal = calibrate_threshold(tiny_model, folder, InferConfig(tile_size=16), work_dir=work)
    assert cal.threshold == pytest.approx(want) and cal.dice == 1.0
    assert cal.annotated_voxels == int((mask > 0).sum()) and cal.volumes == 1
    v, b = int((mask == 1).sum()), int((mask == 2).sum())
    everything = 2 * v / (2 * v + b)  # at 0.5: nothing positive (Dice 0) or all of it
    assert cal.dice_at_default == pytest.approx(everything if background >= 0.5 else 0.0)
    meta = record_calibration(tiny_model, cal)
    assert load_meta(tiny_model).threshold == pytest.approx(want) == meta.threshold
    assert load_meta(tiny_model).info["calibration"]["threshold"] == pytest.approx(want)


def test_predict_uses_the_model_threshold_unless_given(tmp_path: Path, tiny_model: Path) -> None:
    volume = tmp_path / "in" / "vol.npy"
    volume.parent.mkdir()
    np.save(volume, np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32))
    base = ["predict", str(volume), "--model", str(tiny_model), "--tile-size", "16"]
    result = runner.invoke(app, [*base, "--out-dir", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    paths = output_paths(tmp_path / "a", "vol.npy", tiny_model)
    prob = np.load(paths.prob)
    t = float(np.median(prob))  # a threshold that splits this model's output in half
    update_settings(tiny_model, threshold=t)
    for folder, extra, want in (("b", [], t), ("c", ["--threshold", "0.999"], 0.999)):
        result = runner.invoke(app, [*base, "--out-dir", str(tmp_path / folder), *extra])
        assert result.exit_code == 0, result.output
        paths = output_paths(tmp_path / folder, "vol.npy", tiny_model)
        assert np.array_equal(np.load(paths.prob), prob)
        assert np.array_equal(np.load(paths.mask), (prob >= want).astype(np.uint8))
    assert 0.3 < np.load(output_paths(tmp_path / "b", "vol.npy", tiny_model).mask).mean() < 0.7


def test_evaluate_scores_at_the_model_threshold(tmp_path: Path, tiny_model: Path) -> None:
    folder, mask = val_folder(tmp_path)
    work = tmp_path / "pred"
    work.mkdir()
    paths = output_paths(work, "data_a.npy", tiny_model)
    np.save(paths.prob, np.where(mask == 1, 0.3, 0.2).astype(np.float32))
    np.save(paths.mask, np.zeros(mask.shape, np.uint8))
    update_settings(tiny_model, threshold=0.25)
    args = ["evaluate", "--model", str(tiny_model), "--data-dir", str(folder), "--pred-dir"]
    args += [str(work), "--metrics", str(tmp_path / "m.json"), "--plots", str(tmp_path / "p")]
    result = runner.invoke(app, [*args, "--no-mlflow"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["threshold"] == 0.25 and metrics["overall"]["dice"] == 1.0
    result = runner.invoke(app, [*args, "--no-mlflow", "--threshold", "0.5"])
    assert json.loads((tmp_path / "m.json").read_text())["overall"]["dice"] == 0.0


def test_models_listing_shows_the_threshold() -> None:
    from vesselseg.registry.listing import ModelRow, format_models, threshold_cell

    assert threshold_cell({"threshold": "0.35", "threshold_source": "calibrated"}) == (
        "0.35 (calibrated)"
    )
    assert threshold_cell({"threshold": "0.5"}) == "0.50" and threshold_cell({}) == ""
    row = ModelRow("3", ["champion"], "dice", 0.8, "abc", "today", "", "0.35 (calibrated)")
    header, line = format_models("vesselseg", [row])[1:]
    assert header.split()[3] == "threshold" and "0.35 (calibrated)" in line
