"""Typed configuration mirroring ``params.yaml``.

``params.yaml`` holds every knob, grouped by stage. The sections are pydantic dataclasses:
loading is strict (unknown keys are refused, types are not coerced, ranges come from each
field's ``Field(ge=…, gt=…, le=…, lt=…)`` and relations between fields from validators), and a
missing key fails too. Any failure is one :class:`ConfigError` line naming the dotted key. CLI
options and ``--set section.key=value`` overrides are applied with :func:`apply_overrides` and
:func:`with_values` and validated the same way.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from vesselseg.errors import ConfigError

T = TypeVar("T")

# Strict scalars: no "2" or 2.0 or True for an int (an int is a valid float); a list is a list
# or a tuple; a size is one side or [z, y, x]. ``precision: 32`` in YAML is the choice "32".
Int, Float = Annotated[int, pydantic.Strict()], Annotated[float, pydantic.Strict()]
Bool, Str = Annotated[bool, pydantic.Strict()], Annotated[str, pydantic.Strict()]
_untuple = pydantic.BeforeValidator(lambda v: list(v) if isinstance(v, tuple) else v)
List = Annotated[list[T], _untuple, pydantic.Strict()]
Size = T | Annotated[List[T], Field(min_length=3, max_length=3)]
Side8 = Annotated[Int, Field(ge=8)]
_number_text = pydantic.BeforeValidator(lambda v: str(v) if type(v) in (int, float) else v)
Precision = Annotated[Literal["32", "bf16"], _number_text]

# Unknown keys are refused. A relation check raises ValueError("{lo} must be < {hi}"): the
# braces name fields of the section and become dotted keys in the ConfigError.
_STRICT = pydantic.ConfigDict(extra="forbid", defer_build=True)


@dataclass(config=_STRICT)
class SynthConfig:
    """Synthetic demo data (``vesselseg synth``)."""

    out_dir: Str = "data/raw"
    n_train: Int = Field(4, ge=0)
    n_val: Int = Field(1, ge=0)
    n_test: Int = Field(2, ge=0)
    n_unlabelled: Int = Field(1, ge=0)
    shape: Size[Annotated[Int, Field(ge=16)]] = Field([96, 96, 96])
    spacing: Size[Annotated[Float, Field(gt=0.0)]] = Field([1.0, 1.0, 1.0])  # um (z, y, x)
    seed: Int = Field(0, ge=0)
    format: Literal["npy", "tiff", "zarr"] = "npy"
    n_trees: Int = Field(3, ge=1)
    max_radius: Float = Field(5.0, gt=0.5)
    min_radius: Float = Field(1.0, gt=0.0)
    annotated_fraction: Float = Field(0.01, gt=0.0, lt=0.5)
    noise: Float = Field(0.05, ge=0.0)
    slab: Int = Field(64, ge=8)

    @model_validator(mode="after")
    def _radii(self) -> SynthConfig:
        if self.min_radius > self.max_radius:
            raise ValueError("{min_radius} must be <= {max_radius}")
        return self


@dataclass(config=_STRICT)
class DataConfig:
    """Training data: where it is, how crops are drawn and augmented."""

    train_dir: Str = "data/raw/train"
    val_dir: Str = "data/raw/val"
    crop_size: Size[Side8] = Field([48, 48, 48])
    samples_per_volume: Int = Field(16, ge=1)
    min_vessel_voxels: Int = Field(1, ge=1)
    background_crop_fraction: Float = Field(0.25, ge=0.0, le=1.0)
    num_loader_workers: Int = Field(0, ge=0)
    cache_dir: Str = ".cache/vesselseg"
    percentiles: List[Annotated[Float, Field(ge=0.0, le=100.0)]] = Field([0.5, 99.5])
    flip: Bool = True
    rot90: Bool = True
    intensity_scale: Float = Field(0.1, ge=0.0, lt=1.0)
    intensity_shift: Float = Field(0.1, ge=0.0)
    noise_std: Float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _percentiles(self) -> DataConfig:
        if len(self.percentiles) != 2 or self.percentiles[0] >= self.percentiles[1]:
            raise ValueError("{percentiles} must be [low, high] with low < high")
        return self


@dataclass(config=_STRICT)
class ModelConfig:
    """Network architecture; ``norm`` is seed 000's ``--normalization {b,g}``.

    ``unet2d`` is a 2D U-Net trained on slices along ``views`` (multiview) with ``context``
    neighbouring slices as channels (2.5D; 1 = plain 2D) and applied along the same axes.
    """

    name: Literal["vnet", "unet", "unet2d"] = "unet"
    norm: Literal["batch", "group"] = "batch"
    base_channels: Int = Field(8, ge=1)
    depth: Int = Field(3, ge=1, le=6)
    dropout: Float = Field(0.0, ge=0.0, lt=1.0)
    groups: Int = Field(8, ge=1)
    context: Int = Field(3, ge=1)
    views: List[Literal["z", "y", "x"]] = Field(["z", "y", "x"])

    @model_validator(mode="after")
    def _slices(self) -> ModelConfig:
        if self.context % 2 == 0:
            raise ValueError(f"{{context}} must be odd, got {self.context}")
        if not self.views or len(set(self.views)) != len(self.views):
            raise ValueError("{views} must be distinct axes among z, y, x")
        return self


@dataclass(config=_STRICT)
class MultiviewConfig:
    """The 2D/2.5D multiview U-Net of seed 004 (``vesselseg train --multiview``).

    Its settings where they differ from the 3D model's: applied over ``model`` (name
    ``unet2d``; ``model.context`` and ``model.views`` as they are), ``data`` and ``train``.
    ``crop_size``'s sides give the in-plane size of the slices along each view.
    """

    base_channels: Int = Field(16, ge=1)
    depth: Int = Field(4, ge=2, le=6)
    crop_size: Size[Side8] = Field([96, 96, 96])
    batch_size: Int = Field(8, ge=1)
    samples_per_volume: Int = Field(64, ge=1)
    max_epochs: Int = Field(12, ge=1)
    lr: Float = Field(2e-3, gt=0.0)
    ensemble_weight: Float = Field(1.0, gt=0.0)


@dataclass(config=_STRICT)
class TrainConfig:
    """Optimisation, schedule, checkpoints and tracking of ``vesselseg train``."""

    out_dir: Str = "models"
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: Float = Field(2e-3, gt=0.0)
    weight_decay: Float = Field(1e-4, ge=0.0)
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    lr_reduce_factor: Float = Field(0.5, gt=0.0, lt=1.0)
    lr_patience: Int = Field(3, ge=0)
    min_lr: Float = Field(1e-6, ge=0.0)
    warmup_epochs: Int = Field(1, ge=0)
    batch_size: Int = Field(2, ge=1)
    max_epochs: Int = Field(14, ge=1)
    precision: Precision = "32"
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    devices: Int = Field(1, ge=1)
    num_nodes: Int = Field(1, ge=1)
    seed: Int = Field(0, ge=0)
    dice_weight: Float = Field(1.0, ge=0.0)
    bce_weight: Float = Field(1.0, ge=0.0)
    monitor: Str = "val_dice"
    monitor_mode: Literal["max", "min"] = "max"
    experiment: Str = "vesselseg"
    run_name: Str = ""
    overlay_every_n_epochs: Int = Field(5, ge=0)


@dataclass(config=_STRICT)
class InferConfig:
    """Streamed sliding-window inference (``vesselseg predict``)."""

    tile_size: Size[Side8] = Field([48, 48, 48])
    overlap: Float = Field(0.25, ge=0.0, lt=1.0)
    border: Int = Field(0, ge=0)
    blend: Literal["gaussian", "constant"] = "gaussian"
    batch_size: Int = Field(2, ge=1)
    tta: Bool = False
    precision: Precision = "32"
    threshold: Float = Field(0.5, gt=0.0, lt=1.0)
    prob_dtype: Literal["float32", "float16", "uint8"] = "float32"
    out_format: Literal["npy", "zarr", "tiff"] = "npy"
    naming: Literal["default", "seed"] = "default"
    out_dir: Str = "predictions"


@dataclass(config=_STRICT)
class PseudoConfig:
    """Pseudo labels from confident predictions (``vesselseg pseudo``) and stage-2 training:
    ``mix_ratio`` of its crops come from pseudo-labelled volumes, and it fine-tunes stage 1
    (``train --init``) for ``finetune_epochs`` at ``finetune_lr``."""

    in_dir: Str = "data/raw/unlabelled"
    out_dir: Str = "data/pseudo"
    hi: Float = Field(0.9, gt=0.0, lt=1.0)
    lo: Float = Field(0.02, gt=0.0, lt=1.0)
    min_component_voxels: Int = Field(0, ge=0)
    mix_ratio: Float = Field(0.25, ge=0.0, le=1.0)
    finetune_epochs: Int = Field(6, ge=1)
    finetune_lr: Float = Field(5e-4, gt=0.0)

    @model_validator(mode="after")
    def _band(self) -> PseudoConfig:
        if self.lo >= self.hi:
            raise ValueError("{lo} must be < {hi}")
        return self


@dataclass(config=_STRICT)
class TuneConfig:
    """Optuna search space and study settings (``vesselseg tune``)."""

    n_trials: Int = Field(8, ge=1)
    timeout: Int = Field(0, ge=0)
    jobs: Int = Field(1, ge=1)
    study: Str = "vesselseg"
    storage: Str = ""
    pruner: Literal["median", "hyperband", "none"] = "median"
    crop_sizes: List[Side8] = Field([32, 48, 64])
    lr_min: Float = Field(1e-4, gt=0.0)
    lr_max: Float = Field(1e-2, gt=0.0)
    schedules: List[Literal["plateau", "cosine"]] = Field(["plateau", "cosine"])
    batch_sizes: List[Annotated[Int, Field(ge=1)]] = Field([1, 2, 4])
    max_epochs: Int = Field(4, ge=1)
    min_lr_ratios: List[Annotated[Float, Field(gt=0.0, le=1.0)]] = Field([0.001, 0.01])
    plateau_factor_min: Float = Field(0.2, gt=0.0, lt=1.0)
    plateau_factor_max: Float = Field(0.7, gt=0.0, lt=1.0)
    plateau_patiences: List[Annotated[Int, Field(ge=0)]] = Field([1, 2, 3])
    warmup_epochs: List[Annotated[Int, Field(ge=0)]] = Field([0, 1, 2])
    startup_trials: Int = Field(4, ge=0)
    pruner_warmup_epochs: Int = Field(1, ge=0)
    seed: Int = Field(0, ge=0)
    out_dir: Str = "tuning"

    @model_validator(mode="after")
    def _lr_range(self) -> TuneConfig:
        if self.lr_min > self.lr_max:
            raise ValueError("{lr_min} must be <= {lr_max}")
        return self


@dataclass(config=_STRICT)
class RegisterConfig:
    """MLflow Model Registry (``vesselseg register``)."""

    name: Str = "vesselseg"
    alias: Str = "challenger"
    champion_alias: Str = "champion"
    metric: Str = "dice"


@dataclass(config=_STRICT)
class Params:
    """All of ``params.yaml``: one section per stage."""

    synth: SynthConfig = Field(default_factory=SynthConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    multiview: MultiviewConfig = Field(default_factory=MultiviewConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    pseudo: PseudoConfig = Field(default_factory=PseudoConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    register: RegisterConfig = Field(default_factory=RegisterConfig)


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
    """Build :class:`Params` from a nested dict; ``strict`` requires every key to be present
    (otherwise a missing key takes its default). Unknown keys are refused either way."""
    return _build(Params, raw, prefix="", source=source, strict=strict)


def section_from_dict(cls: type, raw: Any, section: str, source: str) -> Any:
    """Build one section dataclass (e.g. :class:`ModelConfig`) strictly from a dict."""
    return _build(cls, raw, prefix=f"{section}.", source=source, strict=True)


def params_to_dict(params: Any) -> dict[str, Any]:
    """Nested plain dict of a config dataclass (what goes to YAML and MLflow)."""
    return dataclasses.asdict(params)


def flatten(params: Any) -> dict[str, Any]:
    """``{"train.lr": 0.001, ...}`` for logging as MLflow params."""

    def walk(data: dict[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for key, value in data.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(walk(params_to_dict(params), ""))


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
        data[section][name] = value  # a tuple validates as a list
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

_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _build(cls: type, raw: Any, prefix: str, source: str, strict: bool) -> Any:
    try:
        obj = pydantic.TypeAdapter(cls).validate_python(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc, cls, raw, prefix)}") from None
    if strict and (key := _missing_key(cls, raw, prefix)):
        raise ConfigError(f"{source}: missing key {key}")
    return obj


def _missing_key(cls: type, raw: dict[str, Any], prefix: str) -> str | None:
    for name, hint in typing.get_type_hints(cls).items():
        if name not in raw:
            return prefix + name
        if dataclasses.is_dataclass(hint) and (key := _missing_key(hint, raw[name], name + ".")):
            return prefix + key
    return None


def _describe(exc: pydantic.ValidationError, cls: type, raw: Any, prefix: str) -> str:
    """One line for the first failing key. Of its errors (one per member of a union) the
    deepest: ``[4, 4, 4]`` for a size fails as ``>= 8`` rather than as "not an int"."""
    errors = exc.errors()
    first = _path(cls, errors[0]["loc"])[0]
    same_key = [e for e in errors if _path(cls, e["loc"])[0] == first]
    error = max(same_key, key=lambda e: len(e["loc"]))
    names, hint = _path(cls, error["loc"])
    key, ctx = prefix + ".".join(names), error.get("ctx", {})
    if error["type"] in ("unexpected_keyword_argument", "invalid_key"):
        return f"unknown key {key}{'.' if names else ''}{error['loc'][len(names)]}"
    if error["type"] == "value_error":  # a relation within section ``hint``
        section = f"{key}." if names else prefix
        return str(ctx["error"]).format(**{n: section + n for n in typing.get_type_hints(hint)})
    value = raw
    for name in names:
        value = value[name]
    for bound, sign in _BOUNDS.items():
        if bound in ctx:
            return f"{key} must be {sign} {ctx[bound]}, got {value!r}"
    if dataclasses.is_dataclass(hint):
        return f"{key.rstrip('.') or 'top level'} must be a mapping, got {type(value).__name__}"
    return f"{key} must be {_type_name(hint)}, got {value!r}"


def _path(cls: type, loc: tuple[int | str, ...]) -> tuple[list[str], Any]:
    """The field names that ``loc`` starts with (not list indices or union members) and the
    type of the last one, without its ``Annotated`` constraints."""
    names: list[str] = []
    hint: Any = cls
    for item in loc:
        hints = typing.get_type_hints(hint) if dataclasses.is_dataclass(hint) else {}
        if item not in hints:
            break
        names.append(str(item))
        hint = hints[item]
    return names, hint


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if args:  # a union
        return " or ".join(_type_name(a) for a in args)
    return getattr(hint, "__name__", str(hint))
