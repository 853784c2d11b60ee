"""What every command shares: the params options, logging, and small option parsers.

Nothing here imports a heavy library at module level, so ``vesselseg --help`` stays instant.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from vesselseg.errors import ConfigError, MissingPathError

ParamsOpt = Annotated[
    Path, typer.Option("--params", "-p", help="params.yaml to read (defaults if absent).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a parameter: section.key=value (repeatable)."),
]
SpacingOpt = Annotated[
    str | None,
    typer.Option(help="Voxel size Z,Y,X (or S) of the input volumes, overriding their files."),
]
DataSpacingOpt = Annotated[
    str | None,
    typer.Option(
        help="Voxel size Z,Y,X (or S) of the training and validation volumes, overriding "
        "their files (data.spacing)."
    ),
]
UnitOpt = Annotated[
    str | None, typer.Option(help="Unit of --spacing: um or mm (default: the file's, else um).")
]
DEFAULT_PARAMS = Path("params.yaml")
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")  # set by DDP launchers


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False, rich_tracebacks=False)],
        force=True,
    )


def option_values(options: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    """``{"section.key": value}`` of the options that were given (None means not given).

    ``options`` is the command's ``locals()``; ``keys`` maps option names to params keys.
    Paths become strings, as in params.yaml.
    """
    values = {key: options[name] for name, key in keys.items()}
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None}


def load_params(params: Path, overrides: list[str] | None, values: dict[str, Any] | None = None):
    """params.yaml (or the built-in defaults when the default file is absent) + overrides."""
    from vesselseg import config

    if params.is_file():
        loaded = config.load_params(params, overrides or [])
    elif params == DEFAULT_PARAMS:
        loaded = config.apply_overrides(config.Params(), overrides or [])
    else:
        raise ConfigError(f"{params}: params file not found")
    resolved = config.with_values(loaded, values or {})
    if resolved.data.cache_dir:  # index/statistics caches: never written beside the data
        os.environ["VESSELSEG_CACHE_DIR"] = str(Path(resolved.data.cache_dir).resolve())
    return resolved


def best_threshold_from(metrics: Path) -> float:
    """``overall.best_threshold_val`` of a metrics.json written by ``evaluate --val-dir``."""
    import json

    if not metrics.is_file():
        raise MissingPathError(f"{metrics}: no such metrics file")
    try:
        value = json.loads(metrics.read_text())["overall"]["best_threshold_val"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{metrics}: no overall.best_threshold_val (run evaluate --val-dir)"
        ) from None
    if not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{metrics}: best_threshold_val {value!r} is not in (0, 1)")
    return float(value)


def parse_size(text: str | None, name: str = "--size") -> list[int] | None:
    """``"96"`` or ``"64,96,128"`` (also ``64x96x128``) → ``[z, y, x]``."""
    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{name}: expected N or Z,Y,X integers, got {text!r}") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) <= 0:
        raise ConfigError(f"{name}: expected N or Z,Y,X positive integers, got {text!r}")
    return values


def parse_voxel_size(text: str | None) -> list[float] | None:
    """``--spacing``: ``"2"`` or ``"5,1,1"`` (also ``5x1x1``) → ``[z, y, x]``; one-line error
    for anything but positive finite numbers."""
    if text is None:
        return None
    from vesselseg.io.spacing import SpacingError, parse_spacing

    parts = text.replace("x", ",").split(",")
    try:
        return list(parse_spacing(",".join(parts * 3) if len(parts) == 1 else text))
    except SpacingError:
        raise SpacingError(
            f"--spacing: expected S or Z,Y,X positive numbers, got {text!r}"
        ) from None


def parse_tags(tags: list[str] | None) -> dict[str, str]:
    """``["KEY=VALUE", …]`` → ``{KEY: VALUE}``; one-line error for an entry without ``=``."""
    bad = [t for t in tags or [] if "=" not in t]
    if bad:
        raise ConfigError(f"--tag {bad[0]!r}: expected KEY=VALUE")
    return dict(t.split("=", 1) for t in tags or [])


def is_worker_rank() -> bool:
    """True in a DDP process other than rank 0 (only rank 0 prints summaries)."""
    return any(os.environ.get(k, "0") != "0" for k in RANK_VARIABLES)


def spacing_values(spacing: str | None, unit: str | None, section: str = "infer") -> dict[str, Any]:
    """``--spacing Z,Y,X`` (or ``S``) and ``--unit`` as ``infer.spacing`` / ``infer.unit``
    (``section="data"``: ``data.spacing`` / ``data.unit``, the training volumes' voxel size).

    Bad values (not one or three numbers, ≤ 0, NaN, an unknown unit) are a one-line
    :class:`~vesselseg.io.SpacingError` before anything is read; ``--unit nm`` converts the
    values to ``um``.
    """
    from vesselseg.io.spacing import voxel_size

    values = parse_voxel_size(spacing)
    if values is None:
        if unit is not None:
            raise ConfigError("--unit: give --spacing Z,Y,X with it")
        return {}
    if unit is None:
        return {f"{section}.spacing": values}
    size = voxel_size(values, unit, where="--unit")
    return {f"{section}.spacing": list(size.spacing), f"{section}.unit": size.unit}
