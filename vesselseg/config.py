"""Typed configuration mirroring ``params.yaml``.

``params.yaml`` holds every knob, grouped by stage. Loading is strict: an unknown, missing or
mistyped key fails at start-up with the key's dotted name, and numeric ranges are checked from
each field's metadata (``ge``/``gt``/``le``/``lt``). CLI options and ``--set section.key=value``
overrides are applied with :func:`apply_overrides` and validated the same way.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from vesselseg.errors import ConfigError

Triple = list[int]


def _f(default: Any, **checks: Any) -> Any:
    """A dataclass field with a default and range checks in its metadata."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=checks)
    return field(default=default, metadata=checks)


@dataclass
class SynthConfig:
    """Synthetic demo data (``vesselseg synth``)."""

    out_dir: str = "data/raw"
    n_train: int = _f(4, ge=0)
    n_val: int = _f(1, ge=0)
    n_test: int = _f(2, ge=0)
    n_unlabelled: int = _f(1, ge=0)
    shape: int | Triple = _f([96, 96, 96], ge=16)
    seed: int = _f(0, ge=0)
    format: Literal["npy", "tiff", "zarr"] = "npy"
    n_trees: int = _f(3, ge=1)
    max_radius: float = _f(5.0, gt=0.5)
    min_radius: float = _f(1.0, gt=0.0)
    annotated_fraction: float = _f(0.01, gt=0.0, lt=0.5)
    noise: float = _f(0.05, ge=0.0)
    slab: int = _f(64, ge=8)


@dataclass
class DataConfig:
    """Training data: where it is, how crops are drawn and augmented."""

    train_dir: str = "data/raw/train"
    val_dir: str = "data/raw/val"
    crop_size: int | Triple = _f([48, 48, 48], ge=8)
    samples_per_volume: int = _f(16, ge=1)
    min_vessel_voxels: int = _f(1, ge=1)
    background_crop_fraction: float = _f(0.25, ge=0.0, le=1.0)
    num_loader_workers: int = _f(0, ge=0)
    cache_dir: str = ".cache/vesselseg"
    percentiles: list[float] = _f([0.5, 99.5], ge=0.0, le=100.0)
    flip: bool = True
    rot90: bool = True
    intensity_scale: float = _f(0.1, ge=0.0, lt=1.0)
    intensity_shift: float = _f(0.1, ge=0.0)
    noise_std: float = _f(0.0, ge=0.0)


@dataclass
class ModelConfig:
    """Network architecture; ``norm`` is seed 000's ``--normalization {b,g}``.

    ``unet2d`` is a 2D U-Net trained on slices along ``views`` (multiview) with ``context``
    neighbouring slices as channels (2.5D; 1 = plain 2D) and applied along the same axes.
    """

    name: Literal["vnet", "unet", "unet2d"] = "unet"
    norm: Literal["batch", "group"] = "batch"
    base_channels: int = _f(8, ge=1)
    depth: int = _f(3, ge=1, le=6)
    dropout: float = _f(0.0, ge=0.0, lt=1.0)
    groups: int = _f(8, ge=1)
    context: int = _f(3, ge=1)
    views: list[Literal["z", "y", "x"]] = _f(["z", "y", "x"])


@dataclass
class MultiviewConfig:
    """The 2D/2.5D multiview U-Net of seed 004 (``vesselseg train --multiview``).

    Its settings where they differ from the 3D model's: applied over ``model`` (name
    ``unet2d``; ``model.context`` and ``model.views`` as they are), ``data`` and ``train``.
    ``crop_size``'s sides give the in-plane size of the slices along each view.
    """

    base_channels: int = _f(16, ge=1)
    depth: int = _f(4, ge=2, le=6)
    crop_size: int | Triple = _f([96, 96, 96], ge=8)
    batch_size: int = _f(8, ge=1)
    samples_per_volume: int = _f(64, ge=1)
    max_epochs: int = _f(12, ge=1)
    lr: float = _f(2e-3, gt=0.0)
    ensemble_weight: float = _f(1.0, gt=0.0)


@dataclass
class TrainConfig:
    """Optimisation, schedule, checkpoints and tracking of ``vesselseg train``."""

    out_dir: str = "models"
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = _f(2e-3, gt=0.0)
    weight_decay: float = _f(1e-4, ge=0.0)
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    lr_reduce_factor: float = _f(0.5, gt=0.0, lt=1.0)
    lr_patience: int = _f(3, ge=0)
    min_lr: float = _f(1e-6, ge=0.0)
    warmup_epochs: int = _f(1, ge=0)
    batch_size: int = _f(2, ge=1)
    max_epochs: int = _f(14, ge=1)
    precision: Literal["32", "bf16"] = "32"
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    devices: int = _f(1, ge=1)
    num_nodes: int = _f(1, ge=1)
    seed: int = _f(0, ge=0)
    dice_weight: float = _f(1.0, ge=0.0)
    bce_weight: float = _f(1.0, ge=0.0)
    monitor: str = "val_dice"
    monitor_mode: Literal["max", "min"] = "max"
    experiment: str = "vesselseg"
    run_name: str = ""
    overlay_every_n_epochs: int = _f(5, ge=0)


@dataclass
class InferConfig:
    """Streamed sliding-window inference (``vesselseg predict``)."""

    tile_size: int | Triple = _f([48, 48, 48], ge=8)
    overlap: float = _f(0.25, ge=0.0, lt=1.0)
    border: int = _f(0, ge=0)
    blend: Literal["gaussian", "constant"] = "gaussian"
    batch_size: int = _f(2, ge=1)
    tta: bool = False
    precision: Literal["32", "bf16"] = "32"
    threshold: float = _f(0.5, gt=0.0, lt=1.0)
    prob_dtype: Literal["float32", "float16", "uint8"] = "float32"
    out_format: Literal["npy", "zarr", "tiff"] = "npy"
    naming: Literal["default", "seed"] = "default"
    out_dir: str = "predictions"


@dataclass
class PseudoConfig:
    """Pseudo labels from confident predictions (``vesselseg pseudo``) and stage-2 training:
    ``mix_ratio`` of its crops come from pseudo-labelled volumes, and it fine-tunes stage 1
    (``train --init``) for ``finetune_epochs`` at ``finetune_lr``."""

    in_dir: str = "data/raw/unlabelled"
    out_dir: str = "data/pseudo"
    hi: float = _f(0.9, gt=0.0, lt=1.0)
    lo: float = _f(0.02, gt=0.0, lt=1.0)
    min_component_voxels: int = _f(0, ge=0)
    mix_ratio: float = _f(0.25, ge=0.0, le=1.0)
    finetune_epochs: int = _f(6, ge=1)
    finetune_lr: float = _f(5e-4, gt=0.0)


@dataclass
class TuneConfig:
    """Optuna search space and study settings (``vesselseg tune``)."""

    n_trials: int = _f(8, ge=1)
    timeout: int = _f(0, ge=0)
    jobs: int = _f(1, ge=1)
    study: str = "vesselseg"
    storage: str = ""
    pruner: Literal["median", "hyperband", "none"] = "median"
    crop_sizes: list[int] = _f([32, 48, 64], ge=8)
    lr_min: float = _f(1e-4, gt=0.0)
    lr_max: float = _f(1e-2, gt=0.0)
    schedules: list[str] = _f(["plateau", "cosine"])
    batch_sizes: list[int] = _f([1, 2, 4], ge=1)
    max_epochs: int = _f(4, ge=1)
    min_lr_ratios: list[float] = _f([0.001, 0.01], gt=0.0, le=1.0)
    plateau_factor_min: float = _f(0.2, gt=0.0, lt=1.0)
    plateau_factor_max: float = _f(0.7, gt=0.0, lt=1.0)
    plateau_patiences: list[int] = _f([1, 2, 3], ge=0)
    warmup_epochs: list[int] = _f([0, 1, 2], ge=0)
    startup_trials: int = _f(4, ge=0)
    pruner_warmup_epochs: int = _f(1, ge=0)
    seed: int = _f(0, ge=0)
    out_dir: str = "tuning"


@dataclass
class RegisterConfig:
    """MLflow Model Registry (``vesselseg register``)."""

    name: str = "vesselseg"
    alias: str = "challenger"
    champion_alias: str = "champion"
    metric: str = "dice"


@dataclass
class Params:
    """All of ``params.yaml``: one section per stage."""

    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    multiview: MultiviewConfig = field(default_factory=MultiviewConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)


# --------------------------------------------------------------------------- loading


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Load ``params.yaml`` strictly, apply ``section.key=value`` overrides and validate."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    params = params_from_dict(raw, source=str(path), strict=True)
    return apply_overrides(params, overrides or [])


def params_from_dict(raw: Any, source: str = "params", strict: bool = True) -> Params:
    """Build :class:`Params` from a nested dict; ``strict`` requires every key to be present."""
    return _build(Params, raw, prefix="", source=source, strict=strict)


def section_from_dict(cls: type, raw: Any, section: str, source: str) -> Any:
    """Build one section dataclass (e.g. :class:`ModelConfig`) strictly from a dict."""
    return _build(cls, raw, prefix=f"{section}.", source=source, strict=True)


def params_to_dict(params: Any) -> dict[str, Any]:
    """Nested plain dict of a config dataclass (what goes to YAML and MLflow)."""
    return dataclasses.asdict(params)


def flatten(params: Any) -> dict[str, Any]:
    """``{"train.lr": 0.001, ...}`` for logging as MLflow params."""
    out: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            else:
                out[name] = value

    walk(params_to_dict(params), "")
    return out


def apply_overrides(params: Params, overrides: list[str]) -> Params:
    """Apply ``section.key=value`` strings (value parsed as YAML) and re-validate."""
    import yaml

    data = params_to_dict(params)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"override {key!r}: expected section.key")
        section, name = parts
        if section not in data or name not in data[section]:
            raise ConfigError(f"override {key!r}: unknown key")
        try:
            data[section][name] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"override {key!r}: value {text!r} is not valid YAML") from None
    return params_from_dict(data, source="override", strict=True)


def with_values(params: Params, values: dict[str, Any]) -> Params:
    """Set ``{"section.key": value}`` pairs whose value is not None, re-validating.

    CLI options pass their values here so that they are checked like params.yaml entries.
    """
    data = params_to_dict(params)
    for key, value in values.items():
        if value is None:
            continue
        section, name = key.split(".")
        data[section][name] = list(value) if isinstance(value, tuple) else value
    return params_from_dict(data, source="option", strict=True)


def multiview_params(params: Params) -> Params:
    """``params`` for training the multiview 2D model: the ``multiview`` section applied over
    ``model``, ``data`` and ``train``."""
    mv = params.multiview
    return with_values(
        params,
        {
            "model.name": "unet2d",
            "model.base_channels": mv.base_channels,
            "model.depth": mv.depth,
            "data.crop_size": mv.crop_size,
            "train.batch_size": mv.batch_size,
            "data.samples_per_volume": mv.samples_per_volume,
            "train.max_epochs": mv.max_epochs,
            "train.lr": mv.lr,
        },
    )


def as_triple(value: int | list[int]) -> tuple[int, int, int]:
    """Normalise an ``int | [z, y, x]`` size to a (z, y, x) tuple."""
    if isinstance(value, int):
        return (value, value, value)
    return (int(value[0]), int(value[1]), int(value[2]))


# --------------------------------------------------------------------------- validation


def _build(cls: type, raw: Any, prefix: str, source: str, strict: bool) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key {prefix}{unknown[0]}")
    kwargs: dict[str, Any] = {}
    for name, fld in fields.items():
        key = f"{prefix}{name}"
        if name not in raw:
            if strict:
                raise ConfigError(f"{source}: missing key {key}")
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, raw[name], key + ".", source, strict)
        else:
            value = _coerce(raw[name], hint, key, source)
            _check_range(value, fld.metadata, key, source)
            kwargs[name] = value
    obj = cls(**kwargs)
    _check_relations(obj, prefix, source)
    return obj


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is list:
        (inner,) = typing.get_args(hint)
        return f"a list of {_type_name(inner)}"
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Return ``value`` as ``hint`` or raise a ConfigError naming ``key``."""
    result = _try_coerce(value, hint)
    if result is _FAIL:
        raise ConfigError(f"{source}: {key} must be {_type_name(hint)}, got {value!r}")
    return result


_FAIL = object()


def _try_coerce(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # precision: 32 in YAML means "32"
        return value if value in choices else _FAIL
    if origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            result = _try_coerce(value, option)
            if result is not _FAIL:
                return result
        return _FAIL
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return _FAIL
        items = [_try_coerce(v, inner) for v in value]
        if any(i is _FAIL for i in items):
            return _FAIL
        if hint is Triple and len(items) != 3:
            return _FAIL
        return items
    if hint is bool:
        return value if isinstance(value, bool) else _FAIL
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _FAIL
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _FAIL
        return float(value)
    if hint is str:
        return value if isinstance(value, str) else _FAIL
    return _FAIL


def _check_range(value: Any, checks: Any, key: str, source: str) -> None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if "ge" in checks and not v >= checks["ge"]:
            raise ConfigError(f"{source}: {key} must be >= {checks['ge']}, got {value!r}")
        if "gt" in checks and not v > checks["gt"]:
            raise ConfigError(f"{source}: {key} must be > {checks['gt']}, got {value!r}")
        if "le" in checks and not v <= checks["le"]:
            raise ConfigError(f"{source}: {key} must be <= {checks['le']}, got {value!r}")
        if "lt" in checks and not v < checks["lt"]:
            raise ConfigError(f"{source}: {key} must be < {checks['lt']}, got {value!r}")


def _check_relations(obj: Any, prefix: str, source: str) -> None:
    """Checks that involve two fields of one section."""
    if isinstance(obj, SynthConfig) and obj.min_radius > obj.max_radius:
        raise ConfigError(f"{source}: {prefix}min_radius must be <= {prefix}max_radius")
    if isinstance(obj, DataConfig):
        if len(obj.percentiles) != 2 or obj.percentiles[0] >= obj.percentiles[1]:
            raise ConfigError(f"{source}: {prefix}percentiles must be [low, high] with low < high")
    if isinstance(obj, ModelConfig):
        if obj.context % 2 == 0:
            raise ConfigError(f"{source}: {prefix}context must be odd, got {obj.context}")
        if not obj.views or len(set(obj.views)) != len(obj.views):
            raise ConfigError(f"{source}: {prefix}views must be distinct axes among z, y, x")
    if isinstance(obj, PseudoConfig) and obj.lo >= obj.hi:
        raise ConfigError(f"{source}: {prefix}lo must be < {prefix}hi")
    if isinstance(obj, TuneConfig):
        if obj.lr_min > obj.lr_max:
            raise ConfigError(f"{source}: {prefix}lr_min must be <= {prefix}lr_max")
        bad = [s for s in obj.schedules if s not in ("plateau", "cosine")]
        if bad:
            raise ConfigError(f"{source}: {prefix}schedules: unknown schedule {bad[0]!r}")
