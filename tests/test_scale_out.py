"""Scaling out: sharded inference (``predict --shard i/n``) and 2-process DDP training on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from vesselseg.cli import app
from vesselseg.config import Params, params_to_dict
from vesselseg.errors import ConfigError
from vesselseg.inference.inputs import parse_shard, select_shard

REPO = Path(__file__).resolve().parents[1]
SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN")
runner = CliRunner()

# --------------------------------------------------------------------------- sharded inference


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    """Three small volumes, written in an order that is not their sorted order."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("vol_c", "vol_a", "vol_b"):
        np.save(folder / f"{name}.npy", rng.normal(100, 20, (16, 20, 24)).astype(np.float32))
    return folder


def predict(inputs: Path, model: Path, out: Path, *extra: str):
    args = ["predict", str(inputs), "--model", str(model), "--out-dir", str(out)]
    return runner.invoke(app, [*args, "--tile-size", "16", "--device", "cpu", *extra])


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def test_shards_together_equal_one_unsharded_run(
    inputs: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for key in SLURM:
        monkeypatch.delenv(key, raising=False)
    whole = predict(inputs, tiny_model, tmp_path / "all")
    assert whole.exit_code == 0, whole.output
    shards = []
    for i in range(2):
        result = predict(inputs, tiny_model, tmp_path / f"shard{i}", "--shard", f"{i}/2")
        assert result.exit_code == 0, result.output
        shards.append(outputs(tmp_path / f"shard{i}"))

    expected = outputs(tmp_path / "all")
    assert len(expected) == 6  # probabilities + mask of 3 volumes
    assert not shards[0].keys() & shards[1].keys()  # disjoint
    assert {**shards[0], **shards[1]} == expected  # together: exactly the unsharded outputs
    # positions 0 and 2 of the sorted inputs, then position 1
    assert {n.split(".")[0] for n in shards[0]} == {"vol_a", "vol_c"}
    assert {n.split(".")[0] for n in shards[1]} == {"vol_b"}

    # --shard slurm: array task 2 of tasks 1-2 (sbatch --array=1-2) is shard 1/2
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    result = predict(inputs, tiny_model, tmp_path / "slurm", "--shard", "slurm")
    assert result.exit_code == 0, result.output
    assert outputs(tmp_path / "slurm") == shards[1]


def test_more_shards_than_inputs_splits_volumes_into_a_shared_store(
    inputs: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fewer volumes than shards: z-blocks of one shared store each (tests/test_shard_volume.py),
    which a .npy output cannot be: one line, exit 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    result = predict(inputs, tiny_model, tmp_path / "out", "--shard", "3/4")
    assert result.exit_code == 2, result.output
    assert "--out-format zarr or ome-zarr" in result.stderr and not outputs(tmp_path / "out")
    result = predict(inputs, tiny_model, tmp_path / "out", "--shard", "3/4", "--out-format", "zarr")
    assert result.exit_code == 0, result.output
    assert "predicted 1 of 1 z-blocks of 1 volume(s)" in result.stdout


@pytest.mark.parametrize("text", ["3/2", "2/2", "a/b", "-1/2", "1/0", "1", "1/2/3", "", "slurm"])
def test_bad_shard_is_one_line(
    text: str, inputs: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for key in SLURM:
        monkeypatch.delenv(key, raising=False)
    result = predict(inputs, tiny_model, tmp_path / "out", "--shard", text)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --shard"), lines
    assert not (tmp_path / "out").exists()


def test_shard_parsing() -> None:
    assert parse_shard(None) is None
    assert parse_shard("0/1") == (0, 1) and parse_shard(" 2/3 ") == (2, 3)
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert parse_shard("slurm", env) == (3, 4)
    step = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_COUNT": "4"}
    step |= {"SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2"}
    assert parse_shard("SLURM", step) == (3, 4)  # --array=0-6:2
    for bad in ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"}, {}):
        with pytest.raises(ConfigError, match="--shard slurm"):
            parse_shard("slurm", bad)
    items = [(f"v{i}", Path(f"v{i}.npy")) for i in (4, 0, 3, 1, 2)]
    parts = [select_shard(items, (i, 3)) for i in range(3)]
    assert [[name for name, _ in part] for part in parts] == [["v0", "v3"], ["v1", "v4"], ["v2"]]


# --------------------------------------------------------------------------- DDP


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tiny_dataset: Path, tmp_path: Path) -> None:
    """``--set train.devices=2`` on CPU: Lightning's DDP (gloo) re-runs the command for rank 1.
    One model bundle, checkpoints, and exactly one MLflow run (rank 0's) come out."""
    from vesselseg import tracking
    from vesselseg.bundle import load_bundle

    raw = params_to_dict(Params())
    raw["data"].update(train_dir=str(tiny_dataset / "train"), val_dir=str(tiny_dataset / "val"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    sets = [
        "model.base_channels=4",
        "model.depth=2",
        "data.crop_size=16",
        "infer.tile_size=16",
        "data.samples_per_volume=2",  # 2 volumes x 2 crops = 4 crops, 2 per rank
        "train.batch_size=2",
        "train.max_epochs=2",
        "train.accelerator=cpu",
        "train.devices=2",
        "train.experiment=ddp",
        "train.overlay_every_n_epochs=0",
    ]
    args = [sys.executable, "-m", "vesselseg.cli", "train", "--params", "params.yaml"]
    args += ["--out", "models/m.pt"] + [x for s in sets for x in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "VESSELSEG_PROGRESS": "0"}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    for key in ("MLFLOW_TRACKING_URI", "VESSELSEG_CACHE_DIR", "OMP_NUM_THREADS"):
        env.pop(key, None)
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr  # a second process ran

    weights, meta = load_bundle(tmp_path / "models" / "m.pt")
    assert weights and meta.model["base_channels"] == 4
    ckpt = torch.load(
        tmp_path / "models" / "m_ckpt" / "last.ckpt", map_location="cpu", weights_only=True
    )
    # each rank took 1 step an epoch (2 of the 4 crops): the data was split between ranks
    assert ckpt["global_step"] == ckpt["epoch"] + 1

    client = tracking.client(tmp_path / "mlruns")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert len(runs) == 1  # only rank 0 logs
    run_id = runs[0].info.run_id
    run_file = tmp_path / "models" / "m_ckpt" / "run.json"
    assert json.loads(run_file.read_text())["run_id"] == run_id == meta.info["run_id"]
    assert len(client.get_metric_history(run_id, "val_dice")) == 2  # one value an epoch
    # both ranks report the same MLflow run
    assert proc.stdout.count(f"MLflow run {run_id}") == 1  # one summary line: rank 0's
    assert "MLflow run None" not in proc.stdout
