"""MLflow Model Registry: register a saved model as a pyfunc, promote it, fetch it back.

* :func:`register_model` logs ``NAME.pt`` + ``NAME.json`` as an MLflow pyfunc ("models from
  code": :mod:`vesselseg.mlflow_model`, no cloudpickle; pinned ``pip_requirements``, no
  requirement inference, no network; the ``vesselseg`` package travels as ``code_paths``),
  registers a new version under ``register.name`` with tags (weights hash, data version, git
  commit, run id, metrics), sets the ``challenger`` alias and moves ``champion`` to it when its
  metric beats the champion's (higher is better) or when forced.
* :func:`resolve_model` turns ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
  ``models:/m-<id>`` or ``runs:/<run id>/<path>`` into a local ``.pt`` path, downloading the
  model once into a cache; a plain path comes back unchanged.
* :func:`list_models` lists the registered versions with their aliases and metrics.

mlflow is imported inside functions only, so importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vesselseg.bundle import is_model_uri
from vesselseg.errors import ConfigError, MissingPathError, VesselsegError
from vesselseg.provenance import data_version, dvc_data_hashes, git_commit, sha256_file

log = logging.getLogger(__name__)

LOGGED_MODEL_NAME = "vesselseg"  # the pyfunc's name inside its run
MARKER = "vesselseg-source.json"  # what a cache folder was downloaded from
REQUIREMENTS = (
    "torch", "numpy", "pandas", "monai", "scipy", "tifffile", "zarr", "pyyaml", "mlflow",
)


class RegistryError(VesselsegError):
    """A registry URI, registered model, version or alias that cannot be used."""


# --------------------------------------------------------------------------- register


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


def registered_model(client: Any, name: str, uri: str) -> Any:
    """The registered model ``name``, or a one-line error listing the registered names."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
        known = ", ".join(names) if names else "none"
        raise RegistryError(f"{uri}: no registered model {name!r} (registered: {known})") from None


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
    for part in (metric.split(".") if "." in metric else ["overall", metric]):
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
    }
    data = dvc_data_hashes(dvc_lock)
    for rel, md5 in data.items():
        tags[f"dvc.{rel}"] = md5
    tags["data_version"] = data_version(data)
    if value is not None:
        tags["metric_value"] = repr(value)
    for key, number in numbers.items():
        tags[f"metrics.{key}"] = repr(number)
    for key in ("best_score", "monitor", "run_id", "epochs"):
        if meta.info.get(key) is not None:
            tags[f"train.{key}"] = str(meta.info[key])
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


def pinned_requirements() -> list[str]:
    """``name==version`` of what the pyfunc imports, from this environment (no inference)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            log.warning("%s is not installed; left out of the model's requirements", name)
    return pins


def model_signature() -> Any:
    """Input: volume path(s) (one string column); output: float32 probabilities (z, y, x);
    param ``save_dir`` keeps the outputs there (memory-mapped result)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, -1, -1))]),
        params=ParamSchema([ParamSpec("save_dir", "string", "")]),
    )


def _stage(model_path: Path, params: Any, folder: Path) -> tuple[Path, Any, dict[str, str]]:
    """Copy (or convert, for a ``.ckpt``) the model and the resolved config into ``folder``;
    returns ``(weights path, meta, artifacts)``."""
    from vesselseg.bundle import build_from_bundle, load_bundle, meta_path, save_bundle
    from vesselseg.config import Params, params_to_dict

    build_from_bundle(model_path)  # the weights must fit the saved settings
    if model_path.suffix == ".ckpt":
        state, meta = load_bundle(model_path)
        weights = save_bundle(folder / f"{model_path.stem}.pt", state, meta)
    else:
        weights = folder / model_path.name
        shutil.copyfile(model_path, weights)
        shutil.copyfile(meta_path(model_path), meta_path(weights))
        _, meta = load_bundle(weights)
    config = folder / "config.json"
    config.write_text(json.dumps(params_to_dict(params or Params()), indent=2, sort_keys=True))
    artifacts = {"weights": str(weights), "settings": str(meta_path(weights))}
    return weights, meta, {**artifacts, "config": str(config)}


def _stage_code(folder: Path) -> Path:
    """A copy of the vesselseg package without caches, for ``code_paths``."""
    import vesselseg

    source = Path(vesselseg.__file__).parent
    target = folder / "vesselseg"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def _comparable(version: Any, metric: str) -> float | None:
    """The ``metric`` of a registered version, from its tags."""
    tags = version.tags or {}
    text = tags.get("metric_value") if tags.get("metric_name") == metric else None
    text = text if text is not None else tags.get(f"metrics.{metric}")
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


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
) -> RegisterResult:
    """Log ``model_path`` as a pyfunc, register it as a new version of ``name``, give it
    ``alias`` and promote it to ``champion_alias`` when its ``metric`` beats the champion's.

    The metric comes from ``metrics_path`` (``vesselseg evaluate``'s metrics.json) or, without
    it, from the bundle's ``info.best_score`` (the validation score of training). The model is
    logged into its training run (``info.run_id``) when this store has it, else a new run.
    ``params`` (a :class:`~vesselseg.config.Params`) is the resolved config that travels with
    the model; its ``infer`` section is how the pyfunc predicts.
    """
    from vesselseg import tracking

    tracking.quiet_mlflow()
    model_path = Path(model_path)
    if not model_path.is_file():
        raise MissingPathError(f"{model_path}: no such model file")
    for label, value in (("name", name), ("alias", alias), ("champion alias", champion_alias)):
        if not value or not re.fullmatch(r"[A-Za-z0-9_.\-]+", value) or value.isdigit():
            raise ConfigError(f"register {label} {value!r}: use letters, digits, '_', '-', '.'")
    if alias == champion_alias:
        raise ConfigError(f"register alias and champion alias are both {alias!r}")
    numbers: dict[str, float] = {}
    score: float | None = None
    source = "no metrics"
    if metrics_path is not None:
        score, numbers = read_metric(metrics_path, metric)
        source = str(metrics_path)

    uri = tracking.tracking_uri(root)
    client = tracking.client(root)
    # the registry resolves a version's models:/m-<id> source through the global URI
    with _fluent_tracking(uri), tempfile.TemporaryDirectory(prefix="vesselseg-register-") as tmp:
        weights, meta, artifacts = _stage(model_path, params, Path(tmp))
        if score is None and isinstance(meta.info.get("best_score"), (int, float)):
            score = float(meta.info["best_score"])
            source = f"training best_score ({meta.info.get('monitor', 'validation')})"
        version_tag = version_tags(weights, meta, metric, score, source, numbers, dvc_lock, tags)
        run_id = _run_for(client, meta.info.get("run_id"), experiment, model_path.stem, root)
        start = time.perf_counter()
        info = _log_pyfunc(run_id, meta, artifacts, _stage_code(Path(tmp)), version_tag,
                           numbers or ({metric: score} if score is not None else {}))
        log_seconds = time.perf_counter() - start
        version, champion = _new_version(client, name, champion_alias, info, run_id, version_tag)
        client.set_registered_model_alias(name, alias, version)
        promoted, reason = _decide(champion, score, metric, champion_alias, force)
        if promoted:
            client.set_registered_model_alias(name, champion_alias, version)
    return RegisterResult(
        name=name,
        version=version,
        model_uri=f"models:/{name}/{version}",
        run_id=run_id,
        metric_name=metric,
        metric=score,
        metric_source=source,
        aliases=[alias, champion_alias] if promoted else [alias],
        promoted=promoted,
        reason=reason,
        champion_before=None if champion is None else str(champion.version),
        log_seconds=log_seconds,
    )


def _run_for(
    client: Any, run_id: str | None, experiment: str, stem: str, root: str | Path | None
) -> str:
    """``run_id`` when this store has it, else a new run in ``experiment``."""
    from mlflow.exceptions import MlflowException

    from vesselseg import tracking

    if run_id:
        try:
            client.get_run(run_id)
            return run_id
        except MlflowException:
            log.info("training run %s is not in this store: new run", run_id)
    return client.create_run(
        tracking.ensure_experiment(experiment, root),
        run_name=f"register {stem}",
        tags={"vesselseg.stage": "register"},
    ).info.run_id


def _log_pyfunc(
    run_id: str,
    meta: Any,
    artifacts: dict[str, str],
    code: Path,
    tags: dict[str, str],
    metrics: dict[str, float],
) -> Any:
    """Log the pyfunc ("models from code") into ``run_id``; returns MLflow's ``ModelInfo``."""
    import mlflow

    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # no input example, on purpose: the signature is explicit and an example would run the
        # model while logging
        warnings.filterwarnings("ignore", message=".*input example.*")
        info = mlflow.pyfunc.log_model(
            name=LOGGED_MODEL_NAME,
            python_model=str(Path(__file__).with_name("mlflow_model.py")),
            artifacts=artifacts,
            code_paths=[str(code)],
            pip_requirements=pinned_requirements(),
            signature=model_signature(),
            model_config={"device": "auto"},
            metadata={
                "vesselseg_format": meta.format,
                "weights_sha256": tags["weights_sha256"],
                "data_version": tags["data_version"],
            },
        )
        if metrics:
            mlflow.log_metrics(
                {f"registered_{k}": v for k, v in metrics.items()}, model_id=info.model_id
            )
    return info


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


@contextmanager
def _fluent_tracking(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``log_model`` needs it) at ``uri`` and restore its global
    URI and the ``MLFLOW_TRACKING_URI`` variable (which ``set_tracking_uri`` also sets) after."""
    import mlflow

    from vesselseg import tracking

    with tracking.keep_global_tracking_uri():
        mlflow.set_tracking_uri(uri)
        yield


def _decide(
    champion: Any, value: float | None, metric: str, champion_alias: str, force: bool
) -> tuple[bool, str]:
    """``(promote?, why)``: higher ``metric`` is better; ties keep the champion."""
    if champion is None:
        return True, f"no {champion_alias} yet; this version is the {champion_alias}"
    old = _comparable(champion, metric)
    old_text = "n/a" if old is None else f"{old:.4f}"
    new_text = "n/a" if value is None else f"{value:.4f}"
    versus = f"{metric} {new_text} vs {champion_alias} version {champion.version}'s {old_text}"
    if force:
        return True, f"--force ({versus})"
    if value is None:
        return False, f"no {metric} to compare ({versus}); use --metrics or --force"
    if old is None or value > old:
        return True, f"{versus}"
    return False, f"{versus} (must be higher); --force promotes anyway"


# --------------------------------------------------------------------------- resolve


def default_cache_dir() -> Path:
    """``$VESSELSEG_MODEL_CACHE``, else ``$XDG_CACHE_HOME/vesselseg/models``, else
    ``~/.cache/vesselseg/models``."""
    if os.environ.get("VESSELSEG_MODEL_CACHE"):
        return Path(os.environ["VESSELSEG_MODEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vesselseg" / "models"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", text).strip("._") or "_"


@dataclass
class _Target:
    """A resolved model URI: what to download, where to cache it, what it must match."""

    download_uri: str
    key: str
    origin: dict[str, str]
    sha256: str | None = None


def _registered_version(client: Any, uri: str, name: str, ref: str, by_alias: bool) -> Any:
    from mlflow.exceptions import MlflowException

    model = registered_model(client, name, uri)
    if not by_alias and ref == "latest":
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise RegistryError(f"{uri}: {name!r} has no versions")
        return max(versions, key=lambda v: int(v.version))
    try:
        if by_alias:
            return client.get_model_version_by_alias(name, ref)
        return client.get_model_version(name, ref)
    except MlflowException:
        if by_alias:
            aliases = ", ".join(f"{a}→v{v}" for a, v in sorted(_aliases(model).items()))
            raise RegistryError(
                f"{uri}: {name!r} has no alias {ref!r} (aliases: {aliases or 'none'})"
            ) from None
        raise RegistryError(f"{uri}: {name!r} has no version {ref!r}") from None


def _aliases(model: Any) -> dict[str, str]:
    aliases = getattr(model, "aliases", None) or {}
    if isinstance(aliases, dict):
        return {str(k): str(v) for k, v in aliases.items()}
    return {str(a.alias): str(a.version) for a in aliases}


def _target(source: str, client: Any, tracking: str) -> _Target:
    """Parse ``source`` and look it up in the store (aliases resolve to a version number)."""
    if source.startswith("runs:/"):
        rest = source[len("runs:/"):].strip("/")
        run_id, _, path = rest.partition("/")
        if not run_id:
            raise RegistryError(f"{source}: expected runs:/<run id>/<artifact path>")
        origin = {"uri": source, "tracking_uri": tracking}
        return _Target(source, f"runs/{_safe(run_id)}/{_safe(path or 'root')}", origin)
    rest = source[len("models:/"):].strip("/")
    if rest.startswith("m-") and "/" not in rest and "@" not in rest:
        origin = {"uri": source, "tracking_uri": tracking}
        return _Target(source, f"logged/{_safe(rest)}", origin)
    if "@" in rest:
        name, ref = rest.split("@", 1)
        by_alias = True
    elif "/" in rest:
        name, ref = rest.rsplit("/", 1)
        by_alias = False
    else:
        raise RegistryError(
            f"{source}: expected models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/PATH"
        )
    if not name or not ref:
        raise RegistryError(f"{source}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    version = _registered_version(client, source, name, ref, by_alias)
    origin = {
        "uri": f"models:/{name}/{version.version}",
        "source": str(version.source),
        "run_id": str(version.run_id or ""),
        "model_id": str(getattr(version, "model_id", "") or ""),
        "tracking_uri": tracking,
    }
    return _Target(
        f"models:/{name}/{version.version}",
        f"{_safe(name)}/v{version.version}",
        origin,
        (version.tags or {}).get("weights_sha256"),
    )


def _weights_in(folder: Path, where: str) -> Path:
    """The ``.pt`` of a downloaded model: the pyfunc's ``weights`` artifact (MLmodel), else the
    only ``*.pt``/``.ckpt`` with settings beside it."""
    import yaml

    mlmodel = folder / "MLmodel"
    if mlmodel.is_file():
        flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {}
        artifacts = (flavors.get("python_function") or {}).get("artifacts") or {}
        rel = (artifacts.get("weights") or {}).get("path")
        if not rel:
            raise RegistryError(f"{where}: an MLflow model, but not a vesselseg model (no weights)")
        return folder / rel
    if folder.is_file():
        return folder
    found = sorted(folder.rglob("*.pt")) + sorted(folder.rglob("*.ckpt"))
    found = [p for p in found if p.suffix == ".ckpt" or p.with_suffix(".json").is_file()]
    if len(found) != 1:
        raise RegistryError(f"{where}: expected one vesselseg model file, found {len(found)}")
    return found[0]


def _download(target: _Target, folder: Path, tracking: str) -> None:
    """Download ``target`` into ``folder`` (which does not exist yet), atomically."""
    import mlflow
    from mlflow.exceptions import MlflowException

    folder.parent.mkdir(parents=True, exist_ok=True)
    part = Path(tempfile.mkdtemp(prefix=folder.name + ".part-", dir=folder.parent))
    try:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=target.download_uri,
                    dst_path=str(part),
                    tracking_uri=tracking,
                    registry_uri=tracking,
                )
            )
            if local.is_file() and local.suffix == ".pt":  # runs:/<id>/model/model.pt
                sidecar = f"{target.download_uri.rsplit('/', 1)[0]}/{local.stem}.json"
                mlflow.artifacts.download_artifacts(
                    artifact_uri=sidecar,
                    dst_path=str(local.parent),
                    tracking_uri=tracking,
                    registry_uri=tracking,
                )
        except (MlflowException, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = target.origin["uri"]
            raise RegistryError(f"{where}: download failed ({first[:160]})") from None
        rel = local.relative_to(part)
        origin = {**target.origin, "path": str(rel)}
        (part / MARKER).write_text(json.dumps(origin, indent=2, sort_keys=True))
        try:
            os.replace(part, folder)
        except OSError:  # another process finished the same download first
            shutil.rmtree(part, ignore_errors=True)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise


def _cached(folder: Path, origin: dict[str, str]) -> Path | None:
    """The downloaded model in ``folder`` if it came from ``origin``, else None."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        saved = json.loads(marker.read_text())
    except ValueError:
        return None
    if any(saved.get(k) != v for k, v in origin.items()):
        return None
    return folder / saved.get("path", ".")


def resolve_model(
    source: str | Path, cache_dir: str | Path | None = None, root: str | Path | None = None
) -> Path:
    """A local model file for ``source``.

    A plain path is returned unchanged (:class:`MissingPathError` when absent). A
    ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` (or ``/latest``), ``models:/m-<id>`` or
    ``runs:/<run id>/<path>`` URI is looked up in the tracking store (``MLFLOW_TRACKING_URI`` or
    the embedded ``mlruns/``), downloaded once into ``cache_dir``
    (:func:`default_cache_dir`; ``<name>/v<version>`` — aliases are resolved to the version
    first) and the path of its weights is returned. The download is repeated when the
    registered version now points at another source. Nothing is unpickled here: the weights
    are read later with ``torch.load(weights_only=True)``.
    """
    text = str(source)
    if not is_model_uri(text):
        path = Path(text)
        if not path.exists():
            raise MissingPathError(f"{path}: no such model file")
        return path
    from vesselseg import tracking

    uri = tracking.tracking_uri(root)
    target = _target(text, tracking.client(root), uri)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder.expanduser().resolve() / target.key
    local = _cached(folder, target.origin)
    if local is None:
        if folder.exists():
            log.info("%s: cached copy is stale, downloading again", text)
            shutil.rmtree(folder)
        log.info("%s: downloading into %s", target.origin["uri"], folder)
        with _fluent_tracking(uri):  # a version's models:/m-<id> source resolves through it
            _download(target, folder, uri)
        local = _cached(folder, target.origin)
        if local is None:
            raise RegistryError(f"{text}: could not cache the model in {folder}")
    weights = _weights_in(local, text)
    if not weights.is_file():
        raise RegistryError(f"{text}: the downloaded model has no weights file {weights.name}")
    if target.sha256 and sha256_file(weights) != target.sha256:
        shutil.rmtree(folder, ignore_errors=True)
        raise RegistryError(f"{text}: downloaded weights do not match the version's sha256 tag")
    return weights


# --------------------------------------------------------------------------- list


@dataclass
class ModelRow:
    """One registered version, for ``vesselseg models``."""

    version: str
    aliases: list[str]
    metric_name: str
    metric: float | None
    run_id: str
    created: str
    data_version: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def list_models(name: str = "vesselseg", root: str | Path | None = None) -> list[ModelRow]:
    """The versions of registered model ``name``, newest first."""
    from vesselseg import tracking

    client = tracking.client(root)
    uri = f"models:/{name}"
    model = registered_model(client, name, uri)
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(_aliases(model).items()):
        by_version.setdefault(version, []).append(alias)
    rows = []
    for v in client.search_model_versions(f"name='{name}'"):
        tags = v.tags or {}
        metric = tags.get("metric_name", "")
        created = datetime.fromtimestamp(v.creation_timestamp / 1000, tz=UTC)
        rows.append(
            ModelRow(
                version=str(v.version),
                aliases=by_version.get(str(v.version), []),
                metric_name=metric,
                metric=_comparable(v, metric) if metric else None,
                run_id=str(v.run_id or ""),
                created=created.strftime("%Y-%m-%d %H:%M:%S UTC"),
                data_version=tags.get("data_version", ""),
            )
        )
    return sorted(rows, key=lambda r: int(r.version), reverse=True)


def format_models(name: str, rows: list[ModelRow]) -> list[str]:
    """A plain-text table of :func:`list_models` rows."""
    header = ["version", "aliases", "metric", "run id", "data version", "created"]
    table = [header]
    for r in rows:
        value = "n/a" if r.metric is None else f"{r.metric_name} {r.metric:.4f}"
        table.append([r.version, ",".join(r.aliases) or "-", value, r.run_id or "-",
                      r.data_version or "-", r.created])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"registered model {name!r}: {len(rows)} version(s)"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    return lines
