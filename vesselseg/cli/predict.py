"""Commands that run a model over volumes: ``predict``, ``evaluate`` and ``pseudo``.

A registry URI (``models:/NAME@ALIAS``) is resolved here, at the top layer, and the resolver is
handed down for ensembles whose members are URIs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vesselseg.cli.app import app
from vesselseg.cli.common import (
    DEFAULT_PARAMS,
    ParamsOpt,
    SetOpt,
    SpacingOpt,
    UnitOpt,
    best_threshold_from,
    load_params,
    option_values,
    parse_size,
    setup_logging,
    spacing_values,
)
from vesselseg.errors import ConfigError

ARCHITECTURES = ("vnet", "unet", "unet2d")
INFER_KEYS = {
    "overlap": "infer.overlap",
    "border": "infer.border",
    "blend": "infer.blend",
    "tta": "infer.tta",
    "precision": "infer.precision",
    "compile_net": "infer.compile",
    "skip_empty": "infer.skip_empty",
    "tissue_threshold": "infer.tissue_threshold",
    "tissue_mask": "infer.tissue_mask",
    "threshold": "infer.threshold",
    "prob_dtype": "infer.prob_dtype",
    "out_format": "infer.out_format",
    "naming": "infer.naming",
    "resample": "infer.resample",
}


def model_and_input(
    input_path: Path | None, data_dir: Path | None, model: str | None, ensemble: list[str] | None
) -> tuple[str | None, Path, str | None]:
    """``(model, input, architecture)`` from the ways a user may spell them.

    Seed 000 writes ``predict CHECKPOINT --data_dir DIR [--model {vnet,unet}]``: the positional
    is then the checkpoint and ``--model`` names its architecture (checked against the file).
    """
    arch = None
    if model in ARCHITECTURES and not Path(model).exists():
        arch, model = model, None
        if input_path is None or data_dir is None:
            raise ConfigError(
                f"--model {arch}: give the model file; its architecture is read from it"
            )
    if model is None and input_path is not None and data_dir is not None and not ensemble:
        model, input_path = str(input_path), None  # seed 000: CHECKPOINT --data-dir DIR
    source = input_path or data_dir
    if source is None:
        raise ConfigError("predict: give an INPUT volume or folder (or --data-dir)")
    if model is not None and ensemble:
        raise ConfigError("give --model or --ensemble, not both")
    if model is None and not ensemble:
        raise ConfigError("--model: give a saved model file (NAME.pt with NAME.json, or .ckpt)")
    return model, source, arch


def check_architecture(model: Path, arch: str | None) -> None:
    """Refuse a checkpoint whose network is not the architecture the user named."""
    if arch is None:
        return
    from vesselseg.bundle import load_meta

    saved = load_meta(model).model.get("name")
    if saved != arch:
        raise ConfigError(f"--model {arch}: {model} holds a {saved} network, not a {arch}")


def chosen_threshold(threshold: float | None, threshold_from: Path | None) -> float | None:
    """``--threshold``, or the best validation threshold of ``--threshold-from`` (not both)."""
    if threshold_from is None:
        return threshold
    if threshold is not None:
        raise ConfigError("give --threshold or --threshold-from, not both")
    return best_threshold_from(threshold_from)


def batch_value(text: str | None) -> dict[str, Any]:
    """``--batch-size``: a positive integer or ``auto`` (one-line error otherwise)."""
    if text is None:
        return {}
    if text == "auto":
        return {"infer.batch_size": "auto"}
    try:
        return {"infer.batch_size": int(text)}
    except ValueError:
        raise ConfigError(
            f"--batch-size: expected a positive integer or auto, got {text!r}"
        ) from None


def resolver() -> Any:
    """The registry's ``resolve_model`` (imported only when a command needs it)."""
    from vesselseg.registry import resolve_model

    return resolve_model


@app.command()
def predict(
    input_path: Annotated[
        Path | None, typer.Argument(metavar="INPUT", help="A volume or a folder of volumes.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", "--data_dir", help="Same as INPUT (seed 000).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model file NAME.pt (+ NAME.json), .ckpt, ensemble .json or URI."
        ),
    ] = None,
    ensemble: Annotated[
        list[str] | None,
        typer.Option(
            help="Average models instead of --model: MODEL[:WEIGHT], repeat (2D and 3D mix)."
        ),
    ] = None,
    save_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir", "--save-dir", "--save_dir", help="Output folder (infer.out_dir)."
        ),
    ] = None,
    tile_size: Annotated[
        str | None,
        typer.Option("--tile-size", "--crop-size", "--crop_size", help="Window: N or Z,Y,X."),
    ] = None,
    overlap: Annotated[float | None, typer.Option(help="Window overlap fraction [0, 1).")] = None,
    border: Annotated[
        int | None, typer.Option(help="Keep only each window's interior (seed 000); 0 = off.")
    ] = None,
    blend: Annotated[str | None, typer.Option(help="gaussian or constant.")] = None,
    batch_size: Annotated[
        str | None, typer.Option(help="Windows per network call, or auto (device memory).")
    ] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="Average 8 flips.")] = None,
    precision: Annotated[
        str | None, typer.Option(help="32, bf16 or fp16 (autocast; fp16 on CUDA only).")
    ] = None,
    compile_net: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="torch.compile the network.")
    ] = None,
    skip_empty: Annotated[
        bool | None,
        typer.Option(
            "--skip-empty/--no-skip-empty",
            help="Skip windows without tissue (default: on with a tissue threshold or mask).",
        ),
    ] = None,
    tissue_threshold: Annotated[
        float | None, typer.Option(help="Raw intensity from which a voxel is tissue.")
    ] = None,
    tissue_mask: Annotated[
        Path | None, typer.Option(help="Tissue mask volume (non-zero), or a folder by input name.")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="Mask = probability >= this.")] = None,
    threshold_from: Annotated[
        Path | None, typer.Option(help="metrics.json of `evaluate --val-dir`: its best threshold.")
    ] = None,
    prob_dtype: Annotated[str | None, typer.Option(help="float32, float16 or uint8.")] = None,
    out_format: Annotated[
        str | None, typer.Option(help="npy, zarr, ome-zarr, tiff or nifti.")
    ] = None,
    naming: Annotated[
        str | None, typer.Option(help="default (X.MODEL.prob.npy) or seed (CKPT.X.npy.pred.npy).")
    ] = None,
    file_type: Annotated[
        str | None, typer.Option("--file-type", "--file_type", help="npy, raw, tiff or zarr.")
    ] = None,
    shape: Annotated[str | None, typer.Option(help="Raw input: Z,Y,X.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Raw input: numpy dtype.")] = None,
    spacing: SpacingOpt = None,
    unit: UnitOpt = None,
    resample: Annotated[
        bool | None,
        typer.Option(
            "--resample/--no-resample",
            help="Predict inputs at another voxel size on the model's (infer.resample).",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue interrupted outputs; skip finished ones.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    max_buffer_mib: Annotated[
        float, typer.Option(help="Memory for blending buffers; larger planes are cut.")
    ] = 1024.0,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Predict only shard i/n (0-based, 0 <= i < n) of the sorted inputs, or "
            "'slurm' for $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT. Fewer inputs than "
            "shards: each volume is cut into z-blocks written to one shared store "
            "(--out-format zarr or ome-zarr)."
        ),
    ] = None,
    finalize: Annotated[
        bool,
        typer.Option(
            help="Predict nothing: finish the shared stores of a sharded run whose z-blocks "
            "are all done (pyramids, metadata, final names); the last shard does it itself."
        ),
    ] = False,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Streamed sliding-window inference on volumes of any size (bounded memory, resumable).

    Writes X.MODEL.prob.npy (probabilities) and X.MODEL.mask.npy (thresholded) per input.
    An input whose voxel size differs from the model's training spacing is predicted at the
    model's spacing and written back at its own grid (--no-resample: predicted as is).
    With --ensemble the models' probabilities are averaged (weights normalised to sum 1) and
    the ensemble is saved as SAVE_DIR/ensemble.json (outputs X.ensemble.prob.npy).

    Example: [bold]vesselseg predict data/raw/test --model models/best.pt --tta[/bold]

    Example: [bold]vesselseg predict data/raw/test --ensemble models/stage2.pt:0.5
    --ensemble models/unet2d.pt:0.5[/bold]

    Example (one volume, 4 workers): [bold]vesselseg predict big.zarr -m models/stage2.pt
    --out-format ome-zarr --shard 0/4 --resume[/bold] (and 1/4, 2/4, 3/4, anywhere)
    """
    setup_logging()
    model, source, arch = model_and_input(input_path, data_dir, model, ensemble)
    threshold = chosen_threshold(threshold, threshold_from)
    values = {
        **option_values(locals(), INFER_KEYS),
        **batch_value(batch_size),
        "infer.tile_size": parse_size(tile_size, "--tile-size"),
        **spacing_values(spacing, unit),
    }
    p = load_params(params, overrides, values)
    from vesselseg.inference.inputs import parse_shard
    from vesselseg.inference.run import predict_path

    shard_of = parse_shard(shard)  # a bad --shard fails before anything is written
    if ensemble:
        from vesselseg.inference.ensemble import parse_member, write_ensemble

        folder = save_dir if save_dir is not None else Path(p.infer.out_dir)
        members = [parse_member(m) for m in ensemble]
        model = str(write_ensemble(members, folder / "ensemble.json", resolver()))
    model_path = resolver()(model)
    check_architecture(model_path, arch)
    raw_shape = tuple(parse_size(shape, "--shape")) if shape else None
    summary = predict_path(
        source, model_path, save_dir, p.infer, file_type=file_type, shape=raw_shape, dtype=dtype,
        resume=resume, device=device, max_buffer_mib=max_buffer_mib, shard=shard_of,
        resolve=resolver(), finalize=finalize,
    )  # fmt: skip
    typer.echo(summary.line())


def surface_tolerance(physical: float | None, voxels: float | None) -> tuple[float, bool]:
    """``(tolerance, in_voxels)`` from ``--tolerance`` (the volume's unit) or
    ``--tolerance-voxels``; one-line errors for both or a negative value."""
    if physical is not None and voxels is not None:
        raise ConfigError("give --tolerance or --tolerance-voxels, not both")
    in_voxels = voxels is not None
    value, name = (voxels, "--tolerance-voxels") if in_voxels else (physical, "--tolerance")
    if value is not None and value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")
    return float(value or 0.0), in_voxels


def evaluation_line(s: Any) -> str:
    """One line summing up an evaluation."""
    o = s.overall
    best = (
        "" if s.best_threshold_val is None else f"; best val threshold {s.best_threshold_val:.2f}"
    )
    cl = "n/a" if o.get("cldice") is None else f"{o['cldice']:.4f}"
    sd = "n/a" if o.get("surface_dice") is None else f"{o['surface_dice']:.4f}"
    run = f"; MLflow run {s.run_id}" if s.run_id else ""
    return (
        f"{o['volumes']} volumes: dice {o['dice']:.4f}, clDice {cl}, surface Dice {sd}"
        f"{best}; wrote {s.metrics_path} and {s.plots_dir}/{run}"
    )


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Saved model (.pt) or ensemble (.json) to score.")],
    data_dir: Annotated[
        Path, typer.Option(help="Volumes with truth_X (dense) or mask_X (sparse).")
    ] = Path("data/raw/test"),
    pred_dir: Annotated[
        Path | None, typer.Option(help="Predictions (missing ones are made).")
    ] = None,
    val_dir: Annotated[
        Path | None, typer.Option(help="Validation volumes for the best threshold.")
    ] = None,
    metrics: Annotated[
        Path | None, typer.Option(help="Metrics file to write [default: metrics/DATA.MODEL.json].")
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Folder for pr.csv and PNGs [default: plots/DATA.MODEL].")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="Mask threshold.")] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(help="Surface Dice tolerance in each volume's unit (um or mm) [default: 0]."),
    ] = None,
    tolerance_voxels: Annotated[
        float | None,
        typer.Option(help="Surface Dice tolerance in voxels, on unit voxels (the old meaning)."),
    ] = None,
    thresholds: Annotated[int, typer.Option(help="Thresholds in the PR curve.")] = 21,
    mlflow: Annotated[bool, typer.Option(help="Log to MLflow.")] = True,
    spacing: SpacingOpt = None,
    unit: UnitOpt = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Dice, IoU, precision/recall, clDice, surface Dice and components against truth.

    Writes the metrics file, pr.csv, the PR curve and pictures (TP/FP/FN projections and
    slices) and logs them to an MLflow evaluation run nested under the model's training run.
    Without --metrics/--plots they go to metrics/DATA.MODEL.json and plots/DATA.MODEL/, so an
    evaluation never overwrites another (nor a DVC stage's metrics.json).

    Example: [bold]vesselseg evaluate --model models/stage1.pt --val-dir data/raw/val[/bold]
    """
    setup_logging()
    if thresholds < 3:
        raise ConfigError(f"--thresholds must be >= 3, got {thresholds}")
    tolerance_of = surface_tolerance(tolerance, tolerance_voxels)
    values = {"infer.threshold": threshold, **spacing_values(spacing, unit)}
    p = load_params(params, overrides, values)
    from vesselseg.evaluation import evaluate_dataset

    s = evaluate_dataset(
        data_dir, resolver()(str(model)), pred_dir or Path(p.infer.out_dir), p.infer, metrics,
        plots, val_dir, tolerance_of[0], thresholds, mlflow, resolve=resolver(),
        experiment=p.train.experiment, tolerance_in_voxels=tolerance_of[1],
    )  # fmt: skip
    typer.echo(evaluation_line(s))


@app.command()
def pseudo(
    model: Annotated[
        str, typer.Option(help="Saved model (.pt), ensemble (.json) or models:/NAME@ALIAS.")
    ],
    in_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", "--in-dir", help="Unlabelled volumes (default pseudo.in_dir)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option(help="Output folder (default pseudo.out_dir).")
    ] = None,
    hi: Annotated[float | None, typer.Option(help="Vessel where p >= hi.")] = None,
    lo: Annotated[float | None, typer.Option(help="Background where p <= lo.")] = None,
    min_component_voxels: Annotated[
        int | None, typer.Option(help="Drop smaller vessel components.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Resume interrupted predictions.")] = False,
    spacing: SpacingOpt = None,
    unit: UnitOpt = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    overrides: SetOpt = None,
) -> None:
    """Pseudo labels for unlabelled volumes: 1 where p >= hi, 2 where p <= lo, 0 elsewhere.

    Writes OUT/mask_X.npy and OUT/pseudo.json (model, thresholds, date, source images);
    train on them with `vesselseg train --pseudo OUT`.

    Example: [bold]vesselseg pseudo --model models/stage1.pt --out-dir data/pseudo[/bold]
    """
    setup_logging()
    keys = {"hi": "pseudo.hi", "lo": "pseudo.lo"}
    keys["min_component_voxels"] = "pseudo.min_component_voxels"
    values = {**option_values(locals(), keys), **spacing_values(spacing, unit)}
    p = load_params(params, overrides, values)
    from vesselseg.pseudo import pseudo_label_dataset

    s = pseudo_label_dataset(
        in_dir or Path(p.pseudo.in_dir), resolver()(model), out_dir or Path(p.pseudo.out_dir),
        p.pseudo, p.infer, resume, resolve=resolver(),
    )  # fmt: skip
    vessel = sum(c.vessel for c in s.volumes.values())
    typer.echo(
        f"pseudo-labelled {len(s.volumes)} volumes ({vessel:,} vessel voxels) into "
        f"{s.out_dir}; provenance {s.out_dir / 'pseudo.json'}"
    )
