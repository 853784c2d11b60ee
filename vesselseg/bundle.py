"""A saved model: weights (``NAME.pt``) + its own settings (``NAME.json``) side by side.

The JSON carries everything inference needs — network settings, intensity normalisation,
default tiling and threshold — so inference never imports training code. Weights are a plain
``state_dict`` loaded with ``torch.load(weights_only=True)``: nothing is unpickled beyond
tensors. Lightning checkpoints (``.ckpt``, for resuming training) are accepted too: their
``state_dict`` and the ``bundle`` entry of their hyper-parameters are read the same safe way.

A model *source* is a file path or a registry URI (``models:/NAME@ALIAS``, ``runs:/ID/PATH``).
This layer only recognises a URI (:func:`is_model_uri`); turning one into a local file is the
registry's job, handed in as a ``resolve`` function (:data:`Resolver`, :func:`model_file`), so
nothing below the registry imports it.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vesselseg.errors import ConfigError, MissingPathError, VesselsegError
from vesselseg.io.atomic import atomic_path, write_text

FORMAT = "vesselseg-model/1"
ADDED_MODEL_FIELDS = ("context", "views", "strides", "kernels")  # newer than the format
URI_SCHEMES = ("models:/", "runs:/")

Resolver = Callable[[str], Path]
"""A registry URI → the local weights file it names (e.g. ``registry.resolve_model``)."""


class ModelFileError(VesselsegError):
    """A model file is missing, corrupt, or not a vesselseg model."""


@dataclass
class ModelMeta:
    """What travels with the weights (the JSON beside ``NAME.pt``).

    ``spacing`` ``[z, y, x]`` and ``unit`` are the voxel size the model was trained at (what
    its training crops were resampled to), so inference can resample inputs to it.
    ``intensity`` ``[lo, hi, mean, std]`` is the dataset-level normalisation it was trained
    with (``data.normalization: dataset``; None: each volume's ``percentiles``). ``threshold``
    is the mask threshold ``predict`` uses unless told otherwise: the calibrated one
    (``info["calibration"]``) after ``train.calibrate_threshold``.
    """

    model: dict[str, Any]
    percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])
    tile_size: list[int] = field(default_factory=lambda: [64, 64, 64])
    overlap: float = 0.25
    threshold: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)  # run id, data version, metrics, ...
    format: str = FORMAT
    # the voxel size (z, y, x) and unit training crops were resampled to; None for a model
    # trained without known spacing (and for models saved before spacing existed)
    spacing: list[float] | None = None
    unit: str | None = None
    intensity: list[float] | None = None  # dataset normalisation; None: per-volume percentiles

    def model_config(self, where: str) -> Any:
        """The :class:`~vesselseg.config.ModelConfig` of these settings (fields added since a
        model was saved, e.g. the 2.5D ``context``, take their defaults)."""
        from vesselseg.config import ModelConfig, params_to_dict, section_from_dict

        defaults = params_to_dict(ModelConfig())
        later = {k: defaults[k] for k in ADDED_MODEL_FIELDS if k not in self.model}
        return section_from_dict(ModelConfig, {**self.model, **later}, "model", source=where)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> ModelMeta:
        if data.get("format") != FORMAT:
            raise ModelFileError(f"{where}: not a vesselseg model (format {data.get('format')!r})")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise ModelFileError(f"{where}: incomplete model settings ({exc})") from None


def is_model_uri(source: str) -> bool:
    """True for a registry URI (``models:/...`` or ``runs:/...``) rather than a file path."""
    return source.startswith(URI_SCHEMES)


def model_file(source: str | Path, resolve: Resolver | None = None) -> Path:
    """The local file of a model ``source``: a path as it is (:class:`MissingPathError` when
    absent), a registry URI through ``resolve`` (a :class:`ConfigError` without one)."""
    text = str(source)
    if is_model_uri(text):
        if resolve is None:
            raise ConfigError(f"{text}: a registry model needs the registry to resolve it")
        return resolve(text)
    path = Path(text)
    if not path.exists():
        raise MissingPathError(f"{path}: no such model file")
    return path


def meta_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def save_bundle(path: str | Path, state_dict: dict[str, Any], meta: ModelMeta) -> Path:
    """Write ``path`` (weights) and its JSON atomically; returns the weights path.

    The JSON is renamed first, the weights last: a weights file under its final name always
    has its settings beside it.
    """
    import torch

    path = Path(path)
    buffer = io.BytesIO()  # serialise in memory: a full disk is then an OSError, not torch's
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
        write_text(meta_path(path), meta.to_json())
    return path


def load_bundle(path: str | Path, map_location: str = "cpu") -> tuple[dict[str, Any], ModelMeta]:
    """Read ``(state_dict, meta)`` from ``NAME.pt`` + ``NAME.json`` or a Lightning ``.ckpt``."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a readable model file ({reason[:160]})") from None
    if not isinstance(payload, dict):
        raise ModelFileError(f"{path}: not a vesselseg model (no state dict)")
    if "state_dict" in payload and "hyper_parameters" in payload:  # Lightning checkpoint
        bundle = payload["hyper_parameters"].get("bundle")
        if not isinstance(bundle, dict):
            raise ModelFileError(f"{path}: checkpoint carries no vesselseg model settings")
        state = {
            k.removeprefix("net."): v
            for k, v in payload["state_dict"].items()
            if k.startswith("net.")
        }
        return state, ModelMeta.from_dict(bundle, str(path))
    side = meta_path(path)
    if not side.is_file():
        raise ModelFileError(f"{path}: settings file {side.name} is missing beside the weights")
    return payload, read_settings(side)


def read_settings(side: Path) -> ModelMeta:
    """The :class:`ModelMeta` stored in a model's JSON settings file."""
    try:
        data = json.loads(side.read_text())
    except ValueError:
        raise ModelFileError(f"{side}: not valid JSON") from None
    return ModelMeta.from_dict(data, str(side))


def build_from_bundle(path: str | Path, map_location: str = "cpu") -> tuple[Any, ModelMeta]:
    """The network of a saved model, weights loaded, in eval mode."""
    from vesselseg.models import build_model

    state, meta = load_bundle(path, map_location)
    cfg = meta.model_config(str(path))
    net = build_model(cfg)
    load_weights(net, state, f"{path}: weights do not fit a {cfg.name} model with these settings")
    net.eval()
    return net, meta


def load_weights(net: Any, state: dict[str, Any], failure: str) -> None:
    """``net.load_state_dict(state)``; a mismatch is a :class:`ModelFileError` ``failure (why)``."""
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelFileError(f"{failure} ({first[:120]})") from None


def update_settings(path: str | Path, **changes: Any) -> ModelMeta:
    """Rewrite the settings beside the weights ``path`` with ``changes`` (atomically); a
    ``.ckpt`` has no settings file and is refused."""
    path = Path(path)
    side = meta_path(path)
    if path.suffix == ".ckpt" or not side.is_file():
        raise ModelFileError(f"{path}: no settings file {side.name} to update")
    meta = dataclasses.replace(read_settings(side), **changes)
    write_text(side, meta.to_json())
    return meta


def load_meta(path: str | Path) -> ModelMeta:
    """Only the settings of a saved model (``NAME.json``); no weights, no torch."""
    path = Path(path)
    side = meta_path(path)
    if path.suffix == ".ckpt" or not side.is_file():
        return load_bundle(path)[1]
    return read_settings(side)
