"""Ensembles: several saved models (2D multiview and 3D) averaged into one probability volume.

An ensemble is a small JSON file, usable wherever a model file is (``predict``, ``evaluate``,
``pseudo``)::

    {"format": "vesselseg-ensemble/1",
     "members": [{"model": "stage2.pt", "weight": 0.6}, {"model": "unet2d.pt", "weight": 0.4}]}

Member paths are relative to the ensemble file's folder; ``models:/NAME@ALIAS`` URIs stay as
they are and the caller's ``resolve`` function turns them into files
(:func:`vesselseg.bundle.model_file`). At inference every member sees the same normalised
tile, so members must share their intensity percentiles (and their training voxel size,
where they record one); the output is
``sum(w_i * p_i) / sum(w_i)`` of the members' probabilities (seed 004's weighted 2D + 3D
blend).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vesselseg.bundle import Resolver, is_model_uri, model_file
from vesselseg.errors import ConfigError, MissingPathError
from vesselseg.inference.network import probabilities_of
from vesselseg.inference.voxels import merged_voxel_size
from vesselseg.io.atomic import write_text

FORMAT = "vesselseg-ensemble/1"

LoadMember = Callable[[str], tuple[nn.Module, Any]]
"""A member's source → ``(network in eval mode, ModelMeta)``
(:func:`vesselseg.inference.loader.load_model`)."""


def parse_member(text: str) -> tuple[str, float]:
    """``"models/a.pt:0.6"`` -> ``("models/a.pt", 0.6)``; no ``:weight`` means weight 1."""
    head, sep, tail = text.rpartition(":")
    if sep and head and not tail.startswith("/"):
        try:
            weight = float(tail)
        except ValueError:
            weight = None
        if weight is not None:
            if not math.isfinite(weight) or weight <= 0:
                raise ConfigError(f"--ensemble {text!r}: the weight must be a number > 0")
            return head, weight
    return text, 1.0


def is_ensemble_file(source: str | Path) -> bool:
    """True for an existing ``.json`` file holding an ensemble."""
    path = Path(str(source))
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (ValueError, AttributeError, OSError):
        return False


def write_ensemble(
    members: Sequence[tuple[str, float]], out: str | Path, resolve: Resolver | None = None
) -> Path:
    """Check every member loads and they fit together, then write the ensemble file atomically.

    ``resolve`` turns members that are registry URIs into files (needed only for those)."""
    out = Path(out)
    if len(members) < 2:
        raise ConfigError("--ensemble: give at least two models")
    out.parent.mkdir(parents=True, exist_ok=True)
    entries = []
    for model, weight in members:
        if not is_model_uri(model):
            if not Path(model).is_file():
                raise MissingPathError(f"{model}: no such model file")
            model = os.path.relpath(Path(model).resolve(), out.parent.resolve())
        entries.append({"model": model, "weight": weight})
    _member_metas([(_resolve(e["model"], out.parent), e["weight"]) for e in entries], out, resolve)
    write_text(out, json.dumps({"format": FORMAT, "members": entries}, indent=2) + "\n")
    return out


def read_members(path: str | Path) -> list[tuple[str, float]]:
    """``(model, weight)`` of each member, model paths resolved against the file's folder."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        members = [(str(m["model"]), float(m["weight"])) for m in data["members"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a valid ensemble file ({exc})") from None
    if len(members) < 2 or any(not (w > 0 and math.isfinite(w)) for _, w in members):
        raise ConfigError(f"{path}: an ensemble needs two or more members with weights > 0")
    return [(_resolve(model, path.parent), weight) for model, weight in members]


def _resolve(model: str, folder: Path) -> str:
    return model if is_model_uri(model) or Path(model).is_absolute() else str(folder / model)


def _member_metas(
    members: Sequence[tuple[str, float]], where: str | Path, resolve: Resolver | None
) -> list[Any]:
    """The settings of each member (JSON only, no weights), checked to fit together."""
    from vesselseg.bundle import load_meta

    metas = [load_meta(model_file(model, resolve)) for model, _ in members]
    check_same_normalisation(metas, where)
    return metas


def check_same_normalisation(metas: Sequence[Any], where: str | Path) -> None:
    """Members see one normalised window: their intensity percentiles (or dataset-level
    statistics) must be equal."""
    if any(m.percentiles != metas[0].percentiles for m in metas):
        raise ConfigError(
            f"{where}: ensemble members normalise intensities differently "
            f"({[m.percentiles for m in metas]}); train them with the same data.percentiles"
        )
    if any(getattr(m, "intensity", None) != getattr(metas[0], "intensity", None) for m in metas):
        raise ConfigError(
            f"{where}: ensemble members normalise intensities differently "
            f"({[getattr(m, 'intensity', None) for m in metas]}); train them with the same "
            "data.normalization and data.intensity_stats"
        )


def load_ensemble(path: str | Path, load_member: LoadMember) -> tuple[Any, Any]:
    """``(EnsembleNet in eval mode, ModelMeta)`` of an ensemble file; ``load_member`` loads
    each member (injected, so this module needs no loader of its own)."""
    from vesselseg.bundle import ModelMeta

    members = read_members(path)
    loaded = [load_member(model) for model, _ in members]
    metas = [meta for _, meta in loaded]
    check_same_normalisation(metas, path)
    weights = [w for _, w in members]
    total = sum(weights)
    size = merged_voxel_size(metas, str(path))  # members must agree on their training spacing
    meta = ModelMeta(
        model={
            "name": "ensemble",
            "depth": max(int(m.model.get("depth", 1)) for m in metas),
            "members": [m.model.get("name") for m in metas],
        },
        percentiles=list(metas[0].percentiles),
        tile_size=list(metas[0].tile_size),
        overlap=metas[0].overlap,
        threshold=sum(w * m.threshold for w, m in zip(weights, metas, strict=True)) / total,
        info={"members": [{"model": m, "weight": w} for m, w in members]},
        spacing=list(size.spacing) if size else None,
        unit=size.unit if size else None,
        intensity=metas[0].intensity,
    )
    return EnsembleNet([net for net, _ in loaded], weights).eval(), meta


class EnsembleNet(nn.Module):
    """``(B, 1, Z, Y, X)`` -> the weighted mean of the members' probabilities."""

    outputs_probabilities = True

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        if len(members) != len(weights) or not members:
            raise ValueError("EnsembleNet: one weight per member, at least one member")
        self.members = nn.ModuleList(members)
        total = float(sum(weights))
        self.weights = [float(w) / total for w in weights]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=x.device)
        for net, weight in zip(self.members, self.weights, strict=True):
            total = total + weight * probabilities_of(net)(net(x).float())
        return total
