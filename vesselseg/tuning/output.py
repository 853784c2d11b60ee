"""The study's result for people and DVC: ``params.tuned.yaml`` and a ``dvc exp run`` command."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from vesselseg.config import Params, params_to_dict, with_values
from vesselseg.io.atomic import write_text


def yaml_scalar(value: Any) -> str:
    """A value as YAML flow text that reads back as the same type (``1.0e-05``, ``[1, 2]``)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()


def write_tuned_params(params: Params, values: dict[str, Any], path: str | Path) -> Path:
    """Write the full params with ``values`` applied to ``path`` atomically (``.part`` + rename)."""
    import yaml

    tuned = params_to_dict(with_values(params, values))
    header = (
        "# params.yaml with the best values of the Optuna study "
        f"{params.tune.study!r} applied (vesselseg tune):\n"
        + "".join(f"#   {k}: {yaml_scalar(v)}\n" for k, v in values.items())
    )
    body = yaml.safe_dump(tuned, sort_keys=False, default_flow_style=None)
    return write_text(path, header + body)


def dvc_command(values: dict[str, Any]) -> str:
    """``dvc exp run -S key=value …`` applying ``values`` to params.yaml."""
    sets = " ".join(f"-S {shlex.quote(f'{k}={yaml_scalar(v)}')}" for k, v in values.items())
    return f"dvc exp run {sets}"
