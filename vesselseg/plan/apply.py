"""Plans on disk (``plans.json``), applied to :class:`~vesselseg.config.Params`, and the one
call training makes: :func:`plan_for_training`."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from vesselseg.config import Params, flatten, params_from_dict, params_to_dict
from vesselseg.errors import ConfigError, MissingPathError
from vesselseg.plan.fingerprint import Fingerprint, fingerprint_dataset
from vesselseg.plan.planner import Plan, PlannedValue, make_plan

log = logging.getLogger(__name__)

FORMAT = "vesselseg-plan/1"


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The JSON form of ``plan``: format, values (value, source, note), info, fingerprint."""
    return {
        "format": FORMAT,
        "values": {
            k: {"value": v.value, "source": v.source, "note": v.note}
            for k, v in sorted(plan.values.items())
        },
        "info": plan.info,
        "fingerprint": plan.fingerprint.to_dict() if plan.fingerprint else None,
    }


def plan_from_dict(data: Any, where: str = "plan") -> Plan:
    """Inverse of :func:`plan_to_dict`; one-line :class:`ConfigError` for anything else."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{where}: not a vesselseg plan (format {FORMAT!r})")
    try:
        values = {k: PlannedValue(**v) for k, v in data["values"].items()}
        fingerprint = data.get("fingerprint")
        return Plan(
            values,
            dict(data.get("info", {})),
            Fingerprint.from_dict(fingerprint) if fingerprint else None,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{where}: malformed plan ({exc})") from None


def write_plan(plan: Plan, path: str | Path) -> Path:
    """Write ``plan`` as JSON, atomically."""
    from vesselseg.io.atomic import write_json

    return write_json(path, plan_to_dict(plan))


def read_plan(path: str | Path) -> Plan:
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"{path}: no such plan file")
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise ConfigError(f"{path}: not valid JSON") from None
    return plan_from_dict(data, str(path))


def apply_plan(params: Params, plan: Plan, keep: Collection[str] = ()) -> Params:
    """``params`` with the plan's values where the user did not set them (source other than
    "user", and not in ``keep``); ``plan.*`` settings and keys that ``params`` does not have
    are skipped."""
    known = flatten(params)
    values = {
        key: planned.value
        for key, planned in plan.values.items()
        if planned.source != "user"
        and key not in keep
        and not key.startswith("plan.")
        and key in known
    }
    skipped = sorted(k for k in plan.values if k not in known and not k.startswith("plan."))
    if skipped:
        log.debug("plan: not a params key here, kept in plans.json only: %s", ", ".join(skipped))
    data = params_to_dict(params)  # not with_values: a planned None (isotropic) is a value
    for key, value in values.items():
        section, name = key.split(".")
        data[section][name] = value
    return params_from_dict(data, source="plan", strict=True)


def plan_dataset(folder: str | Path, params: Params, explicit: Collection[str] = ()) -> Plan:
    """Fingerprint the training volumes in ``folder`` and plan for ``params`` (machine
    defaults resolved: the CUDA device's memory where there is one)."""
    from vesselseg.io.dataset import discover_dataset, validate_sample
    from vesselseg.plan.machine import resolve_machine

    samples = discover_dataset(folder, False, params.data.spacing, params.data.unit)
    for sample in samples:  # the same one-line errors as training gives, before any statistics
        validate_sample(sample)
    fingerprint = fingerprint_dataset(samples)
    return make_plan(fingerprint, resolve_machine(params.plan), params, explicit)


def plan_for_training(
    params: Params, explicit_keys: Collection[str], plan_file: str | Path | None = None
) -> tuple[Params, Plan]:
    """The params training runs with, and the plan they came from: ``plan_file`` (written by
    ``prepare`` or ``plan``) or, without one, ``data.train_dir`` fingerprinted and planned now;
    applied where the user did not set a key (``explicit_keys``, e.g. from
    :func:`vesselseg.config.explicit_keys`). With ``plan.enabled: false`` the params are
    returned as they are with an empty plan."""
    if not params.plan.enabled:
        return params, Plan(info={"enabled": False})
    if plan_file is not None:
        plan = read_plan(plan_file)
    else:
        plan = plan_dataset(params.data.train_dir, params, explicit_keys)
    return apply_plan(params, plan, keep=explicit_keys), plan


def describe(plan: Plan) -> list[str]:
    """Lines for ``vesselseg plan --show``: key, value, source (and why)."""
    width = max((len(k) for k in plan.values), default=0)
    lines = []
    for key, planned in sorted(plan.values.items()):
        value = json.dumps(planned.value)
        note = f"  ({planned.note})" if planned.note else ""
        lines.append(f"{key:<{width}}  {value:<24} {planned.source}{note}")
    return lines


def summary_line(plan: Plan) -> str:
    """One line: volumes, target spacing, the 3D crop, depth and batch."""
    n = len(plan.fingerprint.volumes) if plan.fingerprint else 0
    shown = ("data.target_spacing", "data.crop_size", "model.depth", "train.batch_size")
    parts = [f"{k.split('.')[1]} {json.dumps(plan.value(k))}" for k in shown if k in plan.values]
    return f"planned {n} volumes: " + ", ".join(parts)
