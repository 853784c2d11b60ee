"""``vesselseg submit``: a Kaggle SenNet submission.csv from predicted masks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vesselseg.cli.app import app


@app.command()
def submit(
    pred_dir: Annotated[
        Path, typer.Argument(help="Folder of predicted masks (*.mask.npy/.tif/.zarr).")
    ],
    out: Annotated[Path, typer.Option(help="CSV to write.")] = Path("submission.csv"),
    threshold: Annotated[float, typer.Option(help="Threshold when given probabilities.")] = 0.5,
) -> None:
    """Write a Kaggle SenNet submission.csv (id,rle) from predicted masks.

    Rows are `<case>_<slice:04d>` with the run-length encoding of each z-slice (row-major,
    1-based starts, `1 0` for an empty slice); `<case>` is the mask file name before its first
    dot (`kidney_5.model.mask.npy` → `kidney_5`).

    Example: [bold]vesselseg submit predictions --out submission.csv[/bold]
    """
    from vesselseg.io import open_volume
    from vesselseg.kaggle import find_masks, write_submission
    from vesselseg.progress import progress_bar

    volumes = {name: open_volume(path) for name, path in find_masks(pred_dir).items()}
    slices = sum(v.shape[0] for v in volumes.values())
    with progress_bar("submit", total=slices, unit="slices") as advance:
        path = write_submission(volumes, out, threshold, on_slice=advance)
    typer.echo(f"wrote {path} ({len(volumes)} volumes)")
