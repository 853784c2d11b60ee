"""Which data a run saw: a dataset folder's name, digest and source (its lineage).

Training logs its ``train``/``val`` folders and ``evaluate`` its data folder as MLflow dataset
inputs (the runs table's *Dataset* column); ``register`` keeps the digest of the data a
metric was measured on. Pure functions over files, ``dvc.yaml`` and ``dvc.lock`` (no MLflow,
no DVC import).

The digest is DVC's own md5 of the folder when DVC knows it — a ``deps``/``outs`` entry of
``dvc.lock`` or a ``<folder>.dvc`` file, or a sub-folder of a tracked folder whose ``.dir``
listing is in the local DVC cache (``data/raw/test`` inside ``data/raw``: the same md5 DVC
computes for that folder) — else a sha256 of the files' relative names and sizes (cheap on
terabytes; not a content hash).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vesselseg.provenance import dvc_data_hashes

log = logging.getLogger(__name__)

DIGEST_CHARS = 32  # MLflow keeps at most 36 characters of a dataset digest; an md5 has 32


@dataclass(frozen=True)
class DatasetRef:
    """A dataset folder as MLflow and the registry see it."""

    name: str  # the folder, relative to the working directory when inside it
    digest: str  # 32 hex characters (see the module docstring)
    source: str  # absolute path
    kind: str  # "dvc" (DVC's md5 of the folder) or "files" (names and sizes)
    files: int
    size: int

    def profile(self) -> str:
        """JSON shown beside the dataset in the MLflow UI."""
        digest = "DVC md5" if self.kind == "dvc" else "sha256 of file names and sizes"
        return json.dumps({"files": self.files, "bytes": self.size, "digest": digest})

    def label(self) -> str:
        """``name@digest``: one string naming this version of the data."""
        return f"{self.name}@{self.digest}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "source": self.source, "kind": self.kind}


def display_name(path: Path) -> str:
    """``path`` relative to the working directory when inside it, else absolute (posix)."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix() or "."
    except ValueError:
        return absolute.as_posix()


def dataset_ref(path: str | Path, dvc_lock: str | Path = "dvc.lock") -> DatasetRef:
    """The :class:`DatasetRef` of the file or folder ``path``."""
    path = Path(path)
    files = _files(path)
    size = sum(s for _, s in files)
    md5 = dvc_md5(path, dvc_lock)
    if md5 is not None:
        digest, kind = md5, "dvc"
    else:
        lines = "".join(f"{rel}\t{s}\n" for rel, s in files)
        digest, kind = hashlib.sha256(lines.encode()).hexdigest()[:DIGEST_CHARS], "files"
    source = path.resolve().as_posix()
    return DatasetRef(display_name(path), digest, source, kind, len(files), size)


def _files(path: Path) -> list[tuple[str, int]]:
    """``(relative posix name, size)`` of every file under ``path``, sorted."""
    if path.is_file():
        return [(path.name, path.stat().st_size)]
    found = []
    for root, _, names in os.walk(path):
        for name in names:
            full = Path(root) / name
            found.append((full.relative_to(path).as_posix(), full.stat().st_size))
    return sorted(found)


# --------------------------------------------------------------------------- DVC


def _project_rel(path: Path, dvc_lock: Path) -> str | None:
    """``path`` relative to the DVC project (the folder of ``dvc.lock``), or None outside."""
    rel = os.path.relpath(path.resolve(), dvc_lock.parent.resolve()).replace(os.sep, "/")
    return None if rel == ".." or rel.startswith("../") else rel


def dvc_lock_hashes(dvc_lock: str | Path = "dvc.lock") -> dict[str, str]:
    """``{path: md5}`` of every ``deps`` and ``outs`` entry in ``dvc.lock`` (paths relative to
    the project, ``.dir`` kept)."""
    import yaml

    lock = Path(dvc_lock)
    if not lock.is_file():
        return {}
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages") or {}
    except yaml.YAMLError:
        log.warning("%s: not valid YAML; data digests fall back to file listings", lock)
        return {}
    found: dict[str, str] = {}
    for stage in stages.values():
        if not isinstance(stage, dict):
            continue
        for key in ("deps", "outs"):
            for entry in stage.get(key) or []:
                if isinstance(entry, dict) and entry.get("md5") and entry.get("path"):
                    rel = os.path.normpath(str(entry["path"])).replace(os.sep, "/")
                    found.setdefault(rel, str(entry["md5"]))
    return found


def _dvc_file_md5(rel: str, project: Path) -> str | None:
    """The md5 in ``<rel>.dvc`` (``dvc add``), if that file exists."""
    import yaml

    dvc_file = project / f"{rel}.dvc"
    if not dvc_file.is_file():
        return None
    try:
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
    except yaml.YAMLError:
        return None
    return next((str(o["md5"]) for o in outs if isinstance(o, dict) and o.get("md5")), None)


def dvc_md5(path: str | Path, dvc_lock: str | Path = "dvc.lock") -> str | None:
    """DVC's md5 of ``path`` (32 hex characters, ``.dir`` dropped), or None when DVC does not
    know this folder: an exact ``dvc.lock``/``.dvc`` entry, else derived from the cached
    ``.dir`` listing of a tracked folder above it (DVC's own algorithm: the md5 of the sorted
    JSON list of ``{"md5", "relpath"}`` entries)."""
    lock = Path(dvc_lock)
    rel = _project_rel(Path(path), lock)
    if rel is None:
        return None
    project = lock.parent
    known = dvc_lock_hashes(lock)
    exact = known.get(rel) or _dvc_file_md5(rel, project)
    if exact:
        return exact.removesuffix(".dir")
    parts = rel.split("/")
    for cut in range(len(parts) - 1, 0, -1):
        above = "/".join(parts[:cut])
        md5 = known.get(above) or _dvc_file_md5(above, project)
        if md5 and md5.endswith(".dir"):
            return _subtree_md5(project, md5, "/".join(parts[cut:]))
    return None


def _subtree_md5(project: Path, dir_md5: str, sub: str) -> str | None:
    """DVC's md5 of ``sub`` (a file or folder) inside the tracked folder whose listing is
    ``dir_md5``; None when the listing is not in the local cache."""
    value = dir_md5.removesuffix(".dir")
    listing = project / ".dvc" / "cache" / "files" / "md5" / value[:2] / f"{value[2:]}.dir"
    try:
        entries = json.loads(listing.read_text())
    except (OSError, ValueError):
        return None
    sub = sub.rstrip("/")
    for e in entries:  # a single file of the folder: DVC's md5 of its bytes
        if isinstance(e, dict) and e.get("relpath") == sub and "md5" in e:
            return str(e["md5"])
    prefix = sub + "/"
    inside = [
        {"md5": e["md5"], "relpath": e["relpath"][len(prefix) :]}
        for e in entries
        if isinstance(e, dict) and str(e.get("relpath", "")).startswith(prefix) and "md5" in e
    ]
    if not inside:
        return None
    inside.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(inside, sort_keys=True).encode()).hexdigest()


def dvc_outputs(dvc_yaml: str | Path = "dvc.yaml") -> set[str]:
    """Every ``outs``, ``metrics`` and ``plots`` path of the stages in ``dvc.yaml`` (relative to
    its folder, normalised): the files a command must not overwrite unless told to."""
    import yaml

    path = Path(dvc_yaml)
    if not path.is_file():
        return set()
    try:
        stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    except yaml.YAMLError:
        return set()
    found: set[str] = set()
    for stage in stages.values():
        if not isinstance(stage, dict):
            continue
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key) or []:
                name = next(iter(entry), None) if isinstance(entry, dict) else entry
                if isinstance(name, str) and "${" not in name:
                    found.add(os.path.normpath(name).replace(os.sep, "/"))
    return found


def is_dvc_output(path: str | Path, dvc_yaml: str | Path = "dvc.yaml") -> bool:
    """Whether ``path`` is (or lies inside) an output of a stage of ``dvc.yaml``."""
    rel = _project_rel(Path(path), Path(dvc_yaml))
    if rel is None:
        return False
    return any(rel == out or rel.startswith(out + "/") for out in dvc_outputs(dvc_yaml))


def pipeline_tags(dvc_lock: str | Path = "dvc.lock") -> dict[str, str]:
    """DVC data versions (``dvc.lock`` hashes of data/raw, data/pseudo) and the DVC experiment
    name, as run tags."""
    tags = {f"dvc.{path}": md5 for path, md5 in dvc_data_hashes(dvc_lock).items()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.experiment"] = os.environ["DVC_EXP_NAME"]
    return tags
