"""Kaggle RLE: round trips, the competition's conventions, submission file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from vesselseg.kaggle import EMPTY, rle_decode, rle_encode, write_submission


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = (rng.random((17, 23)) < rng.uniform(0.05, 0.95)).astype(np.uint8)
    np.testing.assert_array_equal(rle_decode(rle_encode(mask), mask.shape), mask)


def test_empty_and_full() -> None:
    assert rle_encode(np.zeros((4, 5))) == EMPTY == "1 0"
    np.testing.assert_array_equal(rle_decode(EMPTY, (4, 5)), np.zeros((4, 5)))
    assert rle_encode(np.ones((4, 5))) == "1 20"
    np.testing.assert_array_equal(rle_decode("1 20", (4, 5)), np.ones((4, 5)))


def test_row_major_one_based_literal() -> None:
    mask = np.array([[0, 1, 1], [1, 0, 1]])
    assert rle_encode(mask) == "2 3 6 1"  # flat 0 1 1 1 0 1


def test_odd_rle_is_an_error() -> None:
    with pytest.raises(ValueError, match="odd number"):
        rle_decode("1 2 3", (2, 2))


def test_submission_ids_and_rows(tmp_path: Path) -> None:
    mask = np.zeros((3, 4, 4), np.uint8)
    mask[1, 0, :2] = 1
    prob = np.full((2, 4, 4), 0.2, np.float32)
    prob[0, 3, 3] = 0.9
    out = write_submission({"kidney_5": mask, "kidney_6": prob}, tmp_path / "submission.csv")
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["id", "rle"]
    assert rows[1:] == [
        ["kidney_5_0000", "1 0"],
        ["kidney_5_0001", "1 2"],
        ["kidney_5_0002", "1 0"],
        ["kidney_6_0000", "16 1"],
        ["kidney_6_0001", "1 0"],
    ]
    assert not (tmp_path / "submission.csv.part").exists()


def test_cli_submit(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vesselseg.cli import app

    mask = np.zeros((2, 3, 3), np.uint8)
    mask[1, 1, 1] = 1
    np.save(tmp_path / "kidney_9.model.mask.npy", mask)
    np.save(tmp_path / "kidney_9.model.prob.npy", mask.astype(np.float32))
    result = CliRunner().invoke(app, ["submit", str(tmp_path), "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader((tmp_path / "s.csv").open()))
    assert rows == [["id", "rle"], ["kidney_9_0000", "1 0"], ["kidney_9_0001", "5 1"]]
    result = CliRunner().invoke(app, ["submit", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such folder" in result.output


@pytest.mark.parametrize("spelling", ["case", "images"])
def test_predicting_a_case_or_its_images_folder_names_the_case(
    spelling: str, tmp_path: Path, model_file: Path
) -> None:
    """``predict test/kidney_5`` and ``predict test/kidney_5/images`` both write kidney_5.*
    outputs, so ``submit`` writes kidney_5_NNNN ids."""
    import tifffile
    from typer.testing import CliRunner

    from vesselseg.cli import app

    images = tmp_path / "test" / "kidney_5" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for z in range(3):
        tifffile.imwrite(images / f"{z:04d}.tif", rng.integers(0, 255, (16, 16), np.uint8))
    target = images.parent if spelling == "case" else images
    out = tmp_path / "pred"
    args = ["predict", str(target), "--model", str(model_file), "--out-dir", str(out)]
    result = CliRunner().invoke(app, [*args, "--tile-size", "16"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name.split(".")[0] for p in out.glob("*.mask.*")) == ["kidney_5"]
    result = CliRunner().invoke(app, ["submit", str(out), "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    ids = [row[0] for row in csv.reader((tmp_path / "s.csv").open())][1:]
    assert ids == ["kidney_5_0000", "kidney_5_0001", "kidney_5_0002"]
