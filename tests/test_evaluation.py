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


def test_best_val_threshold_is_chosen_as_calibration_chooses(
    tiny_dataset: Path, tmp_path: Path, model: Path
) -> None:
    """Perfect 0/1 validation predictions score the same Dice at every interior threshold:
    the tie goes to 0.5, as in training's calibration (not to the lowest threshold)."""
    pred = tmp_path / "pred"
    write_perfect_predictions(tiny_dataset / "val", pred, model)
    summary = evaluate_dataset(
        tiny_dataset / "test", model, pred, CFG, val_dir=tiny_dataset / "val", mlflow=False
    )
    assert summary.best_threshold_val == pytest.approx(0.5)
    assert summary.overall["best_dice_val"] == pytest.approx(1.0)


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


# --------------------------------------------------------------------------- no overwrites


def test_default_outputs_are_keyed_by_data_and_model(
    tiny_dataset: Path, tmp_path: Path, model: Path
) -> None:
    """Without --metrics/--plots nothing a DVC stage owns is written: ``metrics.json`` and
    ``plots/pr.csv`` of the pipeline stay as they are."""
    import shutil

    shutil.copy(Path(__file__).resolve().parents[1] / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "metrics.json").write_text('{"overall": {"dice": 0.87}}')
    pred = tmp_path / "pred"
    write_perfect_predictions(tiny_dataset / "test", pred, model)
    args = ["evaluate", "--model", str(model), "--data-dir", str(tiny_dataset / "test")]
    args += ["--pred-dir", str(pred), "--no-mlflow", "--set", "infer.tile_size=16"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote metrics/test.stage1.json and plots/test.stage1/" in result.output
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"overall": {"dice": 0.87}}
    data = json.loads((tmp_path / "metrics" / "test.stage1.json").read_text())
    assert data["overall"]["dice"] == 1.0 and data["dataset"]["digest"]
    assert data["dataset"]["source"] == (tiny_dataset / "test").resolve().as_posix()
    assert (tmp_path / "plots" / "test.stage1" / "pr.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "plots" / "pr.csv").exists()

    # --metrics naming a DVC output is allowed (that is what the pipeline's stages do)
    result = CliRunner().invoke(app, [*args, "--metrics", "metrics.json", "--plots", "plots"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "metrics.json").read_text())["overall"]["dice"] == 1.0


def test_a_default_that_dvc_owns_is_refused(
    tiny_dataset: Path, tmp_path: Path, model: Path
) -> None:
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  mine:\n    cmd: vesselseg evaluate\n    metrics:\n"
        "      - metrics/test.stage1.json:\n          cache: false\n"
    )
    args = ["evaluate", "--model", str(model), "--data-dir", str(tiny_dataset / "test")]
    result = CliRunner().invoke(app, [*args, "--no-mlflow"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "metrics/test.stage1.json is an output of a stage in dvc.yaml" in result.output
    assert "--metrics" in result.output and not (tmp_path / "metrics").exists()


# --------------------------------------------------------------------------- MLflow runs


def trained_like(path: Path, run_id: str, seed: int = 0) -> Path:
    """A tiny saved model whose training run is ``run_id``."""
    import torch

    from vesselseg.bundle import ModelMeta, save_bundle
    from vesselseg.config import ModelConfig, params_to_dict
    from vesselseg.models import build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(base_channels=2, depth=2)
    meta = ModelMeta(model=params_to_dict(cfg), tile_size=[16, 16, 16], info={"run_id": run_id})
    return save_bundle(path, build_model(cfg).state_dict(), meta)


def test_each_evaluation_is_its_own_run_under_the_training_run(
    tiny_dataset: Path, tmp_path: Path, store: Path
) -> None:
    """Evaluating on the test set and then on the unlabelled volume: two child runs of the
    training run, metrics named after their data, the training run's metrics untouched, its
    artifacts holding both evaluations' pictures side by side."""
    from vesselseg import tracking

    train_run = tracking.start_run("vesselseg", run_name="stage2", root=store)
    tracking.log_metrics(train_run, {"val_dice": 0.5}, root=store)
    tracking.end_run(train_run, root=store)
    model = trained_like(tmp_path / "models" / "stage2.pt", train_run)
    summaries = {
        name: evaluate_dataset(
            tiny_dataset / name, model, tmp_path / "pred", CFG, mlflow_root=store
        )
        for name in ("test", "unlabelled")
    }
    client = tracking.client(store)
    parent = client.get_run(train_run)
    assert parent.data.metrics == {"val_dice": 0.5}  # no test_dice, no unlabelled_dice
    for name, summary in summaries.items():
        run = client.get_run(summary.run_id)
        assert run.info.experiment_id == parent.info.experiment_id
        assert run.info.run_name == f"stage2 on {name}"
        assert run.data.tags["mlflow.parentRunId"] == train_run
        assert run.data.tags["vesselseg.dataset.digest"] == summary.dataset.digest
        assert run.data.tags["vesselseg.dataset.source"] == (tiny_dataset / name).as_posix()
        assert run.data.metrics[f"{name}_dice"] == summary.overall["dice"]
        assert not {k for k in run.data.metrics if not k.startswith(f"{name}_")}
        (used,) = run.inputs.dataset_inputs
        assert used.dataset.digest == summary.dataset.digest
        assert [t.value for t in used.tags] == ["evaluation"]
        folder = f"evaluation/{name}-{summary.dataset.digest[:8]}"
        assert parent.data.tags[f"vesselseg.evaluation.{name}-{summary.dataset.digest[:8]}"]
        names = {a.path for a in client.list_artifacts(train_run, folder)}
        volume = next(iter(summary.per_volume))
        assert {f"{folder}/pr.png", f"{folder}/{volume}.mip.png"} <= names
        assert f"{folder}/{volume}.slices.png" in names
        own = {a.path for a in client.list_artifacts(summary.run_id, "evaluation")}
        assert {"evaluation/pr.png", "evaluation/pr.csv", f"evaluation/{name}.stage2.json"} <= own
    assert summaries["test"].dataset.digest != summaries["unlabelled"].dataset.digest


def test_an_ensemble_evaluation_is_a_run_tagged_with_its_members(
    tiny_dataset: Path, tmp_path: Path, store: Path
) -> None:
    from vesselseg import tracking
    from vesselseg.inference.ensemble import write_ensemble

    runs = [tracking.start_run("vesselseg", run_name=n, root=store) for n in ("a", "b")]
    members = [
        (str(trained_like(tmp_path / "models" / f"{n}.pt", r, seed=i)), 1.0)
        for i, (n, r) in enumerate(zip("ab", runs, strict=True))
    ]
    ensemble = write_ensemble(members, tmp_path / "models" / "ensemble.json")
    summary = evaluate_dataset(
        tiny_dataset / "test", ensemble, tmp_path / "pred", CFG, mlflow_root=store
    )
    run = tracking.client(store).get_run(summary.run_id)
    assert run.info.run_name == "ensemble on test"
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.tags["vesselseg.ensemble.runs"] == ",".join(runs)
    assert "test_dice" in run.data.metrics and run.info.status == "FINISHED"
    names = {a.path for a in tracking.client(store).list_artifacts(summary.run_id, "model")}
    assert names == {"model/ensemble.json"}


def test_surface_dice_is_measured_in_each_volumes_voxel_size(tmp_path: Path) -> None:
    """A ball at (2, 1, 1) um predicted one z-plane (2 um) too high: at --tolerance 2 (um) the
    surfaces agree, at 1 um they do not, and --tolerance-voxels 1 keeps the old unit-voxel
    meaning; each volume records the spacing and unit it was measured in."""
    from vesselseg.config import InferConfig
    from vesselseg.evaluation.score import score_volumes, scored_samples, voxel_sizes
    from vesselseg.io import write_volume
    from vesselseg.io.spacing import VoxelSize

    size = VoxelSize((2.0, 1.0, 1.0), "um", known=True)
    z, y, x = np.ogrid[:16, :32, :32]
    truth = ((2 * (z - 8.0)) ** 2 + (y - 16.0) ** 2 + (x - 16.0) ** 2 <= 100).astype(np.uint8)
    pred = np.roll(truth, 1, axis=0).astype(np.float32)
    write_volume(tmp_path / "data_0.npy", truth.astype(np.float32), voxel_size=size)
    write_volume(tmp_path / "truth_0.npy", truth, voxel_size=size)
    np.save(tmp_path / "pred.npy", pred)
    scored = scored_samples(tmp_path)
    probs = {scored[0][0].id: tmp_path / "pred.npy"}

    def surface(tolerance: float, in_voxels: bool = False) -> dict:
        sizes = voxel_sizes(scored, InferConfig(), in_voxels)
        per_volume, _, _ = score_volumes(scored, probs, 0.5, tolerance, 3, tmp_path / "p", sizes)
        return next(iter(per_volume.values()))

    at_2um, at_1um, in_voxels = surface(2.0), surface(1.0), surface(1.0, in_voxels=True)
    assert at_2um["surface_dice"] == pytest.approx(1.0)
    assert at_1um["surface_dice"] < 0.9
    assert in_voxels["surface_dice"] == pytest.approx(1.0)
    assert (at_2um["spacing"], at_2um["unit"]) == ([2.0, 1.0, 1.0], "um")
    assert (in_voxels["spacing"], in_voxels["unit"]) == ([1.0, 1.0, 1.0], None)
    overridden = voxel_sizes(scored, InferConfig(spacing=[4.0, 1.0, 1.0]))
    assert next(iter(overridden.values())).spacing == (4.0, 1.0, 1.0)


def test_tolerance_options_are_exclusive(tmp_path: Path) -> None:
    args = ["evaluate", "--model", str(tmp_path / "m.pt"), "--tolerance", "1"]
    result = CliRunner().invoke(app, [*args, "--tolerance-voxels", "1"])
    assert result.exit_code == 2 and "--tolerance or --tolerance-voxels" in result.output
    result = CliRunner().invoke(app, ["evaluate", "--model", "m.pt", "--tolerance-voxels", "-1"])
    assert result.exit_code == 2 and "--tolerance-voxels must be >= 0" in result.output
