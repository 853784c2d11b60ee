"""Optuna tuning: two workers on one storage, pruning, MLflow child runs, resume, failures."""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from vesselseg import tuning
from vesselseg.cli import app
from vesselseg.config import Params, apply_overrides, load_params, params_to_dict, with_values
from vesselseg.errors import ConfigError, VesselsegError

runner = CliRunner()

# A network and search space small enough for seconds per trial. With 4 crops per volume and a
# learning rate in [0.003, 0.03] every trial reaches val_dice > 0 after one epoch, while an
# absurd rate (1e30) turns the weights into NaN: val_dice 0, so the median pruner stops it.
TINY = [
    "model.base_channels=4",
    "model.depth=2",
    "data.crop_size=16",
    "infer.tile_size=16",
    "data.samples_per_volume=4",
    "train.batch_size=2",
    "train.overlay_every_n_epochs=0",
    "train.experiment=tune-test",
    "tune.crop_sizes=[16]",
    "tune.batch_sizes=[1, 2]",
    "tune.lr_min=0.003",
    "tune.lr_max=0.03",
    "tune.max_epochs=1",
    "tune.pruner=median",
    "tune.startup_trials=2",
    "tune.pruner_warmup_epochs=0",
    "tune.study=tiny",
]


def tiny_params(dataset: Path, *extra: str) -> Params:
    return apply_overrides(
        Params(),
        [*TINY, f"data.train_dir={dataset / 'train'}", f"data.val_dir={dataset / 'val'}", *extra],
    )


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as the working directory (its own tuning/ and mlruns/)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("project")


@pytest.fixture()
def trained_project(shared_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Like ``project``, shared by the tests that train: one MLflow store (its creation takes
    seconds) and one journal file; they use different study names."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(shared_folder)
    return shared_folder


def child_runs(root: Path, experiment: str, parent_run_id: str) -> dict[int, Any]:
    """The study's nested MLflow runs by trial number."""
    from vesselseg import tracking

    client = tracking.client(root)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], max_results=100)
    return {
        int(r.data.tags["optuna.trial"]): r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent_run_id
    }


class RecordedBar:
    """Stands in for :func:`vesselseg.progress.progress_bar`; records totals and advances."""

    def __init__(self) -> None:
        self.totals: list[float] = []
        self.advanced: list[float] = []

    @contextlib.contextmanager
    def __call__(self, description: str, total: float, unit: str = "items"):
        self.totals.append(total)
        yield self.advanced.append


@pytest.mark.slow
def test_parallel_study_prunes_a_bad_trial_resumes_and_writes_tuned_params(
    tiny_dataset: Path, trained_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vesselseg import tracking

    project = trained_project

    mlruns = project / "mlruns"
    params = tiny_params(tiny_dataset, "tune.n_trials=4", "tune.jobs=2")
    bar = RecordedBar()
    monkeypatch.setattr(tuning.session, "progress_bar", bar)
    summary = tuning.run_study(params, project / "params.tuned.yaml", mlflow_root=mlruns)
    assert bar.totals == [4] and sum(bar.advanced) == 4  # one bar over the session's trials

    # two worker processes shared one journal storage and lost no trial
    trials = tuning.open_study(params).get_trials()
    assert summary.n_trials == summary.new_trials == 4
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2 and tuning.worker_id() not in workers
    assert (project / "tuning" / "optuna.journal").is_file()

    # the study is a parent MLflow run; each trial a child run with params, curve and state
    client = tracking.client(mlruns)
    children = child_runs(mlruns, "tune-test", summary.parent_run_id)
    assert sorted(children) == [0, 1, 2, 3]
    for t in trials:
        run = children[t.number]
        assert run.data.tags["optuna.state"] == t.state.name
        assert run.info.status == tuning.RUN_STATUS[t.state.name]
        assert float(run.data.params["train.lr"]) == pytest.approx(t.params["train.lr"])
        assert run.data.params["train.max_epochs"] == "1"
        curve = client.get_metric_history(run.info.run_id, "val_dice")
        assert len(curve) == len(t.intermediate_values) >= 1
    assert client.get_run(summary.parent_run_id).info.status == "FINISHED"

    # the best params: a full params file (written atomically) and a dvc command
    best = tuning.open_study(params).best_trial
    tuned = load_params(project / "params.tuned.yaml")
    assert tuned.train.lr == pytest.approx(best.params["train.lr"])
    assert tuned.train.batch_size == best.params["train.batch_size"]
    assert tuned.train.max_epochs == params.train.max_epochs  # the full run, not the trial's
    assert tuned.model == params.model and tuned.data.val_dir == params.data.val_dir
    assert not list(project.glob("*.part"))
    sets = shlex.split(summary.dvc_command)[4::2]
    assert summary.dvc_command.startswith("dvc exp run -S ")
    assert apply_overrides(params, sets).train == tuned.train

    # resume through the CLI (params.yaml in the project): a deliberately bad trial is queued
    # first and pruned after its first epoch; the study and its parent run continue
    (project / "params.yaml").write_text(yaml.safe_dump(params_to_dict(params)))
    tuning.enqueue_trial(params, {"train.lr": 1e30, "train.batch_size": 2})
    result = runner.invoke(app, ["tune", "--n-trials", "1", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "5 trials" in result.output and "1 new" in result.output
    assert "dvc exp run -S" in result.output and "optuna-dashboard" in result.output
    trials = tuning.open_study(params).get_trials()
    assert len(trials) == 5
    bad = trials[4]
    assert bad.params["train.lr"] == 1e30
    assert bad.state.name == "PRUNED" and list(bad.intermediate_values) == [0]
    children = child_runs(mlruns, "tune-test", summary.parent_run_id)
    assert sorted(children) == [0, 1, 2, 3, 4]
    assert children[4].data.tags["optuna.state"] == "PRUNED"
    assert children[4].info.status == "KILLED"


@pytest.mark.slow
def test_a_failing_trial_is_marked_failed_and_the_study_goes_on(
    tiny_dataset: Path, trained_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = trained_project
    # a validation mask with label 7: every trial fails while loading data
    bad_val = project / "bad_val"
    bad_val.mkdir()
    for image in (tiny_dataset / "val").glob("data_*.npy"):
        data = np.load(image)
        np.save(bad_val / image.name, data)
        np.save(bad_val / image.name.replace("data_", "mask_"), np.full(data.shape, 7, np.uint8))
    params = tiny_params(
        tiny_dataset, f"data.val_dir={bad_val}", "tune.n_trials=2", "tune.study=broken"
    )
    mlruns = project / "mlruns"
    tuned = project / "broken.tuned.yaml"
    bar = RecordedBar()
    monkeypatch.setattr(tuning.session, "progress_bar", bar)
    with pytest.raises(VesselsegError, match=r"no trial completed \(2 fail\); first error"):
        tuning.run_study(params, tuned, mlflow_root=mlruns)
    assert bar.totals == [2] and bar.advanced == [1, 1]  # failed trials count as done

    trials = tuning.open_study(params).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]  # both ran: the study went on
    assert "LabelValueError" in trials[0].user_attrs["error"]
    study_run = tuning.open_study(params).user_attrs[tuning.PARENT_RUN_ATTR]
    children = child_runs(mlruns, "tune-test", study_run)
    assert sorted(children) == [0, 1]
    assert all(r.data.tags["optuna.state"] == "FAIL" for r in children.values())
    assert all(r.info.status == "FAILED" for r in children.values())
    assert not tuned.exists()


def test_running_trials_of_a_dead_worker_are_marked_failed(project: Path) -> None:
    params = apply_overrides(Params(), ["tune.study=orphans"])
    study = tuning.open_study(params)
    alive, dead = study.ask(), study.ask()
    alive.set_user_attr(tuning.WORKER_ATTR, "host:1")
    dead.set_user_attr(tuning.WORKER_ATTR, "host:2")
    spec = tuning.resolve_storage(params.tune)
    assert tuning.fail_orphaned_trials(spec, "orphans", {"host:2"}) == [dead.number]
    states = [t.state.name for t in tuning.open_study(params).get_trials()]
    assert states == ["RUNNING", "FAIL"]


def test_rdb_heartbeats_fail_a_silent_trial_and_queue_it_again(project: Path) -> None:
    """With an RDB, Optuna itself fails a trial whose machine went silent and retries it once."""
    import sqlite3

    from optuna.distributions import FloatDistribution

    url = f"sqlite:///{project / 'optuna.db'}"
    params = with_values(Params(), {"tune.study": "silent", "tune.storage": url})
    spec = tuning.resolve_storage(params.tune)
    tuning.open_study(params, spec)
    storage = tuning.open_storage(spec)
    assert storage.get_heartbeat_interval() == 60
    # a worker on a machine that died: its trial is RUNNING, its last heartbeat an hour old
    study_id = storage.get_study_id_from_name("silent")
    trial_id = storage.create_new_trial(study_id)
    lr = FloatDistribution(1e-4, 1e-1, log=True)
    storage.set_trial_param(trial_id, "train.lr", 0.02, lr)
    storage.record_heartbeat(trial_id)
    with contextlib.closing(sqlite3.connect(project / "optuna.db")) as db, db:
        db.execute("UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-1 hour')")

    # the next worker to start a trial fails the silent one and runs its configuration again
    study = tuning.open_study(params, spec)
    study.optimize(lambda trial: trial.suggest_float("train.lr", 1e-4, 1e-1, log=True), 1)
    dead, retry = study.get_trials()
    assert (dead.state.name, retry.state.name) == ("FAIL", "COMPLETE")
    assert retry.params == {"train.lr": 0.02} and retry.system_attrs["failed_trial"] == 0


def test_trials_are_split_exactly() -> None:
    assert tuning.split_trials(4, 2) == [2, 2]
    assert tuning.split_trials(5, 3) == [2, 2, 1]
    assert tuning.split_trials(2, 8) == [1, 1]
    assert sum(tuning.split_trials(17, 4)) == 17


class LastChoice:
    """A stand-in Optuna trial that takes the last choice / upper bound."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.params[name] = choices[-1]
        return choices[-1]

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        self.params[name] = high
        return high


def test_search_space_comes_from_params_yaml() -> None:
    params = apply_overrides(Params(), ["tune.warmup_epochs=[3]"])
    values = tuning.values_from_trial(tuning.suggest(LastChoice(), params.tune))
    assert values == {
        "data.crop_size": 64,
        "train.lr": 0.01,
        "train.batch_size": 4,
        "train.lr_schedule": "cosine",
        "train.warmup_epochs": 3,
        "train.min_lr": pytest.approx(0.01 * 0.01),
    }
    plateau = apply_overrides(params, ["tune.schedules=[plateau]"])
    values = tuning.values_from_trial(tuning.suggest(LastChoice(), plateau.tune))
    assert values["train.lr_reduce_factor"] == 0.7 and values["train.lr_patience"] == 3
    trial = tuning.trial_params(params, values, "t-1")
    assert trial.train.max_epochs == params.tune.max_epochs and trial.train.run_name == "t-1"


def test_bad_search_space_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tune.crop_sizes: 36 is not a multiple of 8"):
        tuning.check_search_space(
            apply_overrides(Params(), ["model.depth=4", "tune.crop_sizes=[32, 36]"])
        )
    swapped = ["tune.plateau_factor_min=0.8", "tune.plateau_factor_max=0.3"]
    with pytest.raises(ConfigError, match="plateau_factor_min must be <="):
        tuning.check_search_space(apply_overrides(Params(), swapped))
    with pytest.raises(ConfigError, match="batch_sizes must list"):
        tuning.check_search_space(apply_overrides(Params(), ["tune.batch_sizes=[]"]))


def test_storage_default_journal_or_rdb_url(project: Path) -> None:
    default = Params().tune
    assert tuning.resolve_storage(default) == str((project / "tuning/optuna.journal").resolve())
    url = "postgresql://tuner:secret@db.example:5432/optuna"
    rdb = with_values(Params(), {"tune.storage": url}).tune
    assert tuning.resolve_storage(rdb) == url
    assert tuning.describe_storage(url) == "postgresql://tuner:***@db.example:5432/optuna"
    journal = with_values(Params(), {"tune.storage": "shared/study.journal"}).tune
    assert tuning.resolve_storage(journal) == str((project / "shared/study.journal").resolve())
    with pytest.raises(ConfigError, match="unsupported URL scheme 'redis'"):
        tuning.resolve_storage(with_values(Params(), {"tune.storage": "redis://host"}).tune)


def test_dvc_command_values_read_back_as_the_same_types() -> None:
    values = {"train.lr": 1e-05, "data.crop_size": [32, 48, 64], "train.lr_schedule": "cosine"}
    command = tuning.dvc_command(values)
    assert command == (
        "dvc exp run -S train.lr=1.0e-05 -S 'data.crop_size=[32, 48, 64]' "
        "-S train.lr_schedule=cosine"
    )
    params = apply_overrides(Params(), shlex.split(command)[4::2])
    assert params.train.lr == 1e-05 and params.data.crop_size == [32, 48, 64]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--jobs", "0"], "tune.jobs must be >= 1"),
        (["--pruner", "best"], "tune.pruner must be one of"),
        (["--set", "tune.lr_min=0.1"], "tune.lr_min must be <= tune.lr_max"),
        (["--storage", "redis://host"], "unsupported URL scheme"),
    ],
)
def test_cli_rejects_bad_options(project: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["tune", *args])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
