"""Rich progress bars for long steps (rate and ETA), silenced with ``VESSELSEG_PROGRESS=0``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(
    description: str, total: float, unit: str = "items"
) -> Iterator[Callable[[float], None]]:
    """Yield ``advance(n)``; the bar shows done/total, rate in ``unit``/s and the ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    disabled = os.environ.get("VESSELSEG_PROGRESS", "1") == "0"
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=disabled, transient=False) as progress:
        task = progress.add_task(description, total=total, rate="")

        def advance(n: float = 1) -> None:
            progress.advance(task, n)
            speed = progress.tasks[task].speed
            if speed:
                progress.update(task, rate=f"{speed:,.1f} {unit}/s")

        yield advance
