"""Typed configuration mirroring ``params.yaml``.

``params.yaml`` holds every knob, grouped by stage. The sections are pydantic dataclasses
(:mod:`vesselseg.config.sections`): loading (:mod:`vesselseg.config.loading`) is strict
(unknown keys are refused, types are not coerced, ranges come from each field's
``Field(ge=…, gt=…, le=…, lt=…)`` and relations between fields from validators), and a missing
key fails too. Any failure is one :class:`ConfigError` line naming the dotted key. CLI options
and ``--set section.key=value`` overrides are applied with :func:`apply_overrides` and
:func:`with_values` and validated the same way.
"""

from vesselseg.config.loading import (
    apply_overrides,
    as_triple,
    explicit_keys,
    flatten,
    load_params,
    multiview_params,
    params_from_dict,
    params_to_dict,
    section_from_dict,
    with_values,
)
from vesselseg.config.sections import (
    Bool,
    DataConfig,
    Float,
    InferConfig,
    Int,
    List,
    ModelConfig,
    MultiviewConfig,
    Params,
    PlanConfig,
    Precision,
    PseudoConfig,
    RegisterConfig,
    Side8,
    Size,
    Str,
    SynthConfig,
    TrainConfig,
    TuneConfig,
)
from vesselseg.errors import ConfigError

__all__ = [
    "Bool",
    "ConfigError",
    "DataConfig",
    "Float",
    "InferConfig",
    "Int",
    "List",
    "ModelConfig",
    "MultiviewConfig",
    "Params",
    "PlanConfig",
    "Precision",
    "PseudoConfig",
    "RegisterConfig",
    "Side8",
    "Size",
    "Str",
    "SynthConfig",
    "TrainConfig",
    "TuneConfig",
    "apply_overrides",
    "as_triple",
    "explicit_keys",
    "flatten",
    "load_params",
    "multiview_params",
    "params_from_dict",
    "params_to_dict",
    "section_from_dict",
    "with_values",
]
