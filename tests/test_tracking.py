"""The MLflow service layer: dataset inputs logged by parallel workers."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.exceptions import MlflowException

from vesselseg import tracking


class RacingClient:
    """A client whose first ``failures`` calls lose the insert race another process won."""

    def __init__(self, failures: int, message: str = "UNIQUE constraint failed: datasets") -> None:
        self.failures = failures
        self.message = message
        self.calls: list[tuple[str, list[Any]]] = []

    def log_inputs(self, run_id: str, datasets: list[Any]) -> None:
        self.calls.append((run_id, datasets))
        if len(self.calls) <= self.failures:
            raise MlflowException(self.message)


def test_log_inputs_retries_a_lost_insert_race() -> None:
    c = RacingClient(failures=2)
    tracking._log_inputs_retrying(c, "run", ["train", "val"])
    assert len(c.calls) == 3 and all(call == ("run", ["train", "val"]) for call in c.calls)


def test_log_inputs_gives_up_and_passes_other_errors_on() -> None:
    with pytest.raises(MlflowException, match="UNIQUE"):
        tracking._log_inputs_retrying(RacingClient(failures=9), "run", ["x"], attempts=3)
    other = RacingClient(failures=1, message="no such run")
    with pytest.raises(MlflowException, match="no such run"):
        tracking._log_inputs_retrying(other, "run", ["x"])
    assert len(other.calls) == 1


def test_experiment_created_meanwhile_by_another_worker_is_reused(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "mlruns"
    first = tracking.ensure_experiment("race", root)
    lookup = MlflowClient.get_experiment_by_name
    misses = iter([True])  # the first lookup runs before the other worker's insert

    def late_lookup(self: MlflowClient, name: str) -> Any:
        return None if next(misses, False) else lookup(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", late_lookup)
    assert tracking.ensure_experiment("race", root) == first
