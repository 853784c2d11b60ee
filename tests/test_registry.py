"""Model registry on real MLflow stores, no mocks: a temporary SQLite store, then a real
``mlflow server`` on 127.0.0.1. Register versions, check the promotion rule, resolve
``models:/`` URIs into the cache and predict exactly as with the checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vesselseg.cli import app

runner = CliRunner()
TILE = ["--tile-size", "16"]


def make_bundle(path: Path, seed: int, info: dict | None = None) -> Path:
    import torch

    from vesselseg.bundle import ModelMeta, save_bundle
    from vesselseg.config import ModelConfig
    from vesselseg.models import build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(base_channels=2, depth=2)
    meta = ModelMeta(model=dataclasses.asdict(cfg), tile_size=[16, 16, 16], info=info or {})
    return save_bundle(path, build_model(cfg).state_dict(), meta)


def write_metrics(path: Path, dice: float) -> Path:
    path.write_text(json.dumps({"overall": {"dice": dice, "cldice": dice / 2, "volumes": 1}}))
    return path


def params():
    from vesselseg.config import Params

    p = Params()
    p.infer.tile_size = [16, 16, 16]
    return p


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary SQLite store (MLFLOW_TRACKING_URI), model cache and working folder. The
    database is where the embedded default store of this folder is (``mlruns/mlflow.db``)."""
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
        mp.setenv("VESSELSEG_MODEL_CACHE", str(root / "cache"))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.chdir(root)  # an experiment made without artifact folder stores under ./mlruns
        np.save(root / "vol.npy", np.random.default_rng(0).random((16, 24, 24), np.float32))
        yield root


@pytest.fixture(scope="module")
def champion(store: Path) -> Path:
    """``vesselseg`` version 1 (champion) registered with the CLI; returns its checkpoint."""
    model = make_bundle(store / "first" / "model.pt", seed=1)
    metrics = write_metrics(store / "first" / "metrics.json", 0.5)
    args = ["register", "--model", str(model), "--metrics", str(metrics)]
    result = runner.invoke(app, [*args, "--set", "infer.tile_size=16"])  # travels with the model
    assert result.exit_code == 0, result.output
    assert "registered vesselseg version 1" in result.output
    assert "promoted: no champion yet" in result.output
    return model


# --------------------------------------------------------------------------- promotion rule
# (pure: no MLflow store, no MLflow import)


def test_decide_first_version_is_champion() -> None:
    from vesselseg.config import RegisterConfig
    from vesselseg.registry.promote import decide

    first = decide(None, None, RegisterConfig(), champion_version=None)
    assert first.promote and first.reason == "no champion yet; this version is the champion"


def test_decide_higher_wins_ties_keep() -> None:
    from vesselseg.config import RegisterConfig
    from vesselseg.registry.promote import decide

    rule = RegisterConfig()
    better = decide(0.6, 0.5, rule, "1")
    assert better.promote and better.reason == "dice 0.6000 vs champion version 1's 0.5000"
    tie = decide(0.5, 0.5, rule, "1")
    assert not tie.promote and "(must be higher); --force promotes anyway" in tie.reason
    worse = decide(0.4, 0.5, rule, "3")
    assert not worse.promote and worse.reason.startswith("dice 0.4000 vs champion version 3's")


def test_decide_missing_values_and_force() -> None:
    from vesselseg.config import RegisterConfig
    from vesselseg.registry.promote import decide

    rule = RegisterConfig(metric="cldice", champion_alias="best")
    no_value = decide(None, 0.5, rule, "2")
    assert not no_value.promote
    assert no_value.reason == (
        "no cldice to compare (cldice n/a vs best version 2's 0.5000); use --metrics or --force"
    )
    unscored_champion = decide(0.1, None, rule, "2")
    assert unscored_champion.promote and unscored_champion.reason.endswith("2's n/a")
    forced = decide(0.1, 0.9, rule, "2", force=True)
    assert forced.promote and forced.reason == "--force (cldice 0.1000 vs best version 2's 0.9000)"
    assert decide(None, None, rule, "2", force=True).promote


def test_promote_does_not_import_mlflow() -> None:
    code = (
        "import sys; from vesselseg.config import RegisterConfig; "
        "from vesselseg.registry.promote import decide; "
        "assert decide(0.2, 0.1, RegisterConfig(), '1').promote; "
        "assert 'mlflow' not in sys.modules, 'mlflow imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_keep_global_tracking_uri_restores_unset_and_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from vesselseg import tracking

    mlflow.set_tracking_uri(None)  # nothing set process-wide: MLflow follows the variable
    env_uri = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    with tracking.use_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}"):
        assert mlflow.get_tracking_uri().endswith("other.db")
    assert os.environ["MLFLOW_TRACKING_URI"] == env_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'later.db'}")
    assert mlflow.get_tracking_uri().endswith("later.db")  # still unset: follows the variable
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    pinned = f"sqlite:///{tmp_path / 'pinned.db'}"
    mlflow.set_tracking_uri(pinned)
    try:
        with tracking.keep_global_tracking_uri():
            mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'lightning.db'}")
        assert mlflow.get_tracking_uri() == pinned
        assert os.environ["MLFLOW_TRACKING_URI"] == pinned  # as set_tracking_uri left it
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)


# --------------------------------------------------------------------------- real stores


def test_promotion_rule(store: Path) -> None:
    from vesselseg import tracking
    from vesselseg.provenance import sha256_file
    from vesselseg.registry import list_models, register_model

    client = tracking.client()
    run_id = tracking.start_run("vesselseg", run_name="train")
    tracking.end_run(run_id)
    a = make_bundle(store / "a" / "model.pt", seed=1, info={"run_id": run_id})
    b = make_bundle(store / "b" / "model.pt", seed=2, info={"run_id": "0" * 32})
    c = make_bundle(store / "c" / "model.pt", seed=3, info={"best_score": 0.9})
    lock = store / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  synth:\n    cmd: vesselseg synth\n    outs:\n"
        "    - path: data/raw\n      hash: md5\n      md5: 0123abcd.dir\n"
    )

    def champion_version() -> str:
        return str(client.get_model_version_by_alias("promo", "champion").version)

    r1 = register_model(
        a, write_metrics(store / "m1.json", 0.5), name="promo", params=params(), dvc_lock=lock
    )
    assert (r1.version, r1.promoted, r1.aliases) == ("1", True, ["challenger", "champion"])
    assert r1.run_id == run_id  # logged into the model's own training run
    v1 = client.get_model_version("promo", "1")
    assert v1.tags["weights_sha256"] == sha256_file(a)
    assert v1.tags["dvc.data/raw"] == "0123abcd.dir" and len(v1.tags["data_version"]) == 16
    assert v1.tags["metric_name"] == "dice" and float(v1.tags["metric_value"]) == 0.5
    assert float(v1.tags["metrics.cldice"]) == 0.25
    assert r1.log_seconds < 10

    r2 = register_model(b, write_metrics(store / "m2.json", 0.4), name="promo", dvc_lock=lock)
    assert (r2.version, r2.promoted, r2.aliases) == ("2", False, ["challenger"])
    assert r2.run_id != run_id  # its training run is not in this store: a new run
    assert "must be higher" in r2.reason
    assert champion_version() == "1"
    assert str(client.get_model_version_by_alias("promo", "challenger").version) == "2"

    r3 = register_model(c, write_metrics(store / "m3.json", 0.6), name="promo")
    assert (r3.version, r3.promoted, r3.champion_before) == ("3", True, "1")
    assert champion_version() == "3"

    r4 = register_model(b, write_metrics(store / "m4.json", 0.1), name="promo", force=True)
    assert r4.promoted and "--force" in r4.reason and champion_version() == "4"

    r5 = register_model(c, name="promo")  # no metrics.json: training best_score 0.9 > 0.1
    assert r5.metric == 0.9 and "best_score" in r5.metric_source and r5.promoted

    rows = {r.version: r for r in list_models("promo")}
    assert rows["5"].aliases == ["challenger", "champion"] and rows["1"].aliases == []
    assert rows["2"].metric == 0.4


def test_predict_through_registry_is_identical(store: Path, champion: Path) -> None:
    from vesselseg.registry import MARKER, resolve_model

    vol = store / "vol.npy"
    for model, out in (("models:/vesselseg@champion", "from_registry"), (str(champion), "ckpt")):
        result = runner.invoke(
            app, ["predict", str(vol), "--model", model, "--save-dir", str(store / out), *TILE]
        )
        assert result.exit_code == 0, result.output
    for kind in ("prob", "mask"):
        name = f"vol.model.{kind}.npy"
        assert (store / "from_registry" / name).read_bytes() == (store / "ckpt" / name).read_bytes()

    weights = resolve_model("models:/vesselseg@champion")  # cached: alias → version 1
    assert weights == store / "cache" / "vesselseg" / "v1" / "artifacts" / "model.pt"
    assert weights.read_bytes() == champion.read_bytes()
    assert resolve_model("models:/vesselseg/1") == weights
    marker = weights.parents[1] / MARKER
    stamp = marker.stat().st_mtime_ns
    assert resolve_model("models:/vesselseg@champion") == weights
    assert marker.stat().st_mtime_ns == stamp  # no second download
    saved = json.loads(marker.read_text())
    marker.write_text(json.dumps({**saved, "source": "models:/m-elsewhere"}))
    assert resolve_model("models:/vesselseg/1") == weights  # source changed: downloaded again
    assert json.loads(marker.read_text())["source"] == saved["source"]
    assert resolve_model(str(champion)) == champion  # a plain path is returned unchanged


def test_resolve_run_and_logged_model_uris(store: Path, champion: Path) -> None:
    from vesselseg import tracking
    from vesselseg.registry import resolve_model

    run_id = tracking.start_run("vesselseg", run_name="train-like")
    for path in (champion, champion.with_suffix(".json")):  # what training logs under model/
        tracking.log_artifact(run_id, path, "model")
    tracking.end_run(run_id)
    from_run = resolve_model(f"runs:/{run_id}/model")
    assert from_run.name == "model.pt" and from_run.read_bytes() == champion.read_bytes()
    assert from_run.with_suffix(".json").is_file()
    source = tracking.client().get_model_version("vesselseg", "1").source
    assert source.startswith("models:/m-")  # MLflow 3: the version points at a logged model
    logged = resolve_model(source)
    assert logged.read_bytes() == champion.read_bytes()
    assert resolve_model("models:/vesselseg/latest").read_bytes() == champion.read_bytes()


def test_pyfunc_predicts_like_the_checkpoint(store: Path, champion: Path) -> None:
    import mlflow

    from vesselseg.config import InferConfig
    from vesselseg.inference.run import predict_path

    vol = store / "vol.npy"
    predict_path(
        vol,
        champion,
        store / "pyfunc_ref",
        InferConfig(tile_size=[16, 16, 16]),
        show_progress=False,
    )
    expected = np.load(store / "pyfunc_ref" / "vol.model.prob.npy")
    path_before = list(sys.path)
    try:
        model = mlflow.pyfunc.load_model("models:/vesselseg@champion")
        assert np.array_equal(model.predict(str(vol)), expected)
        kept = model.predict({"path": str(vol)}, params={"save_dir": str(store / "pyfunc_out")})
        assert np.array_equal(kept, expected) and (store / "pyfunc_out").is_dir()
        array = model.unwrap_python_model().predict(None, np.load(vol))
        assert array.dtype == np.float32 and np.array_equal(array, expected)
        # as documented: a 3D array and a DataFrame of paths through PyFuncModel.predict
        through_pyfunc = model.predict(np.load(vol))
        assert through_pyfunc.dtype == np.float32 and np.array_equal(through_pyfunc, expected)
        import pandas as pd

        frame = model.predict(pd.DataFrame({"path": [str(vol)]}))
        assert np.array_equal(frame, expected)
        assert model.metadata.signature.inputs is None  # no schema: every form passes through
        meta = model.metadata
        assert meta.signature.outputs.to_dict()[0]["tensor-spec"]["dtype"] == "float32"
        flavor = meta.flavors["python_function"]
        assert set(flavor["artifacts"]) == {"weights", "settings", "config"}
        assert flavor["code"] and "cloudpickle" not in json.dumps(flavor.get("python_model", ""))
    finally:
        sys.path[:] = path_before  # the model's code_paths folder was prepended


def test_embedded_default_store(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without MLFLOW_TRACKING_URI: the embedded store mlruns/mlflow.db (+ mlruns/artifacts)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    model = make_bundle(store / "embedded" / "model.pt", seed=5)
    result = runner.invoke(app, ["register", "--model", str(model), "--name", "embedded"])
    assert result.exit_code == 0, result.output
    assert "registered embedded version 1" in result.output
    assert "n/a from no metrics" in result.output and "promoted: no champion yet" in result.output
    vol = str(store / "vol.npy")
    for source, out in (("models:/embedded@champion", "emb_registry"), (str(model), "emb_ckpt")):
        result = runner.invoke(app, ["predict", vol, "--model", source, "--save-dir", out, *TILE])
        assert result.exit_code == 0, result.output
        assert (store / out / "vol.model.prob.npy").is_file()
    assert (store / "emb_registry" / "vol.model.prob.npy").read_bytes() == (
        store / "emb_ckpt" / "vol.model.prob.npy"
    ).read_bytes()
    assert (store / "cache" / "embedded" / "v1" / "artifacts" / "model.pt").is_file()


def test_train_init_from_registry(store: Path, champion: Path, tiny_dataset: Path) -> None:
    """``train --init models:/…``: the CLI resolves the URI (download into the cache) and
    training starts from those weights; the run records the URI it came from."""
    from helpers import TINY_TRAIN

    from vesselseg import tracking
    from vesselseg.bundle import load_bundle

    settings = [a for s in TINY_TRAIN for a in ("--set", s)] + ["--set", "model.base_channels=2"]
    out = store / "finetuned" / "model.pt"
    args = ["train", "--data-dir", str(tiny_dataset), "--max-epochs", "1", "--out", str(out)]
    result = runner.invoke(app, [*args, "--init", "models:/vesselseg@champion", *settings])
    assert result.exit_code == 0, result.output
    _, meta = load_bundle(out)
    run = tracking.client().get_run(meta.info["run_id"])
    assert run.data.tags["init_from"] == "models:/vesselseg@champion"
    assert meta.info["init_from"] == "models:/vesselseg@champion"
    bad = runner.invoke(app, [*args, "--init", "models:/vesselseg@nope", *settings])
    assert bad.exit_code == 2 and "has no alias 'nope'" in bad.output


def test_models_lists_versions(store: Path, champion: Path) -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("registered model 'vesselseg'")
    assert lines[1].split()[:3] == ["version", "aliases", "metric"]
    assert lines[2].split()[:4] == ["1", "challenger,champion", "dice", "0.5000"]


def test_registry_errors_exit_2(store: Path, champion: Path) -> None:
    vol = str(store / "vol.npy")
    cases = [
        (["predict", vol, "--model", "models:/vesselseg@nope", *TILE], "has no alias 'nope'"),
        (["predict", vol, "--model", "models:/vesselseg/99", *TILE], "has no version '99'"),
        (["predict", vol, "--model", "models:/nosuch@champion"], "no registered model 'nosuch'"),
        (["predict", vol, "--model", "models:/vesselseg"], "expected models:/NAME@ALIAS"),
        (["predict", vol, "--model", str(store / "missing.pt")], "no such model file"),
        (["models", "--name", "nosuch"], "no registered model 'nosuch'"),
        (
            ["register", "--model", str(champion), "--metrics", str(store / "nope.json")],
            "no such metrics file",
        ),
        (
            [
                "register",
                "--model",
                str(champion),
                "--metric",
                "hd95",
                "--metrics",
                str(store / "first" / "metrics.json"),
            ],
            "no numeric metric 'hd95'",
        ),
        (["register", "--model", str(champion), "--alias", "champion"], "both 'champion'"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output


def write_measured(path: Path, dice: float, data: Path, digest: str) -> Path:
    """A metrics file as ``vesselseg evaluate`` writes it: with the data it was measured on."""
    dataset = {"name": f"data/raw/{data.name}", "digest": digest, "source": data.as_posix()}
    overall = {"dice": dice, "volumes": 1}
    path.write_text(json.dumps({"overall": overall, "data": str(data), "dataset": dataset}))
    return path


def test_champion_is_compared_on_the_declared_test_set_only(store: Path) -> None:
    """``register.test_dir``: a metrics file of other data is refused; the champion's metric
    counts only when it was measured on the same data (digest)."""
    from vesselseg import tracking
    from vesselseg.errors import ConfigError
    from vesselseg.registry import register_model

    test, other = store / "data" / "raw" / "test", store / "data" / "raw" / "unlabelled"
    test.mkdir(parents=True, exist_ok=True)
    other.mkdir(parents=True, exist_ok=True)
    a = make_bundle(store / "testset" / "a.pt", seed=1)
    b = make_bundle(store / "testset" / "b.pt", seed=2)
    old, new = "d1" * 16, "f" * 32
    m = store / "testset"

    def reg(model: Path, metrics: Path):
        return register_model(model, metrics, name="testset", test_dir=test)

    r1 = reg(a, write_measured(m / "1.json", 0.8, test, old))
    assert r1.promoted and r1.metric_data == f"data/raw/test@{old}"
    tags = tracking.client().get_model_version("testset", r1.version).tags
    assert tags["metric_data"] == f"data/raw/test@{old}" and tags["metric_data_digest"] == old

    with pytest.raises(ConfigError, match="measured on data/raw/unlabelled, not on the test set"):
        reg(b, write_measured(m / "other.json", 0.99, other, "e" * 32))
    r2 = reg(b, write_measured(m / "2.json", 0.7, test, old))  # same data, lower: kept
    assert not r2.promoted and "must be higher" in r2.reason
    # the test set changed (another DVC md5): version 1's 0.8 says nothing about it
    r3 = reg(b, write_measured(m / "3.json", 0.6, test, new))
    assert r3.promoted and f"version 1's dice was measured on data/raw/test@{old}" in r3.reason
    r4 = reg(a, write_measured(m / "4.json", 0.65, test, new))  # same new data, higher: wins
    assert r4.promoted and r4.reason == "dice 0.6500 vs champion version 3's 0.6000"

    # the CLI reads register.test_dir (data/raw/test here): unlabelled metrics exit 2
    args = ["register", "--model", str(a), "--name", "testset"]
    result = runner.invoke(app, [*args, "--metrics", str(m / "other.json")])
    assert result.exit_code == 2 and "not on the test set data/raw/test" in result.output
    result = runner.invoke(
        app, [*args, "--metrics", str(m / "other.json"), "--set", "register.test_dir=''"]
    )
    assert result.exit_code == 0, result.output  # '' declares no test set


# --------------------------------------------------------------------------- real server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server started in its own process group, and its workers (SIGTERM, then KILL)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@pytest.mark.slow
def test_real_tracking_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vesselseg.config import InferConfig
    from vesselseg.inference.run import predict_path

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    log = tmp_path / "server.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, log)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("VESSELSEG_MODEL_CACHE", str(tmp_path / "cache"))
        monkeypatch.chdir(tmp_path)
        model = make_bundle(tmp_path / "m" / "model.pt", seed=4)
        metrics = write_metrics(tmp_path / "metrics.json", 0.7)
        result = runner.invoke(app, ["register", "--model", str(model), "--metrics", str(metrics)])
        assert result.exit_code == 0, result.output
        assert "registered vesselseg version 1" in result.output
        # artifacts went through the server (proxied), not into the client's folder
        assert list((tmp_path / "artifacts").rglob("model.pt"))
        assert not (tmp_path / "mlruns").exists()

        vol = tmp_path / "vol.npy"
        np.save(vol, np.random.default_rng(1).random((16, 24, 24), np.float32))
        args = ["predict", str(vol), "--model", "models:/vesselseg@champion", *TILE]
        result = runner.invoke(app, [*args, "--save-dir", str(tmp_path / "served")])
        assert result.exit_code == 0, result.output
        predict_path(
            vol, model, tmp_path / "ckpt", InferConfig(tile_size=[16, 16, 16]), show_progress=False
        )
        for kind in ("prob", "mask"):
            name = f"vol.model.{kind}.npy"
            served, ckpt = tmp_path / "served" / name, tmp_path / "ckpt" / name
            assert served.read_bytes() == ckpt.read_bytes()
        result = runner.invoke(app, ["models"])
        assert result.exit_code == 0 and "challenger,champion" in result.output
    finally:
        stop_server(proc)


@pytest.mark.slow
def test_mlflow_models_serve_array_and_path(store: Path, champion: Path) -> None:
    """``mlflow models serve`` (local environment, loopback only): one request with a small
    array, one with a path; both give the checkpoint's probabilities."""
    from vesselseg.config import InferConfig
    from vesselseg.inference.run import predict_path

    try:
        port = free_port()
    except OSError as exc:
        pytest.skip(f"cannot bind a port on 127.0.0.1: {exc}")
    vol = store / "vol.npy"
    predict_path(vol, champion, store / "serve_ref", InferConfig(tile_size=[16, 16, 16]),
                 show_progress=False)  # fmt: skip
    expected = np.load(store / "serve_ref" / "vol.model.prob.npy")
    # the server runs ``uvicorn`` from PATH: this interpreter's environment first
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": path}
    log = store / "serve.log"
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m"]
    command += ["models:/vesselseg@champion", "--env-manager", "local", "-w", "1"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, env=env, cwd=store, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}/ping", proc, log, timeout=120)

        def invoke(payload: dict) -> np.ndarray:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                return np.asarray(json.loads(response.read())["predictions"], np.float32)

        from_array = invoke({"inputs": np.load(vol).tolist()})
        assert from_array.shape == expected.shape
        np.testing.assert_allclose(from_array, expected, atol=1e-5)
        from_path = invoke({"dataframe_split": {"columns": ["path"], "data": [[str(vol)]]}})
        assert np.array_equal(from_path, expected)
    finally:
        stop_server(proc)


def test_training_score_prefers_the_saved_epochs_score() -> None:
    """A model saved from its last epoch records ``score`` (that epoch's) beside the run's
    ``best_score``: the registry's fallback metric is the score of the weights it registers."""
    from vesselseg.registry.register import training_score

    assert training_score({"score": 0.71, "best_score": 0.85}) == (0.71, "score")
    assert training_score({"score": None, "best_score": 0.85}) == (0.85, "best_score")
    assert training_score({"best_score": True}) is None and training_score({}) is None
