"""Plan, then run: a dataset fingerprint becomes sizes, network topology and batch size.

:func:`fingerprint_dataset` reads the training volumes (bounded, slab by slab);
:func:`make_plan` is a pure function of the fingerprint and the ``plan:`` settings;
:func:`apply_plan` puts the planned values into :class:`~vesselseg.config.Params` where the
user did not set them (:func:`vesselseg.config.explicit_keys`), and :func:`plan_for_training`
does all three for ``data.train_dir``. ``plans.json`` holds each value with its source.
"""

from vesselseg.plan.apply import (
    apply_plan,
    describe,
    plan_dataset,
    plan_for_training,
    plan_from_dict,
    plan_to_dict,
    read_plan,
    summary_line,
    write_plan,
)
from vesselseg.plan.fingerprint import (
    Fingerprint,
    IntensityStats,
    RadiusStats,
    VolumeFingerprint,
    VolumeInput,
    fingerprint_dataset,
    fingerprint_volumes,
)
from vesselseg.plan.machine import resolve_machine
from vesselseg.plan.planner import Plan, PlannedValue, make_plan
from vesselseg.plan.topology import Topology, pool_schedule, training_bytes

__all__ = [
    "Fingerprint",
    "IntensityStats",
    "Plan",
    "PlannedValue",
    "RadiusStats",
    "Topology",
    "VolumeFingerprint",
    "VolumeInput",
    "apply_plan",
    "describe",
    "fingerprint_dataset",
    "fingerprint_volumes",
    "make_plan",
    "plan_dataset",
    "plan_for_training",
    "plan_from_dict",
    "plan_to_dict",
    "pool_schedule",
    "read_plan",
    "resolve_machine",
    "summary_line",
    "training_bytes",
    "write_plan",
]
