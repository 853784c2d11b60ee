"""``models:/`` and ``runs:/`` URIs → a local model file, downloaded once into a cache.

:func:`resolve_model` turns ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
``models:/m-<id>`` or ``runs:/<run id>/<path>`` into a local ``.pt`` path; a plain path comes
back unchanged. mlflow is imported inside functions only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vesselseg.bundle import is_model_uri
from vesselseg.errors import MissingPathError
from vesselseg.io.atomic import commit
from vesselseg.provenance import sha256_file
from vesselseg.registry.lookup import RegistryError, registered_version

log = logging.getLogger(__name__)

MARKER = "vesselseg-source.json"  # what a cache folder was downloaded from


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


def _target(source: str, client: Any, tracking: str) -> _Target:
    """Parse ``source`` and look it up in the store (aliases resolve to a version number)."""
    if source.startswith("runs:/"):
        rest = source[len("runs:/") :].strip("/")
        run_id, _, path = rest.partition("/")
        if not run_id:
            raise RegistryError(f"{source}: expected runs:/<run id>/<artifact path>")
        origin = {"uri": source, "tracking_uri": tracking}
        return _Target(source, f"runs/{_safe(run_id)}/{_safe(path or 'root')}", origin)
    rest = source[len("models:/") :].strip("/")
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
    version = registered_version(client, source, name, ref, by_alias)
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


def _fetch(target: _Target, part: Path, tracking: str) -> Path:
    """Download ``target`` into the folder ``part``; returns the downloaded file or folder."""
    import mlflow
    from mlflow.exceptions import MlflowException

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
    return local


def _download(target: _Target, folder: Path, tracking: str) -> None:
    """Download ``target`` into ``folder`` (which does not exist yet), atomically: into a
    ``.part-`` folder beside it, renamed when complete."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    part = Path(tempfile.mkdtemp(prefix=folder.name + ".part-", dir=folder.parent))
    try:
        local = _fetch(target, part, tracking)
        origin = {**target.origin, "path": str(local.relative_to(part))}
        (part / MARKER).write_text(json.dumps(origin, indent=2, sort_keys=True))
        try:
            commit(part, folder)
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
        with tracking.use_tracking_uri(uri):  # a version's models:/m-<id> source resolves here
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
