"""The DVC pipeline end to end on tiny params, in a temporary copy of the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "synth": {
        "shape": [32, 32, 32],
        "n_train": 1,
        "n_val": 1,
        "n_test": 1,
        "n_unlabelled": 1,
        "annotated_fraction": 0.03,
        "slab": 16,
    },
    "data": {"crop_size": [16, 16, 16], "samples_per_volume": 2},
    "model": {"base_channels": 2, "depth": 2},
    "multiview": {
        "base_channels": 2,
        "depth": 2,
        "crop_size": [16, 16, 16],
        "batch_size": 2,
        "samples_per_volume": 2,
        "max_epochs": 1,
    },
    "train": {"max_epochs": 1, "batch_size": 2, "overlay_every_n_epochs": 0},
    "infer": {"tile_size": [16, 16, 16]},
    "pseudo": {"hi": 0.51, "lo": 0.49, "finetune_epochs": 1},
}


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_dvc_repro_on_tiny_params(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / ".dvc", project / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "VESSELSEG_PROGRESS": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("VESSELSEG_CACHE_DIR", None)
    for args in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        assert run(args, project, env).returncode == 0
    dvc = [str(Path(bin_dir) / "dvc")]

    result = run([*dvc, "repro"], project, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((project / "metrics.json").read_text())
    assert 0.0 <= metrics["overall"]["dice"] <= 1.0
    registered = json.loads((project / "models" / "registered.json").read_text())
    assert registered["version"] == "1" and "champion" in registered["aliases"]
    assert list((project / "predictions" / "test").glob("*.mask.npy"))
    assert (project / "data" / "pseudo" / "pseudo.json").is_file()
    for name in ("stage1", "multiview", "ensemble"):  # the 2D vs 3D vs ensemble comparison
        compared = json.loads((project / "metrics" / f"{name}.json").read_text())
        assert 0.0 <= compared["overall"]["dice"] <= 1.0
    shown = run([*dvc, "metrics", "show", "--json"], project, env)
    assert shown.returncode == 0 and "dice" in shown.stdout

    start = time.perf_counter()
    again = run([*dvc, "repro"], project, env)
    assert again.returncode == 0
    assert (
        "didn't change" in again.stdout
        or "is cached" in again.stdout
        or "up to date" in again.stdout
    )
    assert time.perf_counter() - start < 30  # a no-op (≈ 1-5 s; generous for a busy CI box)

    original_lr = params["train"]["lr"]
    params["train"]["lr"] = 0.005
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run([*dvc, "status", "--json"], project, env)
    changed = set(json.loads(status.stdout))
    assert {"train", "train_2d", "train_pseudo"} <= changed
    assert not {"synth", "prepare"} & changed

    # an experiment re-runs only the stage whose params it sets and what follows; its MLflow
    # runs carry the experiment name, the git commit and the DVC data version
    params["train"]["lr"] = original_lr
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sets = ["-S", "pseudo.finetune_lr=0.004"]
    exp = run([*dvc, "exp", "run", "-n", "lr-test", *sets], project, env)
    assert exp.returncode == 0, exp.stdout[-3000:] + exp.stderr[-3000:]
    assert "Running stage 'train_pseudo'" in exp.stdout
    for upstream in ("synth", "prepare", "train", "train_2d", "pseudo"):
        assert f"Running stage '{upstream}'" not in exp.stdout
    from vesselseg import tracking

    runs = tracking.client(project / "mlruns").search_runs(
        [tracking.ensure_experiment("vesselseg", project / "mlruns")],
        filter_string="tags.`dvc.experiment` = 'lr-test'",
    )
    names = {r.data.tags["mlflow.runName"] for r in runs}
    assert "stage2" in names and not {"stage1", "multiview"} & names, exp.stdout[-3000:]
    assert all(r.data.tags["git_commit"] != "unknown" and r.data.tags["dvc.data/raw"] for r in runs)


@pytest.mark.slow
def test_committed_lock_matches_a_fresh_run_of_the_deterministic_stages(tmp_path: Path) -> None:
    """synth and prepare are deterministic: a fresh `dvc repro prepare` of the demo params
    gives the outputs the committed dvc.lock records, byte for byte (DVC's md5s), from the
    params it records. The model stages are not compared: their weights depend on the CPU and
    the torch thread count."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / ".dvc", project / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "VESSELSEG_PROGRESS": "0"}
    env.pop("VESSELSEG_CACHE_DIR", None)
    assert run(["git", "init", "-q"], project, env).returncode == 0
    result = run([str(Path(bin_dir) / "dvc"), "repro", "prepare"], project, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def recorded(lock: Path) -> dict[str, Any]:
        """The outputs' md5s and the params of synth and prepare (`dvc status` compares
        both: a stale param would make a fresh clone's stages look changed)."""
        stages = yaml.safe_load(lock.read_text())["stages"]
        deterministic = ("synth", "prepare")
        md5s = {o["path"]: o["md5"] for s in deterministic for o in stages[s]["outs"]}
        return {"outs": md5s, "params": {s: stages[s]["params"] for s in deterministic}}

    fresh, committed = recorded(project / "dvc.lock"), recorded(ROOT / "dvc.lock")
    assert fresh == committed
