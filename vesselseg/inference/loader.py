"""Load what a ``--model`` names: a saved model file, an ensemble file, or a registry URI.

:func:`load_model` dispatches: an ensemble file (:mod:`vesselseg.inference.ensemble`) loads its
members through this same function, anything else is one network
(:func:`vesselseg.inference.network.load_network`). Registry URIs (``models:/NAME@ALIAS``, also
as ensemble members) are turned into files by the ``resolve`` function the caller hands in
(the CLI passes ``registry.resolve_model``), so inference never imports the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from vesselseg.bundle import Resolver, load_meta, model_file
from vesselseg.inference.ensemble import is_ensemble_file, load_ensemble
from vesselseg.inference.network import load_network


def load_model(source: str | Path, resolve: Resolver | None = None) -> tuple[nn.Module, Any]:
    """``(network in eval mode, ModelMeta)`` from a model file, registry URI or ensemble file.

    The network maps a whole tile ``(B, 1, Z, Y, X)`` to a same-shape output. A registry URI
    without ``resolve`` is a :class:`~vesselseg.errors.ConfigError`.
    """
    if is_ensemble_file(source):
        return load_ensemble(source, lambda member: load_model(member, resolve))
    return load_network(model_file(source, resolve))


def load_settings(source: str | Path, resolve: Resolver | None = None) -> Any:
    """The ``ModelMeta`` of what ``--model`` names, without loading weights (an ensemble's is
    merged from its members' settings, as :func:`load_model` merges it)."""
    if is_ensemble_file(source):
        return load_ensemble(source, lambda m: (nn.Identity(), load_settings(m, resolve)))[1]
    return load_meta(model_file(source, resolve))


def resolved_threshold(cfg: Any, source: str | Path, resolve: Resolver | None = None) -> float:
    """``cfg.threshold`` (``infer.threshold``/``--threshold``) when set, else the model's own
    (calibrated at training; 0.5 for models saved without calibration)."""
    if cfg.threshold is not None:
        return float(cfg.threshold)
    return float(load_settings(source, resolve).threshold)
