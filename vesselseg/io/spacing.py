"""Voxel size: the physical spacing ``(z, y, x)`` of a volume and its unit.

A volume's spacing comes from its file (NIfTI header, NGFF transforms, TIFF tags, ITK/NRRD
headers) or from a ``<file>.json`` sidecar (``{"spacing": [z, y, x], "unit": "um"}``); a user
can override it (``--spacing Z,Y,X``). Units are ``"um"`` (micrometre) or ``"mm"``
(millimetre): spellings such as ``µm``, ``micron`` or ``millimeter`` are normalised, and
``nm``/``cm``/``m`` are converted.

When nothing gives a spacing, a volume has :data:`UNKNOWN`: spacing ``(1, 1, 1)`` (one voxel)
with ``known=False``, so later stages can tell "not measured" from "measured as 1 µm". An
unknown spacing agrees with any other in :func:`check_same_spacing`.

Rules for spacings read from files (:func:`from_file`): values are rounded to 6 significant
digits (headers store float32 or rationals: 0.994 comes back as 0.99400002); a spacing given
without a unit takes the format's convention (``mm`` for NIfTI, MetaImage and NRRD, ``um`` for
TIFF and OME-Zarr), except that all-ones without a unit is taken as "not given" (the default a
writer puts there when it knows nothing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from vesselseg.errors import VesselsegError

UNITS = ("um", "mm")
# accepted spellings -> (canonical unit, factor that converts a value to it)
_UNIT_ALIASES: dict[str, tuple[str, float]] = {
    **dict.fromkeys(
        (
            "um",
            "µm",
            "μm",
            "\\u00b5m",
            "micron",
            "microns",
            "micrometer",
            "micrometre",
            "micrometers",
            "micrometres",
        ),  # fmt: skip
        ("um", 1.0),
    ),
    **dict.fromkeys(("nm", "nanometer", "nanometre", "nanometers", "nanometres"), ("um", 1e-3)),
    **dict.fromkeys(("mm", "millimeter", "millimetre", "millimeters", "millimetres"), ("mm", 1.0)),
    **dict.fromkeys(("cm", "centimeter", "centimetre", "centimeters"), ("mm", 10.0)),
    **dict.fromkeys(("m", "meter", "metre", "meters", "metres"), ("mm", 1000.0)),
}


class SpacingError(VesselsegError):
    """A voxel size is not three positive finite numbers, or its unit is unknown."""


class SpacingMismatchError(SpacingError):
    """Two volumes that must align (image and mask) disagree in voxel size or unit."""


@dataclass(frozen=True)
class VoxelSize:
    """The spacing ``(z, y, x)`` of a volume in ``unit``; ``known=False`` when not measured."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    unit: str = "um"
    known: bool = False

    def describe(self) -> str:
        """``5 x 0.994 x 0.994 um (z, y, x)``, or ``unknown`` when not measured."""
        if not self.known:
            return "unknown"
        return " x ".join(f"{v:g}" for v in self.spacing) + f" {self.unit} (z, y, x)"

    def as_json(self) -> dict[str, object]:
        """The sidecar fields: ``{"spacing": [z, y, x], "unit": "um"}``."""
        return {"spacing": list(self.spacing), "unit": self.unit}


UNKNOWN = VoxelSize()


@dataclass(frozen=True)
class BadSpacing:
    """A spacing in a file's header that is not valid (zero, negative, NaN).

    Readers return it instead of raising, so that ``--spacing`` can still override a broken
    header; :func:`~vesselseg.io.readers.open_volume` raises :class:`SpacingError` otherwise.
    """

    message: str


FileSpacing = VoxelSize | BadSpacing | None  # what a file's metadata gives


def normalise_unit(text: str, where: str = "spacing") -> tuple[str, float]:
    """``"µm"`` → ``("um", 1.0)``, ``"nm"`` → ``("um", 0.001)``; :class:`SpacingError` if unknown.

    The factor converts a value in ``text`` units to the returned canonical unit.
    """
    key = str(text).strip().lower()
    if key not in _UNIT_ALIASES:
        raise SpacingError(f"{where}: unknown unit {text!r} (use um or mm)")
    return _UNIT_ALIASES[key]


def check_spacing(values: object, where: str = "spacing") -> tuple[float, float, float]:
    """Three positive finite numbers ``(z, y, x)``; :class:`SpacingError` naming ``where``."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise SpacingError(f"{where}: spacing must be three numbers z, y, x, got {values!r}")
    if len(values) != 3:
        raise SpacingError(f"{where}: spacing needs three values z, y, x, got {len(values)}")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value)  # numpy scalars
            except (TypeError, ValueError):
                raise SpacingError(f"{where}: spacing value {value!r} is not a number") from None
        value = float(value)
        if not math.isfinite(value) or value <= 0:
            raise SpacingError(f"{where}: spacing values must be positive and finite, got {value}")
        out.append(value)
    return out[0], out[1], out[2]


def voxel_size(spacing: object, unit: str = "um", where: str = "spacing") -> VoxelSize:
    """A checked, known :class:`VoxelSize` from user or sidecar values (unit converted)."""
    canonical, factor = normalise_unit(unit, where)
    values = check_spacing(spacing, where)
    return VoxelSize(tuple(v * factor for v in values), canonical, True)  # type: ignore[arg-type]


def parse_spacing(text: str) -> tuple[float, float, float]:
    """``"5,0.994,0.994"`` (the CLI's ``--spacing Z,Y,X``) → ``(5.0, 0.994, 0.994)``."""
    parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise SpacingError(f"--spacing: expected Z,Y,X numbers, got {text!r}") from None
    return check_spacing(values, "--spacing")


def from_file(
    spacing: Sequence[float] | None, unit: str | None, default_unit: str, where: str
) -> FileSpacing:
    """The voxel size a file's metadata gives, or None when it gives none (see module doc).

    A spacing present but invalid (zero, negative, NaN) is a :class:`BadSpacing`: the file's
    header is wrong, and ``--spacing`` is the way round it.
    """
    if spacing is None:
        return None
    if unit is None or not str(unit).strip():
        if all(float(v) == 1.0 for v in spacing):
            return None
        unit = default_unit
    try:
        canonical, factor = normalise_unit(unit, where)
    except SpacingError:
        return None  # "pixel", "inch"...: the file has no physical voxel size
    try:
        values = check_spacing(list(spacing), where)
    except SpacingError as exc:
        return BadSpacing(f"{exc} (override it with --spacing Z,Y,X)")
    rounded = tuple(float(f"{v * factor:.6g}") for v in values)
    return VoxelSize(rounded, canonical, True)  # type: ignore[arg-type]


def same_spacing(a: VoxelSize, b: VoxelSize, rel_tol: float = 1e-4) -> bool:
    """True when both are known and equal (within ``rel_tol``) in the same unit, or either is
    unknown."""
    if not (a.known and b.known):
        return True
    return a.unit == b.unit and all(
        math.isclose(x, y, rel_tol=rel_tol) for x, y in zip(a.spacing, b.spacing)
    )


def check_same_spacing(a: VoxelSize, b: VoxelSize, a_name: str, b_name: str) -> None:
    """Raise :class:`SpacingMismatchError` naming both files unless ``a`` and ``b`` agree.

    An unknown spacing (a mask file without voxel size) agrees with anything.
    """
    if same_spacing(a, b):
        return
    if a.unit != b.unit:
        raise SpacingMismatchError(
            f"{b_name}: unit {b.unit} does not match unit {a.unit} of {a_name}"
        )
    raise SpacingMismatchError(
        f"{b_name}: spacing {b.describe()} does not match spacing {a.describe()} of {a_name}"
    )
