"""Where an evaluation writes, so that evaluations never overwrite each other.

Without ``--metrics``/``--plots`` an evaluation of model ``M`` on the folder ``.../D`` writes
``metrics/D.M.json`` and ``plots/D.M/``: evaluating stage 2 on ``data/raw/unlabelled`` cannot
replace the pipeline's ``metrics.json`` (stage 2 on the test set). A default that is a DVC
output (an ``outs``/``metrics``/``plots`` entry of ``dvc.yaml``) is refused: a stage's output
is written only by a command that names it (the pipeline passes ``--metrics`` explicitly).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from vesselseg.errors import VesselsegError
from vesselseg.io.atomic import write_text
from vesselseg.lineage import is_dvc_output


class EvaluationOutputError(VesselsegError):
    """An evaluation would overwrite a file that another command owns."""


def slug(text: str) -> str:
    """``text`` with only letters, digits, ``_``, ``-`` and ``.`` (MLflow keys, file names)."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", text).strip("._") or "data"


def model_label(model: Path) -> str:
    """``models/stage2.pt`` -> ``stage2`` (an ensemble file: its stem too)."""
    return slug(model.stem)


def default_outputs(data_dir: Path, model: Path) -> tuple[Path, Path]:
    """``(metrics/<data>.<model>.json, plots/<data>.<model>)`` of an evaluation."""
    key = f"{slug(data_dir.resolve().name)}.{model_label(model)}"
    return Path("metrics") / f"{key}.json", Path("plots") / key


def resolve_outputs(
    data_dir: Path,
    model: Path,
    metrics_path: str | Path | None,
    plots_dir: str | Path | None,
    dvc_yaml: str | Path = "dvc.yaml",
) -> tuple[Path, Path]:
    """The metrics file and plots folder to write: those named, else :func:`default_outputs`;
    a default that a DVC stage owns is refused with a one-line error."""
    default_metrics, default_plots = default_outputs(data_dir, model)
    chosen = []
    for given, default, option in (
        (metrics_path, default_metrics, "--metrics"),
        (plots_dir, default_plots, "--plots"),
    ):
        if given is not None:
            chosen.append(Path(given))
            continue
        if is_dvc_output(default, dvc_yaml):
            raise EvaluationOutputError(
                f"{default} is an output of a stage in {dvc_yaml}; name it with {option} "
                "to overwrite it, or choose another path"
            )
        chosen.append(default)
    return chosen[0], chosen[1]


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``metrics.json`` (indented, sorted keys), atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True))
