"""Open ``tune.study`` in its storage (create it, or load it to resume) and queue fixed trials."""

from __future__ import annotations

from typing import Any

from vesselseg.config import Params, TuneConfig
from vesselseg.tuning.storage import open_storage, resolve_storage

FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")


def make_pruner(cfg: TuneConfig) -> Any:
    """``tune.pruner`` as an Optuna pruner: median, hyperband or none."""
    import optuna

    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.pruner_warmup_epochs
        )
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=cfg.max_epochs, reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def open_study(params: Params, spec: str | None = None, seed: int | None = None) -> Any:
    """Create ``tune.study`` in the storage, or load it when it exists (resume)."""
    import optuna

    cfg = params.tune
    spec = spec or resolve_storage(cfg)
    return optuna.create_study(
        study_name=cfg.study,
        storage=open_storage(spec),
        sampler=optuna.samplers.TPESampler(seed=cfg.seed if seed is None else seed),
        pruner=make_pruner(cfg),
        direction="maximize" if params.train.monitor_mode == "max" else "minimize",
        load_if_exists=True,
    )


def enqueue_trial(params: Params, trial_values: dict[str, Any]) -> None:
    """Queue a trial with fixed params (trial param names, e.g. ``{"train.lr": 0.01}``).

    Queued trials run first; params left out are sampled. Values outside the search space are
    allowed (Optuna warns), e.g. to check a known configuration or a deliberately bad one.
    """
    study = open_study(params)
    study.enqueue_trial(dict(trial_values), skip_if_exists=False)
