"""`vesselseg evaluate`: metrics.json, PR curve, pictures, MLflow, on-the-fly prediction."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vesselseg.cli import app
from vesselseg.config import InferConfig
from vesselseg.evaluation import evaluate_dataset
from vesselseg.inference.outputs import output_paths
from vesselseg.io import discover_dataset

CFG = InferConfig(tile_size=[16, 16, 16], batch_size=2)


@pytest.fixture()
def model(tiny_model: Path) -> Path:
    return tiny_model


@pytest.fixture(autouse=True)
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "mlruns"


def write_perfect_predictions(data_dir: Path, pred_dir: Path, model: Path) -> None:
    for sample in discover_dataset(data_dir):
        paths = output_paths(pred_dir, sample.image.name, model)
        pred_dir.mkdir(parents=True, exist_ok=True)
        truth = sample.open_truth()[:]
        np.save(paths.prob, truth.astype(np.float32))
        np.save(paths.mask, truth)


def test_perfect_predictions_score_one(
    tiny_dataset: Path, tmp_path: Path, model: Path, store: Path
) -> None:
    pred = tmp_path / "pred"
    write_perfect_predictions(tiny_dataset / "test", pred, model)
    summary = evaluate_dataset(
        tiny_dataset / "test",
        model,
        pred,
        CFG,
        tmp_path / "metrics.json",
        tmp_path / "plots",
        mlflow_root=store,
    )
    o = summary.overall
    assert o["dice"] == 1.0 and o["cldice"] == 1.0 and o["surface_dice"] == 1.0
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["overall"]["dice"] == 1.0 and set(data["per_volume"]) == {"003"}
    rows = list(csv.DictReader((tmp_path / "plots" / "pr.csv").open()))
    assert len(rows) == 21 and float(rows[10]["dice"]) == 1.0
    assert (tmp_path / "plots" / "003.mip.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "003.slices.png").is_file()
    from vesselseg import tracking

    run = tracking.client(store).get_run(summary.run_id)
    assert run.data.metrics["test_dice"] == 1.0
    names = {a.path for a in tracking.client(store).list_artifacts(summary.run_id, "evaluation")}
    assert "evaluation/metrics.json" in names and "evaluation/pr.csv" in names


def test_shifted_prediction_scores_below_one(
    tiny_dataset: Path, tmp_path: Path, model: Path
) -> None:
    pred = tmp_path / "pred"
    write_perfect_predictions(tiny_dataset / "test", pred, model)
    path = output_paths(pred, "data_003.npy", model).prob
    np.save(path, np.roll(np.load(path), 2, axis=2))
    summary = evaluate_dataset(tiny_dataset / "test", model, pred, CFG, mlflow=False)
    assert 0.0 < summary.overall["dice"] < 0.9


def test_predicts_missing_volumes_and_best_val_threshold(
    tiny_dataset: Path, tmp_path: Path, model: Path
) -> None:
    summary = evaluate_dataset(
        tiny_dataset / "test",
        model,
        tmp_path / "pred",
        CFG,
        val_dir=tiny_dataset / "val",
        mlflow=False,
    )
    assert output_paths(tmp_path / "pred", "data_002.npy", model).complete()  # val predicted
    assert 0.0 <= summary.best_threshold_val <= 1.0
    assert 0.0 <= summary.overall["dice"] <= 1.0


def test_cli_evaluate_and_bad_input(tiny_dataset: Path, tmp_path: Path, model: Path) -> None:
    runner = CliRunner()
    pred = tmp_path / "pred"
    write_perfect_predictions(tiny_dataset / "test", pred, model)
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(model),
            "--data-dir",
            str(tiny_dataset / "test"),
            "--pred-dir",
            str(pred),
            "--no-mlflow",
            "--set",
            "infer.tile_size=16",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "dice 1.0000" in result.output
    result = runner.invoke(
        app,
        ["evaluate", "--model", str(model), "--data-dir", str(tiny_dataset / "unlabelled_missing")],
    )
    assert result.exit_code == 2 and "no such dataset folder" in result.output


def test_threshold_from_metrics(tmp_path: Path) -> None:
    from vesselseg.cli import best_threshold_from
    from vesselseg.errors import ConfigError, MissingPathError

    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"overall": {"best_threshold_val": 0.35}}))
    assert best_threshold_from(path) == 0.35
    path.write_text(json.dumps({"overall": {"dice": 0.5}}))
    with pytest.raises(ConfigError, match="best_threshold_val"):
        best_threshold_from(path)
    with pytest.raises(MissingPathError):
        best_threshold_from(tmp_path / "nope.json")


def test_kaggle_labels_are_dense_truth_and_uint8_probabilities_scale(tmp_path: Path) -> None:
    import tifffile

    from vesselseg.evaluation import open_probabilities, truth_of

    case = tmp_path / "kidney_7"
    (case / "images").mkdir(parents=True)
    (case / "labels").mkdir()
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1, 2, 3] = 255
    for z in range(3):
        tifffile.imwrite(case / "images" / f"{z:04d}.tif", np.full((4, 5), z, np.uint16))
        tifffile.imwrite(case / "labels" / f"{z:04d}.tif", labels[z])
    (sample,) = discover_dataset(tmp_path)
    truth, sparse = truth_of(sample)
    assert not sparse
    np.testing.assert_array_equal(truth[:], labels > 0)
    np.save(tmp_path / "p.npy", np.array([[[0, 128, 255]]], np.uint8))
    prob = open_probabilities(tmp_path / "p.npy")
    np.testing.assert_allclose(prob[:], [[[0.0, 128 / 255, 1.0]]])
    assert prob.dtype == np.float32
