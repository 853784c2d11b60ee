"""``vesselseg models``: the registered versions of a model with their aliases and metrics."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vesselseg.registry.lookup import model_aliases, registered_model, version_metric


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
    threshold: str = ""  # the version's mask threshold (``calibrated`` marks a calibrated one)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def list_models(name: str = "vesselseg", root: str | Path | None = None) -> list[ModelRow]:
    """The versions of registered model ``name``, newest first."""
    from vesselseg import tracking

    client = tracking.client(root)
    model = registered_model(client, name, f"models:/{name}")
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(model_aliases(model).items()):
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
                metric=version_metric(v, metric) if metric else None,
                run_id=str(v.run_id or ""),
                created=created.strftime("%Y-%m-%d %H:%M:%S UTC"),
                data_version=tags.get("data_version", ""),
                threshold=threshold_cell(tags),
            )
        )
    return sorted(rows, key=lambda r: int(r.version), reverse=True)


def threshold_cell(tags: dict[str, str]) -> str:
    """``0.35 (calibrated)``, ``0.5`` or ``""`` (versions registered before thresholds were)."""
    value = tags.get("threshold")
    if value is None:
        return ""
    try:
        text = f"{float(value):.2f}"
    except ValueError:
        return value
    return f"{text} (calibrated)" if tags.get("threshold_source") == "calibrated" else text


def format_models(name: str, rows: list[ModelRow]) -> list[str]:
    """A plain-text table of :func:`list_models` rows."""
    header = ["version", "aliases", "metric", "threshold", "run id", "data version", "created"]
    table = [header]
    for r in rows:
        value = "n/a" if r.metric is None else f"{r.metric_name} {r.metric:.4f}"
        table.append(
            [
                r.version,
                ",".join(r.aliases) or "-",
                value,
                r.threshold or "-",
                r.run_id or "-",
                r.data_version or "-",
                r.created,
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"registered model {name!r}: {len(rows)} version(s)"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    return lines
