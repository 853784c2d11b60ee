"""The search space, declared in ``params.yaml`` (``tune:``): check it, sample it, apply it.

Pure functions over :class:`~vesselseg.config.Params`; ``trial`` is anything with Optuna's
``suggest_categorical``/``suggest_float`` and ``params`` (an Optuna trial, or a stand-in in tests).
"""

from __future__ import annotations

from typing import Any

from vesselseg.config import Params, TuneConfig, with_values
from vesselseg.errors import ConfigError
from vesselseg.models.shapes import model_divisors

MIN_LR_RATIO = "train.min_lr_ratio"  # a trial param that is not a params.yaml key


def check_search_space(params: Params) -> None:
    """Raise :class:`ConfigError` for a search space that cannot be sampled or trained."""
    cfg = params.tune
    for name in ("crop_sizes", "schedules", "batch_sizes", "min_lr_ratios"):
        if not getattr(cfg, name):
            raise ConfigError(f"tune.{name} must list at least one choice")
    if "plateau" in cfg.schedules and not cfg.plateau_patiences:
        raise ConfigError("tune.plateau_patiences must list at least one choice")
    if "cosine" in cfg.schedules and not cfg.warmup_epochs:
        raise ConfigError("tune.warmup_epochs must list at least one choice")
    if cfg.plateau_factor_min > cfg.plateau_factor_max:
        raise ConfigError("tune.plateau_factor_min must be <= tune.plateau_factor_max")
    factor = max(model_divisors(params.model))  # a cubic crop: every axis's divisor (powers of 2)
    bad = [c for c in cfg.crop_sizes if c % factor]
    if bad:
        raise ConfigError(
            f"tune.crop_sizes: {bad[0]} is not a multiple of {factor} "
            f"({params.model.name} with depth {params.model.depth})"
        )


def suggest(trial: Any, cfg: TuneConfig) -> dict[str, Any]:
    """Sample one point of the search space; returns the trial's params (dotted names)."""
    trial.suggest_categorical("data.crop_size", list(cfg.crop_sizes))
    trial.suggest_float("train.lr", cfg.lr_min, cfg.lr_max, log=True)
    trial.suggest_categorical("train.batch_size", list(cfg.batch_sizes))
    trial.suggest_categorical(MIN_LR_RATIO, list(cfg.min_lr_ratios))
    schedule = trial.suggest_categorical("train.lr_schedule", list(cfg.schedules))
    if schedule == "plateau":
        trial.suggest_float(
            "train.lr_reduce_factor", cfg.plateau_factor_min, cfg.plateau_factor_max
        )
        trial.suggest_categorical("train.lr_patience", list(cfg.plateau_patiences))
    else:
        trial.suggest_categorical("train.warmup_epochs", list(cfg.warmup_epochs))
    return dict(trial.params)


def values_from_trial(trial_params: dict[str, Any]) -> dict[str, Any]:
    """Trial params → ``{"section.key": value}`` for :func:`vesselseg.config.with_values`."""
    values = {k: v for k, v in trial_params.items() if k != MIN_LR_RATIO}
    if MIN_LR_RATIO in trial_params and "train.lr" in trial_params:
        values["train.min_lr"] = trial_params["train.lr"] * trial_params[MIN_LR_RATIO]
    return values


def trial_params(params: Params, values: dict[str, Any], run_name: str) -> Params:
    """The params one trial trains with: sampled values and ``tune.max_epochs`` epochs."""
    return with_values(
        params, {**values, "train.max_epochs": params.tune.max_epochs, "train.run_name": run_name}
    )
