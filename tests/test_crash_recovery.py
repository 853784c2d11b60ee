"""Crashes: real subprocesses killed with SIGKILL leave nothing that looks finished, and
``--resume`` ends exactly where an uninterrupted run ends (predict, train, pseudo, evaluate).

Each kill is triggered by polling for a file the command writes mid-run (a ``.part`` output, a
``last.ckpt``, a first picture), never by a fixed sleep; every test first asserts that the
process was still running when it was killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import tiny_params

from vesselseg.bundle import load_bundle
from vesselseg.config import (
    InferConfig,
    Params,
    SynthConfig,
    apply_overrides,
    params_to_dict,
)
from vesselseg.inference.outputs import output_paths
from vesselseg.inference.run import predict_path
from vesselseg.training.fit import train_model

REPO = Path(__file__).resolve().parents[1]
PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"

pytestmark = pytest.mark.slow


def cli_env(threads: int | None = None) -> dict[str, str]:
    """The environment of a `vesselseg` subprocess: this checkout, quiet, the embedded MLflow
    store of its cwd. Float results depend on torch's thread count: runs compared bit for bit
    use the same count (the default, like this process, or ``threads`` for all of them)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VESSELSEG_PROGRESS": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    for key in ("MLFLOW_TRACKING_URI", "VESSELSEG_CACHE_DIR", "OMP_NUM_THREADS"):
        env.pop(key, None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def start_cli(args: list[str], cwd: Path, threads: int | None = None) -> subprocess.Popen:
    """Start ``vesselseg ARGS`` in ``cwd``; its stdout and stderr go to ``cwd.name + .log``
    beside ``cwd`` (a file, not a pipe nobody reads, which would stall a chatty run)."""
    cwd.mkdir(parents=True, exist_ok=True)
    log = cwd.with_name(cwd.name + ".log")
    with log.open("a") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vesselseg.cli", *args],
            cwd=cwd,
            env=cli_env(threads),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    proc.log = log  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen) -> str:
    return proc.log.read_text()[-3000:]  # type: ignore[attr-defined]


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a subprocess; its output (assert it succeeded)."""
    proc.wait(timeout=timeout)
    assert proc.returncode == 0, output(proc)
    return proc.log.read_text()  # type: ignore[attr-defined]


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 240) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it ended (or never got there) first."""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed: " + output(proc)
        assert ready(), f"nothing to kill for after {timeout} s"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def is_partial(path: Path) -> bool:
    """Names our writers use until a file is complete (``NAME.part``, ``NAME.tmp``)."""
    return path.name.endswith((".part", ".tmp"))


def finished_files(folder: Path) -> dict[Path, bytes]:
    """Every file under ``folder`` with a final name, relative path → bytes; each must at least
    parse as what its name says (npy, json, png, csv)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_dir() or is_partial(path):
            continue
        data = path.read_bytes()
        rel = path.relative_to(folder)
        if path.suffix == ".npy":
            np.load(path)  # a header that promises more bytes than the file has fails here
        elif path.suffix == ".json":
            json.loads(data)
        elif path.suffix == ".png":
            assert data.startswith(PNG_START) and data.endswith(PNG_END), f"{rel}: cut short"
        elif path.suffix != ".csv":
            raise AssertionError(f"{rel}: unexpected file")
        found[rel] = data
    return found


def assert_same_as_complete_run(snapshot: dict[Path, bytes], folder: Path) -> None:
    """Every file that had its final name right after the kill is byte-identical to the file
    a complete run leaves at that name: nothing half-written looked finished."""
    for rel, data in snapshot.items():
        assert (folder / rel).read_bytes() == data, f"{rel} was not complete when killed"


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 test volumes (dense truth) and 3 unlabelled volumes of 32x48x48."""
    from vesselseg.synth import synthesize_dataset

    out = tmp_path_factory.mktemp("crash_data")
    cfg = SynthConfig(
        shape=[32, 48, 48], n_train=0, n_val=0, n_test=3, n_unlabelled=3, slab=16, seed=3
    )
    synthesize_dataset(cfg, out)
    return out


# --------------------------------------------------------------------------- predict

SLOW_RUN = """
import sys, time
from vesselseg.config import InferConfig
from vesselseg.inference.run import predict_path

def slow(fn):
    def wrapped(x):
        time.sleep(0.15)
        return fn(x)
    return wrapped

predict_path(sys.argv[1], sys.argv[2], sys.argv[3], InferConfig(tile_size=16, batch_size=2),
             device="cpu", show_progress=False, net_hook=slow)
"""


def test_predict_resume_after_sigkill_is_byte_identical(model_file: Path, tmp_path: Path) -> None:
    volume = tmp_path / "big.npy"
    np.save(volume, np.random.default_rng(5).normal(0, 1, (64, 28, 28)).astype(np.float32))
    out = tmp_path / "killed"
    paths = output_paths(out, volume.name, model_file)
    log = tmp_path / "predict.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_RUN, str(volume), str(model_file), str(out)],
            env=cli_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    proc.log = log  # type: ignore[attr-defined]

    def nine_windows_done() -> bool:
        try:
            return json.loads(paths.progress.read_text())["next_tile"] >= 9
        except (OSError, ValueError):
            return False

    kill_when(proc, nine_windows_done, timeout=60)
    progress = json.loads(paths.progress.read_text())
    assert 9 <= progress["next_tile"] < progress["n_tiles"]
    assert not paths.prob.exists() and not paths.mask.exists()  # nothing looks finished
    assert (out / (paths.prob.name + ".part")).exists()

    cfg = InferConfig(tile_size=16, batch_size=2)
    resumed = predict_path(
        volume, model_file, out, cfg, device="cpu", resume=True, show_progress=False
    ).results[0]
    assert resumed.resumed_from == progress["next_tile"]
    assert resumed.tiles < progress["n_tiles"]
    ref = (
        predict_path(volume, model_file, tmp_path / "ref", cfg, device="cpu", show_progress=False)
        .results[0]
        .outputs
    )
    assert paths.prob.read_bytes() == ref.prob.read_bytes()
    assert paths.mask.read_bytes() == ref.mask.read_bytes()
    assert not paths.progress.exists() and not (out / (paths.prob.name + ".part")).exists()


# --------------------------------------------------------------------------- train


def test_train_resume_in_process_continues_run_and_weights(
    tiny_dataset: Path, tmp_path: Path, store: Path
) -> None:
    from vesselseg import tracking

    out = tmp_path / "m.pt"
    first = train_model(tiny_params(tiny_dataset, "train.max_epochs=1"), out, mlflow_root=store)
    second = train_model(
        tiny_params(tiny_dataset, "train.max_epochs=3"), out, resume=True, mlflow_root=store
    )
    assert second.run_id == first.run_id  # the same MLflow run goes on
    assert second.epochs == 3
    history = tracking.client(store).get_metric_history(first.run_id, "val_dice")
    assert sorted(m.step for m in history) == sorted(set(m.step for m in history))
    assert len(history) == 3  # epochs 0 (first run), 1 and 2 (resumed), no repeat
    assert json.loads((second.checkpoint_dir / "run.json").read_text())["run_id"] == first.run_id

    # an uninterrupted deterministic run ends with exactly the same weights
    straight = tmp_path / "straight.pt"
    train_model(tiny_params(tiny_dataset, "train.max_epochs=3"), straight, mlflow_root=store)
    a, _ = load_bundle(out)
    b, _ = load_bundle(straight)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def write_params(path: Path, dataset: Path) -> Path:
    """A complete params.yaml (the loader is strict) pointing at ``dataset``."""
    raw = params_to_dict(Params())
    raw["data"].update(train_dir=str(dataset / "train"), val_dir=str(dataset / "val"))
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train_args(params: Path, out: str, *extra: str) -> list[str]:
    sets = [
        "model.base_channels=4",
        "model.depth=2",
        "data.crop_size=16",
        "infer.tile_size=16",
        "data.samples_per_volume=6",  # 6 steps an epoch: time to kill between checkpoints
        "train.batch_size=2",
        "train.max_epochs=3",
        "train.accelerator=cpu",
        "train.experiment=crash",
        "train.overlay_every_n_epochs=0",
    ]
    args = ["train", "--params", str(params), "--out", out, *extra]
    for item in sets:
        args += ["--set", item]
    return args


def test_train_sigkill_then_resume_gives_the_uninterrupted_weights(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = write_params(tmp_path / "params.yaml", tiny_dataset)
    # the uninterrupted reference runs alongside (its own folder and MLflow store); all three
    # runs use one thread each, so they neither depend on nor fight over the cores
    straight = start_cli(train_args(params, "models/m.pt"), tmp_path / "straight", threads=1)
    try:
        work = tmp_path / "killed"
        last = work / "models" / "m_ckpt" / "last.ckpt"
        proc = start_cli(train_args(params, "models/m.pt"), work, threads=1)
        kill_when(proc, last.is_file)
        assert not (work / "models" / "m.pt").exists()  # no model that looks trained
        epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
        assert epoch < 2, "killed after the last epoch: nothing left to resume"
        run_id = json.loads((work / "models" / "m_ckpt" / "run.json").read_text())["run_id"]

        resume = train_args(params, "models/m.pt", "--resume")
        resumed = finish(start_cli(resume, work, threads=1))
        assert "trained 3 epochs" in resumed and f"MLflow run {run_id}" in resumed
        finish(straight)
    finally:
        if straight.poll() is None:
            straight.kill()
            straight.wait()

    a, meta = load_bundle(work / "models" / "m.pt")
    b, _ = load_bundle(tmp_path / "straight" / "models" / "m.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert meta.info["run_id"] == run_id  # the killed MLflow run was continued

    from vesselseg import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # as cli_env() did
    history = tracking.client(work / "mlruns").get_metric_history(run_id, "val_dice")
    steps = sorted(m.step for m in history)
    assert len(set(steps)) == 3  # one value per epoch ...
    assert steps.count(steps[0]) == 1  # ... and epoch 0 was not trained again after the kill


# --------------------------------------------------------------------------- pseudo

PSEUDO_SETS = ["infer.tile_size=16", "pseudo.hi=0.51", "pseudo.lo=0.49"]


def test_pseudo_sigkill_leaves_nothing_finished_and_resumes(
    volumes: Path, model_file: Path, tmp_path: Path
) -> None:
    from vesselseg.pseudo import pseudo_label_dataset

    p = apply_overrides(Params(), PSEUDO_SETS)
    reference = tmp_path / "reference"
    pseudo_label_dataset(volumes / "unlabelled", model_file, reference, p.pseudo, p.infer)

    out = tmp_path / "work" / "pseudo"
    args = ["pseudo", "--model", str(model_file), "--in-dir", str(volumes / "unlabelled")]
    args += ["--out-dir", str(out)]
    for item in PSEUDO_SETS:
        args += ["--set", item]
    proc = start_cli(args, tmp_path / "work")
    kill_when(proc, lambda: any(p.name.endswith(".part") for p in out.rglob("*")))

    snapshot = finished_files(out)
    assert not (out / "pseudo.json").exists()
    assert not list(out.glob("mask_*.npy"))  # labels come after every prediction
    assert any(is_partial(p) for p in out.rglob("*"))

    pseudo_label_dataset(volumes / "unlabelled", model_file, out, p.pseudo, p.infer, resume=True)
    assert_same_as_complete_run(snapshot, out)
    assert not any(is_partial(p) for p in out.rglob("*"))
    for mask in sorted(reference.glob("mask_*.npy")):
        assert (out / mask.name).read_bytes() == mask.read_bytes()
    ref_meta = json.loads((reference / "pseudo.json").read_text())
    meta = json.loads((out / "pseudo.json").read_text())
    assert meta["volumes"] == ref_meta["volumes"] and len(meta["volumes"]) == 3


def test_pseudo_mask_is_never_final_while_being_written(
    volumes: Path, model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The labels phase is too short to hit with a poll, so look at the folder at every slab
    write: what a SIGKILL at that moment would leave."""
    from vesselseg import pseudo

    monkeypatch.setattr(pseudo, "SLAB_BYTES", 32 * 48 * 48)  # several slabs per volume
    p = apply_overrides(Params(), PSEUDO_SETS)
    out = tmp_path / "pseudo"
    seen: list[tuple[str, bool, bool]] = []
    real = pseudo.threshold_labels

    def spy(prob: np.ndarray, hi: float, lo: float) -> np.ndarray:
        for part in out.glob("mask_*.npy.part"):
            final = part.with_name(part.name.removesuffix(".part"))
            seen.append((final.name, final.exists(), (out / "pseudo.json").exists()))
        return real(prob, hi, lo)

    monkeypatch.setattr(pseudo, "threshold_labels", spy)
    pseudo.pseudo_label_dataset(volumes / "unlabelled", model_file, out, p.pseudo, p.infer)
    assert {name for name, _, _ in seen} == {"mask_003.npy", "mask_004.npy", "mask_005.npy"}
    assert len(seen) > 3  # more than one slab per volume was watched
    assert not any(final or meta for _, final, meta in seen)


# --------------------------------------------------------------------------- evaluate


def test_evaluate_sigkill_leaves_nothing_finished(
    volumes: Path, model_file: Path, tmp_path: Path
) -> None:
    from vesselseg.evaluation import evaluate_dataset

    work = tmp_path / "work"
    pred, plots, metrics = work / "pred", work / "plots", work / "metrics.json"
    args = ["evaluate", "--model", str(model_file), "--data-dir", str(volumes / "test")]
    args += ["--pred-dir", str(pred), "--plots", str(plots), "--metrics", str(metrics)]
    args += ["--no-mlflow", "--set", "infer.tile_size=16"]
    proc = start_cli(args, work)
    # killed while scoring: after the first picture of three volumes, before metrics.json
    kill_when(proc, lambda: plots.is_dir() and any(plots.iterdir()))

    assert not metrics.exists() and not (plots / "pr.csv").exists()
    snapshot = finished_files(work)
    assert any(rel.suffix == ".npy" for rel in snapshot)  # the predictions were done

    cfg = apply_overrides(Params(), ["infer.tile_size=16"]).infer
    summary = evaluate_dataset(
        volumes / "test", model_file, pred, cfg, metrics, plots, mlflow=False
    )
    assert summary.overall["volumes"] == 3 and json.loads(metrics.read_text())["per_volume"]
    assert_same_as_complete_run(snapshot, work)
    assert not any(is_partial(p) for p in work.rglob("*"))
