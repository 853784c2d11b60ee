"""Which data a registered metric was measured on, so a champion is only ever compared on the
declared test set.

``vesselseg evaluate`` writes the data it scored into the metrics file (``dataset``: name,
DVC md5 or listing digest, absolute source; older files only ``data``). ``register``:

* refuses a metrics file measured on other data than ``register.test_dir`` (the declared test
  set; ``""`` turns the check off) — e.g. ``metrics/unlabelled.stage2.json``;
* records the data as version tags (``metric_data`` = ``name@digest``, ``metric_data_digest``);
* compares with the champion's metric only when the champion's was measured on the same data
  (same digest, or both unrecorded); otherwise the champion has no comparable value, and the
  promotion rule (:func:`vesselseg.registry.promote.decide`) treats it as having none.

Pure functions of files and tags (no MLflow).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vesselseg.errors import ConfigError

log = logging.getLogger(__name__)

TRAINING_SCORE = "validation (training score)"  # metric_data of a score recorded by training


@dataclass(frozen=True)
class MeasuredOn:
    """The data a metric was measured on (``""`` fields: not recorded)."""

    name: str = ""
    digest: str = ""
    source: str = ""

    def label(self) -> str:
        if not self.name:
            return ""
        return f"{self.name}@{self.digest}" if self.digest else self.name

    def tags(self) -> dict[str, str]:
        return {"metric_data": self.label(), "metric_data_digest": self.digest}


def measured_on(metrics_path: str | Path) -> MeasuredOn:
    """What ``vesselseg evaluate`` recorded in ``metrics_path`` about its data."""
    try:
        data = json.loads(Path(metrics_path).read_text())
    except (OSError, ValueError):
        return MeasuredOn()
    if not isinstance(data, dict):
        return MeasuredOn()
    dataset = data.get("dataset")
    if isinstance(dataset, dict) and dataset.get("source"):
        return MeasuredOn(
            str(dataset.get("name") or dataset["source"]),
            str(dataset.get("digest") or ""),
            str(dataset["source"]),
        )
    if isinstance(data.get("data"), str) and data["data"]:
        return MeasuredOn(data["data"], "", Path(data["data"]).resolve().as_posix())
    return MeasuredOn()


def check_test_set(
    metrics_path: str | Path, measured: MeasuredOn, test_dir: str | Path | None
) -> None:
    """Refuse a metrics file measured on other data than the declared test set ``test_dir``
    (None or ``""``: no declared test set). A file that does not say is accepted."""
    if not test_dir:
        return
    if not measured.source:
        log.warning("%s does not say which data it was measured on", metrics_path)
        return
    if Path(measured.source).resolve() != Path(test_dir).resolve():
        raise ConfigError(
            f"{metrics_path}: measured on {measured.name}, not on the test set "
            f"{test_dir} (register.test_dir); the champion is compared on the test set only"
        )


def comparable(champion_tags: dict[str, Any] | None, measured: MeasuredOn) -> bool:
    """Whether the champion's metric was measured on the same data as the candidate's."""
    tags = champion_tags or {}
    if str(tags.get("metric_data_digest", "")) != measured.digest:
        return False
    return bool(measured.digest) or str(tags.get("metric_data", "")) == measured.label()
