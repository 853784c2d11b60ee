"""Small derived-data caches kept beside a volume (annotation index, intensity statistics).

A cache entry is valid for one *fingerprint* of its source: the resolved path, total size in
bytes and newest modification time (ns) of the file, or of every file under it for a folder
volume (TIFF slice folder, zarr store). A changed source gives a new fingerprint, so the stale
cache is rebuilt. Entries go to the chosen cache folder (``data.cache_dir``), or, without one,
beside the data when its folder is writable, otherwise under ``~/.cache/vesselseg``. Writes
are atomic (temporary name, then rename), so concurrent builders (DataLoader workers, DDP
ranks) never see half a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from vesselseg.io.atomic import atomic_open

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/vesselseg")
CACHE_ENV = "VESSELSEG_CACHE_DIR"


def fingerprint(path: str | Path) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns"}`` of a file, or summed/maxed over a folder's files."""
    path = Path(path).resolve()
    if path.is_dir():
        size, mtime = 0, path.stat().st_mtime_ns
        for root, _, files in os.walk(path):
            for name in files:
                st = os.stat(os.path.join(root, name))
                size += st.st_size
                mtime = max(mtime, st.st_mtime_ns)
    else:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    return {"path": str(path), "size": int(size), "mtime_ns": int(mtime)}


def cache_candidates(
    source: str | Path, suffix: str, cache_dir: str | Path | None, hidden: bool = False
) -> list[Path]:
    """Where a cache of ``source`` may live, in order of preference.

    With a ``cache_dir`` (or ``$VESSELSEG_CACHE_DIR``, which the CLI sets from
    ``data.cache_dir``) only ``<cache_dir>/<hash of the resolved path>-<name><suffix>``, so data
    folders (DVC outputs, read-only mounts) are never written. Without one:

    1. beside the source: ``<name><suffix>`` (``.<name><suffix>`` when ``hidden``);
    2. ``~/.cache/vesselseg/<hash of the resolved path>-<name><suffix>``.
    """
    source = Path(source).resolve()
    name = ("." if hidden else "") + source.name + suffix
    digest = hashlib.sha1(str(source).encode()).hexdigest()[:16]
    chosen = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or None
    if chosen is not None:  # a chosen cache folder: never write beside the data
        return [Path(chosen).expanduser() / f"{digest}-{source.name}{suffix}"]
    folder = DEFAULT_CACHE_DIR.expanduser()
    return [source.parent / name, folder / f"{digest}-{source.name}{suffix}"]


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> bool:
    """Write ``path`` via a unique temporary file in the same folder (caches may be written by
    several processes at once); False if it cannot be written — a cache is an optimisation."""
    try:
        with atomic_open(path, "wb", sync=False, unique=True) as handle:
            write(handle)
        return True
    except OSError as exc:
        log.debug("cannot write cache %s: %s", path, exc)
        return False
