"""The layout of a pseudo-label folder: ``pseudo.json`` (provenance) beside the masks.

Written by :mod:`vesselseg.pseudo`; read here, at the I/O layer, so training can find
pseudo-labelled samples without importing the code that makes them.
"""

from __future__ import annotations

import json
from pathlib import Path

from vesselseg.errors import DatasetError, MissingPathError
from vesselseg.io.dataset import Sample, check_id

PROVENANCE = "pseudo.json"
FORMAT = "vesselseg-pseudo/1"


def discover_pseudo(folder: str | Path) -> list[Sample]:
    """The samples of a pseudo-label folder: each pseudo mask with the image it labels."""
    folder = Path(folder)
    meta_path = folder / PROVENANCE
    if not meta_path.is_file():
        raise MissingPathError(f"{meta_path}: no pseudo-label provenance (run vesselseg pseudo)")
    try:
        meta = json.loads(meta_path.read_text())
        volumes = meta["volumes"]
    except (ValueError, KeyError):
        raise DatasetError(f"{meta_path}: not a vesselseg pseudo-label file") from None
    if meta.get("format") != FORMAT:
        raise DatasetError(f"{meta_path}: unknown format {meta.get('format')!r}")
    samples = []
    for sample_id, entry in sorted(volumes.items()):
        mask = folder / Path(entry["mask"]).name
        image = Path(entry["image"])
        for path in (mask, image):
            if not path.exists():
                raise MissingPathError(f"{path}: listed in {meta_path} but missing")
        samples.append(Sample(check_id(f"pseudo-{sample_id}", meta_path), image, mask))
    return samples
