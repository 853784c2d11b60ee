"""Atomic outputs: a file is written under ``NAME.part`` and renamed only when complete.

One mechanism for every writer in the package (JSON, CSV, pictures, weights, volumes), so a
killed run never leaves a file that looks finished. :func:`commit` flushes the data to disk
before the rename (``fsync``) and then syncs the folder, so a power cut cannot leave a renamed
but empty file either.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO


def partial_path(path: str | Path) -> Path:
    """Where ``path`` is written until it is complete: ``NAME.part`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".part")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders: not an error of the write
        pass
    finally:
        os.close(fd)


def commit(tmp: str | Path, final: str | Path, sync: bool = True) -> Path:
    """Rename the finished ``tmp`` to ``final`` (after an ``fsync`` of ``tmp`` when ``sync``).

    Works for files and for folders (a zarr store, a downloaded model): for a folder only the
    rename is atomic, so write every file in it first.
    """
    tmp, final = Path(tmp), Path(final)
    if sync and tmp.is_file():
        _fsync_path(tmp)
    os.replace(tmp, final)
    if sync:
        _fsync_path(final.parent if str(final.parent) else Path("."))
    return final


@contextlib.contextmanager
def atomic_path(path: str | Path, sync: bool = True, unique: bool = False) -> Iterator[Path]:
    """Yield ``NAME.part`` to write to; rename it to ``path`` if the block succeeds.

    On an exception the partial file is removed and the exception propagates, so the final
    name only ever holds a complete file. ``unique`` writes to a fresh hidden temporary name
    instead, for files that several processes may write at once (shared caches): the last
    complete one wins.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if unique:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    else:
        tmp = partial_path(path)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    commit(tmp, path, sync=sync)


@contextlib.contextmanager
def atomic_open(
    path: str | Path,
    mode: str = "w",
    newline: str | None = None,
    sync: bool = True,
    unique: bool = False,
) -> Iterator[TextIO | BinaryIO]:
    """``open(NAME.part, mode)``, renamed to ``path`` when the block succeeds."""
    with atomic_path(path, sync=sync, unique=unique) as tmp:
        with open(tmp, mode, newline=newline) as handle:
            yield handle


def write_bytes(path: str | Path, data: bytes, sync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "wb", sync=sync) as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, sync: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "w", sync=sync) as handle:
        handle.write(text)
    return Path(path)


def write_json(
    path: str | Path, data: Any, indent: int | None = 2, sort_keys: bool = True, sync: bool = True
) -> Path:
    """Write ``data`` as JSON (newline-terminated) to ``path`` atomically; returns ``path``."""
    return write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n", sync)


def publish_once(path: str | Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists, atomically, among any number of
    processes (also on other machines sharing the file system): True for the one call that
    created it. The data is written to a unique temporary file and hard-linked to ``path``
    (the link fails if ``path`` exists), so ``path`` is never seen half-written; on a file
    system without hard links, ``O_EXCL`` creation is used instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(name, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here: exclusive creation, then the data
            pass
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return True


def commit_folder_once(tmp: str | Path, final: str | Path) -> bool:
    """Rename the complete folder ``tmp`` to ``final`` unless ``final`` already exists with
    content (another process got there first: ``tmp`` is removed); True if renamed."""
    import errno
    import shutil

    try:
        os.rename(tmp, final)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False
