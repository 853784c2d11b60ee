"""Model commands: ``register`` (MLflow registry), ``ensemble`` (average models), ``models``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vesselseg.cli.app import app
from vesselseg.cli.common import (
    DEFAULT_PARAMS,
    ParamsOpt,
    SetOpt,
    load_params,
    option_values,
    parse_tags,
    setup_logging,
)
from vesselseg.errors import ConfigError


@app.command()
def register(
    model: Annotated[
        Path, typer.Option("--model", "-m", help="Saved model NAME.pt (+ NAME.json) or .ckpt.")
    ],
    metrics: Annotated[
        Path | None,
        typer.Option(help="metrics.json of evaluate (else the validation score of training)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Registered model (register.name).")] = None,
    alias: Annotated[str | None, typer.Option(help="New version's alias (register.alias).")] = None,
    metric: Annotated[
        str | None, typer.Option(help="Metric to compare, higher is better (register.metric).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Promote to champion whatever the metric.")] = False,
    tag: Annotated[
        list[str] | None, typer.Option(help="Extra version tag KEY=VALUE (repeatable).")
    ] = None,
    record: Annotated[
        Path | None, typer.Option(help="Write what happened as JSON (a DVC stage output).")
    ] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Log a model as an MLflow pyfunc, register a new version, alias it challenger and promote
    it to champion when its metric beats the champion's (or --force).

    Example: [bold]vesselseg register --model models/model.pt --metrics metrics.json[/bold]
    """
    setup_logging()
    keys = {"name": "register.name", "alias": "register.alias", "metric": "register.metric"}
    p = load_params(params, overrides, option_values(locals(), keys))
    tags = parse_tags(tag)
    from vesselseg.registry import register_model

    r = p.register
    result = register_model(
        model, metrics, r.name, r.alias, r.champion_alias, r.metric, force, tags,
        params=p, experiment=p.train.experiment, test_dir=r.test_dir or None,
    )  # fmt: skip
    for line in result.lines():
        typer.echo(line)
    if record is not None:
        import dataclasses

        from vesselseg.io.atomic import write_json

        write_json(record, dataclasses.asdict(result))


@app.command()
def ensemble(
    members: Annotated[
        list[str],
        typer.Argument(metavar="MODEL[:WEIGHT]...", help="Two or more saved models or URIs."),
    ],
    out: Annotated[Path, typer.Option(help="Ensemble file to write (.json).")] = Path(
        "models/ensemble.json"
    ),
) -> None:
    """Average saved models (2D multiview and 3D) into one: an ensemble file usable wherever a
    model is (predict, evaluate, pseudo). Probabilities are averaged with the weights
    (default 1 each; normalised to sum 1); members must share their intensity percentiles.

    Example: [bold]vesselseg ensemble models/stage2.pt models/unet2d.pt:0.5 --out
    models/ensemble.json[/bold]
    """
    setup_logging()
    if out.suffix != ".json":
        raise ConfigError(f"--out {out}: an ensemble file ends in .json")
    from vesselseg.inference.ensemble import parse_member, write_ensemble
    from vesselseg.registry import resolve_model

    parsed = [parse_member(text) for text in members]
    path = write_ensemble(parsed, out, resolve_model)
    total = sum(w for _, w in parsed)
    shares = ", ".join(f"{m} {w / total:.2f}" for m, w in parsed)
    typer.echo(f"ensemble of {len(parsed)} models ({shares}) written to {path}")


@app.command()
def models(
    name: Annotated[str | None, typer.Option(help="Registered model (register.name).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """List registered model versions, their aliases and metrics.

    Example: [bold]vesselseg models --name vesselseg[/bold]
    """
    p = load_params(params, overrides, {"register.name": name})
    from vesselseg.registry import format_models, list_models

    for line in format_models(p.register.name, list_models(p.register.name)):
        typer.echo(line)
