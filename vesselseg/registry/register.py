"""``vesselseg register``: log a saved model as an MLflow pyfunc and register a new version.

:func:`register_model` logs ``NAME.pt`` + ``NAME.json`` as an MLflow pyfunc
(:mod:`vesselseg.registry.pyfunc`), registers a new version under ``register.name`` with tags
(weights hash, data version, git commit, run id, metrics), sets the ``challenger`` alias and
moves ``champion`` to it when :func:`vesselseg.registry.promote.decide` says so.

mlflow is imported inside functions only, so importing this module is cheap.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vesselseg.config import RegisterConfig
from vesselseg.errors import ConfigError, MissingPathError
from vesselseg.provenance import data_version, dvc_data_hashes, git_commit, sha256_file
from vesselseg.registry.lookup import version_metric
from vesselseg.registry.measured import (
    TRAINING_SCORE,
    MeasuredOn,
    check_test_set,
    comparable,
    measured_on,
)
from vesselseg.registry.promote import decide
from vesselseg.registry.pyfunc import log_pyfunc, stage_code, stage_model


@dataclass
class RegisterResult:
    """What :func:`register_model` did."""

    name: str
    version: str
    model_uri: str
    run_id: str
    metric_name: str
    metric: float | None
    metric_source: str
    aliases: list[str] = field(default_factory=list)
    promoted: bool = False
    reason: str = ""
    champion_before: str | None = None
    log_seconds: float = 0.0
    metric_data: str = ""  # the data the metric was measured on (name@digest)

    def lines(self) -> list[str]:
        value = "n/a" if self.metric is None else f"{self.metric:.4f}"
        out = [
            f"registered {self.name} version {self.version} ({self.metric_name} {value} from "
            f"{self.metric_source}; MLflow run {self.run_id}; logged in {self.log_seconds:.1f} s)",
            f"aliases of version {self.version}: {', '.join(self.aliases)}",
        ]
        out.append(("promoted: " if self.promoted else "not promoted: ") + self.reason)
        out.append(f"use it: vesselseg predict INPUT --model models:/{self.name}/{self.version}")
        return out


def read_metric(metrics_path: str | Path, metric: str) -> tuple[float, dict[str, float]]:
    """``(value of metric, every numeric overall metric)`` from ``vesselseg evaluate``'s
    metrics.json; ``metric`` is a key of ``overall`` (``dice``) or a dotted path
    (``overall.cldice``)."""
    path = Path(metrics_path)
    if not path.is_file():
        raise MissingPathError(f"{path}: no such metrics file (write it with vesselseg evaluate)")
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise ConfigError(f"{path}: not valid JSON") from None
    overall = data.get("overall") if isinstance(data, dict) else None
    if not isinstance(overall, dict):
        raise ConfigError(f"{path}: no 'overall' metrics (not written by vesselseg evaluate?)")
    numbers = {
        k: float(v)
        for k, v in overall.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    value: Any = data
    for part in metric.split(".") if "." in metric else ["overall", metric]:
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        known = ", ".join(sorted(numbers)) or "none"
        raise ConfigError(f"{path}: no numeric metric {metric!r} (register.metric; has {known})")
    return float(value), numbers


def version_tags(
    weights: Path,
    meta: Any,
    metric: str,
    value: float | None,
    source: str,
    numbers: dict[str, float],
    dvc_lock: str | Path,
    extra: dict[str, str] | None,
) -> dict[str, str]:
    """The tags of a new model version (all strings)."""
    tags: dict[str, str] = {
        "weights_sha256": sha256_file(weights),
        "git_commit": str(meta.info.get("git_commit") or git_commit() or "unknown"),
        "metric_name": metric,
        "metric_source": source,
        "model": str(meta.model.get("name", "")),
        "threshold": repr(float(meta.threshold)),
        "threshold_source": "calibrated" if "calibration" in meta.info else "default",
    }
    data = dvc_data_hashes(dvc_lock)
    for rel, md5 in data.items():
        tags[f"dvc.{rel}"] = md5
    tags["data_version"] = data_version(data)
    if value is not None:
        tags["metric_value"] = repr(value)
    for key, number in numbers.items():
        tags[f"metrics.{key}"] = repr(number)
    for key in ("score", "model_from", "best_score", "monitor", "run_id", "epochs"):
        if meta.info.get(key) is not None:
            tags[f"train.{key}"] = str(meta.info[key])
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


def training_score(info: dict[str, Any]) -> tuple[float, str] | None:
    """``(value, key)`` of the validation score training recorded for the saved weights:
    ``score`` (the saved epoch's), else ``best_score`` (models saved before ``score`` was)."""
    for key in ("score", "best_score"):
        value = info.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), key
    return None


def check_names(rule: RegisterConfig) -> None:
    """Registered model name and aliases MLflow accepts (an alias is never a version number);
    the new version's alias is not the champion's."""
    for label, value in (
        ("name", rule.name),
        ("alias", rule.alias),
        ("champion alias", rule.champion_alias),
    ):
        if not value or not re.fullmatch(r"[A-Za-z0-9_.\-]+", value) or value.isdigit():
            raise ConfigError(f"register {label} {value!r}: use letters, digits, '_', '-', '.'")
    if rule.alias == rule.champion_alias:
        raise ConfigError(f"register alias and champion alias are both {rule.alias!r}")


def register_model(
    model_path: str | Path,
    metrics_path: str | Path | None = None,
    name: str = "vesselseg",
    alias: str = "challenger",
    champion_alias: str = "champion",
    metric: str = "dice",
    force: bool = False,
    tags: dict[str, str] | None = None,
    params: Any = None,
    experiment: str = "vesselseg",
    dvc_lock: str | Path = "dvc.lock",
    root: str | Path | None = None,
    test_dir: str | Path | None = None,
) -> RegisterResult:
    """Log ``model_path`` as a pyfunc, register it as a new version of ``name``, give it
    ``alias`` and promote it to ``champion_alias`` when its ``metric`` beats the champion's.

    The metric comes from ``metrics_path`` (``vesselseg evaluate``'s metrics.json) or, without
    it, from the bundle's ``info.best_score`` (the validation score of training). A metrics
    file measured on other data than ``test_dir`` (``register.test_dir``) is refused, and the
    champion's metric counts only when it was measured on the same data
    (:mod:`vesselseg.registry.measured`). The model is
    logged into its training run (``info.run_id``) when this store has it, else a new run.
    ``params`` (a :class:`~vesselseg.config.Params`) is the resolved config that travels with
    the model; its ``infer`` section is how the pyfunc predicts.
    """
    from vesselseg import tracking

    tracking.quiet_mlflow()
    model_path = Path(model_path)
    if not model_path.is_file():
        raise MissingPathError(f"{model_path}: no such model file")
    rule = RegisterConfig(name=name, alias=alias, champion_alias=champion_alias, metric=metric)
    check_names(rule)
    numbers: dict[str, float] = {}
    score: float | None = None
    source = "no metrics"
    measured = MeasuredOn()
    if metrics_path is not None:
        score, numbers = read_metric(metrics_path, metric)
        source = str(metrics_path)
        measured = measured_on(metrics_path)
        check_test_set(metrics_path, measured, test_dir)

    uri = tracking.tracking_uri(root)
    client = tracking.client(root)
    # the registry resolves a version's models:/m-<id> source through the global URI
    with (
        tracking.use_tracking_uri(uri),
        tempfile.TemporaryDirectory(prefix="vesselseg-register-") as tmp,
    ):
        weights, meta, artifacts = stage_model(model_path, params, Path(tmp))
        trained = training_score(meta.info)
        if score is None and trained is not None:
            score, key = trained
            source = f"training {key} ({meta.info.get('monitor', 'validation')})"
            measured = MeasuredOn(TRAINING_SCORE)
        version_tag = version_tags(weights, meta, metric, score, source, numbers, dvc_lock, tags)
        version_tag.update(measured.tags())
        run_id, _ = tracking.reuse_or_start_run(
            experiment,
            meta.info.get("run_id"),
            f"register {model_path.stem}",
            {"vesselseg.stage": "register"},
            root,
        )
        start = time.perf_counter()
        info = log_pyfunc(
            run_id,
            meta,
            artifacts,
            stage_code(Path(tmp)),
            version_tag,
            numbers or ({metric: score} if score is not None else {}),
        )
        log_seconds = time.perf_counter() - start
        version, champion = _new_version(client, name, champion_alias, info, run_id, version_tag)
        client.set_registered_model_alias(name, alias, version)
        before = None if champion is None else str(champion.version)
        value_before, note = None, ""
        if champion is not None and comparable(champion.tags, measured):
            value_before = version_metric(champion, metric)
        elif champion is not None:
            other = (champion.tags or {}).get("metric_data") or "unrecorded data"
            note = f" (version {before}'s {metric} was measured on {other})"
        decision = decide(score, value_before, rule, before, force)
        if decision.promote:
            client.set_registered_model_alias(name, champion_alias, version)
    return RegisterResult(
        name=name,
        version=version,
        model_uri=f"models:/{name}/{version}",
        run_id=run_id,
        metric_name=metric,
        metric=score,
        metric_source=source,
        aliases=[alias, champion_alias] if decision.promote else [alias],
        promoted=decision.promote,
        reason=decision.reason + note,
        champion_before=before,
        log_seconds=log_seconds,
        metric_data=measured.label(),
    )


def _new_version(
    client: Any, name: str, champion_alias: str, info: Any, run_id: str, tags: dict[str, str]
) -> tuple[str, Any]:
    """Register ``info``'s model as a new version of ``name``; returns ``(version, the
    champion version before it or None)``."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="vesselseg: 3D vessel segmentation")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    registered = client.create_model_version(
        name, info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id
    )
    try:
        champion = client.get_model_version_by_alias(name, champion_alias)
    except MlflowException:
        champion = None
    return str(registered.version), champion
