"""Where a result came from: file digests, the git commit, the DVC version of the data.

Pure functions over files and the working tree (no MLflow): training, pseudo labelling and
the registry record these as tags, and the registry compares them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DVC_DATA = ("data/raw", "data/pseudo")  # the DVC-tracked data folders a model is trained on


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def git_commit() -> str | None:
    """The current git commit of the working directory, if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def dvc_data_hashes(dvc_lock: str | Path = "dvc.lock") -> dict[str, str]:
    """``{"data/raw": md5, "data/pseudo": md5}`` from the outs in ``dvc.lock`` (and
    ``data/raw.dvc``-style files beside it); empty when DVC does not track them."""
    import yaml

    lock = Path(dvc_lock)
    found: dict[str, str] = {}

    def take(entries: Any, base: Path) -> None:
        for entry in entries or []:
            if not isinstance(entry, dict) or "md5" not in entry:
                continue
            rel = os.path.normpath(base / str(entry.get("path", ""))).replace(os.sep, "/")
            if rel in DVC_DATA:
                found.setdefault(rel, str(entry["md5"]))

    if lock.is_file():
        try:
            stages = (yaml.safe_load(lock.read_text()) or {}).get("stages") or {}
        except yaml.YAMLError:
            log.warning("%s: not valid YAML; data version unknown", lock)
            stages = {}
        for stage in stages.values():
            if isinstance(stage, dict):
                take(stage.get("outs"), Path("."))
    for rel in DVC_DATA:
        dvc_file = lock.parent / f"{rel}.dvc"
        if rel not in found and dvc_file.is_file():
            try:
                take((yaml.safe_load(dvc_file.read_text()) or {}).get("outs"), Path(rel).parent)
            except yaml.YAMLError:
                pass
    return found


def data_version(hashes: dict[str, str]) -> str:
    """One short id for a set of DVC data hashes (``"untracked"`` when there are none)."""
    if not hashes:
        return "untracked"
    joined = ";".join(f"{rel}={md5}" for rel, md5 in sorted(hashes.items()))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]
