"""``vesselseg view``: look at a prediction in napari, or as a PNG without a display."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vesselseg.cli.app import app


@app.command()
def view(
    pred: Annotated[
        Path, typer.Argument(help="Probabilities written by predict (npy, zarr, OME-Zarr...).")
    ],
    image: Annotated[Path | None, typer.Option(help="The input volume, shown below.")] = None,
    mask: Annotated[
        Path | None, typer.Option(help="The mask [default: the .mask file beside PRED].")
    ] = None,
    png: Annotated[
        Path | None, typer.Option(help="Write this PNG instead of opening napari.")
    ] = None,
) -> None:
    """Image, probability and mask as napari layers at the voxel size (pip install
    'vesselseg[viewer]'); without napari or a display, or with --png, a PNG of the central
    orthogonal slices and the maximum projections (PRED.png beside PRED by default).

    Example: [bold]vesselseg view predictions/X.stage2.prob.ome.zarr --image data/X.zarr[/bold]
    """
    from vesselseg.view import view as show

    how, out = show(pred, image, mask, png)
    typer.echo(f"wrote {out}" if how == "png" else f"viewed {pred} in napari")
