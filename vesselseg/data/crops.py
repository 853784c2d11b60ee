"""Random 3D crops that always contain annotated voxels.

A crop is drawn in O(1) of the annotation: one random indexed voxel from the
:class:`~vesselseg.data.annotation_index.AnnotationIndex`, one uniformly random crop origin
among those that keep the crop inside the volume and contain that voxel, and one region read
of the label (and of the image). Nothing depends on how sparse the annotation is.

Crops at a target spacing (``step`` = source voxels per crop voxel, see
:mod:`vesselseg.data.target_spacing`) and zoomed crops (``scale_range``) are resampled on the
fly: the crop is a :class:`~vesselseg.data.resample.CropBox` whose samples include the drawn
annotated voxel exactly (:func:`~vesselseg.data.resample.box_containing`), read from the
source box it needs plus a 1-voxel margin (:func:`read_box`), trilinear for the image and
nearest for the label. A sampler with ``step`` 1 and no zoom reads plain integer-origin crops,
exactly as before resampling existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vesselseg.config import as_triple
from vesselseg.data.annotation_index import BACKGROUND, VESSEL, AnnotationIndex
from vesselseg.data.oblique import (
    ObliqueBox,
    oblique_box,
    random_rotation,
    resample_oblique,
)
from vesselseg.data.resample import (
    CropBox,
    box_containing,
    linear_resample,
    nearest_resample,
    random_box,
)
from vesselseg.errors import ShapeMismatchError

Triple = tuple[int, int, int]
Where = Triple | CropBox | ObliqueBox  # a plain crop's origin, or a resampled crop's box


def crop_origin_containing(
    point: Sequence[int],
    crop_size: Sequence[int],
    volume_shape: Sequence[int],
    rng: np.random.Generator,
) -> Triple:
    """A crop origin ``(z, y, x)``, uniform over the origins whose crop contains ``point``.

    Along each axis the crop ``[o, o + c)`` lies inside ``[0, s)`` and contains ``p``. Where
    the volume is smaller than the crop (``s <= c``) the origin is 0 (:func:`read_crop` pads).
    """
    origin = []
    for p, c, s in zip(point, crop_size, volume_shape, strict=True):
        if s <= c:
            origin.append(0)
            continue
        low, high = max(0, p - c + 1), min(p, s - c)
        origin.append(int(rng.integers(low, high + 1)))
    return origin[0], origin[1], origin[2]


def random_origin(
    crop_size: Sequence[int], volume_shape: Sequence[int], rng: np.random.Generator
) -> Triple:
    """A uniformly random origin of a crop inside the volume (0 where the volume is smaller)."""
    o = [
        int(rng.integers(0, max(s - c, 0) + 1))
        for c, s in zip(crop_size, volume_shape, strict=True)
    ]
    return o[0], o[1], o[2]


def slab_size(crop_size: Sequence[int], axis: int, thickness: int) -> Triple:
    """``crop_size`` with side ``axis`` replaced by ``thickness`` (a stack of 2D slices)."""
    size = [int(c) for c in crop_size]
    size[axis] = int(thickness)
    return size[0], size[1], size[2]


def read_crop(
    volume: Any, origin: Sequence[int], crop_size: Sequence[int], pad_value: float = 0
) -> np.ndarray:
    """Read ``volume[o:o + c]`` ``(z, y, x)``, padding with ``pad_value`` outside the volume.

    Only the part inside the volume is read. The result has shape ``crop_size`` and the
    volume's dtype.
    """
    shape = volume.shape
    lo = [max(0, o) for o in origin]
    hi = [min(s, o + c) for o, c, s in zip(origin, crop_size, shape, strict=True)]
    region = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    if all(b - a == c for a, b, c in zip(lo, hi, crop_size, strict=True)):
        return np.array(volume[region], order="C", copy=True)  # never a view of a memmap
    out = np.full(tuple(crop_size), pad_value, dtype=np.dtype(volume.dtype))
    if all(b > a for a, b in zip(lo, hi, strict=True)):
        dest = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, origin, strict=True))
        out[dest] = volume[region]
    return out


def read_box(volume: Any, box: CropBox, linear: bool, pad_value: float = 0) -> np.ndarray:
    """The resampled crop ``box`` of ``volume``: trilinear float32 (``linear``: images) or
    nearest neighbour in the volume's dtype (labels).

    Only the source box the samples touch plus a 1-voxel margin is read
    (:meth:`~vesselseg.data.resample.CropBox.source_region`); outside the volume the source is
    ``pad_value``.
    """
    origin, size = box.source_region()
    region = read_crop(volume, origin, size, pad_value)
    coords = [box.coordinates(a) - origin[a] for a in range(3)]
    return linear_resample(region, coords) if linear else nearest_resample(region, coords)


def read_oblique(volume: Any, box: ObliqueBox, linear: bool, pad_value: float = 0) -> np.ndarray:
    """The rotated crop ``box`` of ``volume`` (see :mod:`vesselseg.data.oblique`): only the
    source box its samples touch, plus a margin, is read; outside the volume the source is
    ``pad_value``."""
    coords = box.coordinates()
    origin, size = box.source_region(coords)
    region = read_crop(volume, origin, size, pad_value)
    local = coords - np.asarray(origin, dtype=np.float64).reshape(3, 1, 1, 1)
    return resample_oblique(region, local, linear)


class CropSampler:
    """Draw ``(image, label)`` crops of ``crop_size`` from one volume, around annotation.

    With probability ``1 - background_crop_fraction`` a *vessel crop*: a random indexed vessel
    voxel and a random origin containing it; if the crop holds fewer than
    ``min_vessel_voxels`` vessel voxels, up to ``max_tries`` new points are tried and, if none
    is enough, the crop with the most vessel voxels is returned (it always holds at least one
    indexed vessel voxel). Otherwise a *background crop* containing a random annotated
    background voxel. A volume without annotated vessel gives background crops, one without
    annotated background gives vessel crops, one without annotation random crops.

    Labels outside the volume are padded with 0 (not annotated), the image with
    ``image_pad_value``. With ``center_axis`` (slab crops for 2.5D models, thin along that
    axis) the drawn voxel sits on the crop's centre slice along ``center_axis``, so the slice
    a 2D model is trained on always holds it.

    ``step`` ``(z, y, x)`` is the crop's sampling step in source voxels (target spacing /
    volume spacing) and ``scale_range`` ``r`` zooms each crop by a factor ``k`` drawn
    uniformly from ``[1 - r, 1 + r]`` (the source box is ``k`` times larger, so structures
    look ``1 / k`` times as large). Either makes the crop a resampled
    :class:`~vesselseg.data.resample.CropBox` (trilinear image, nearest label). The drawn
    voxel is always one of the crop's samples, so the vessel guarantee survives resampling:
    nearest-neighbour can drop *other* thin annotations between samples, never the drawn one
    (no re-draw is needed; ``min_vessel_voxels`` is checked on the resampled label).

    ``oblique_max_deg`` > 0 (slab crops only, ``model.oblique``) tilts each crop drawn around an
    annotated voxel by a random rotation about that voxel
    (:class:`~vesselseg.data.oblique.ObliqueBox`); ``sample_spacing`` is the crop's voxel size
    in physical units (the target spacing; unit spacing when unknown), so the rotation acts on
    the tissue, not on an anisotropic voxel grid.
    """

    def __init__(
        self,
        image: Any,
        mask: Any,
        index: AnnotationIndex,
        crop_size: int | Sequence[int],
        min_vessel_voxels: int = 1,
        background_crop_fraction: float = 0.25,
        max_tries: int = 8,
        image_pad_value: float = 0.0,
        center_axis: int | None = None,
        step: Sequence[float] = (1.0, 1.0, 1.0),
        scale_range: float = 0.0,
        oblique_max_deg: float = 0.0,
        sample_spacing: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        if tuple(image.shape) != tuple(mask.shape) or tuple(mask.shape) != index.shape:
            raise ShapeMismatchError(
                f"image {tuple(image.shape)}, mask {tuple(mask.shape)} and index {index.shape} "
                "shapes differ"
            )
        if not 0.0 <= scale_range < 1.0:
            raise ValueError(f"scale_range must be in [0, 1), got {scale_range}")
        self.image = image
        self.mask = mask
        self.index = index
        self.crop_size: Triple = as_triple(
            crop_size if isinstance(crop_size, int) else list(crop_size)
        )
        self.min_vessel_voxels = int(min_vessel_voxels)
        self.background_crop_fraction = float(background_crop_fraction)
        self.max_tries = max(1, int(max_tries))
        self.image_pad_value = image_pad_value
        self.center_axis = center_axis
        self.step = (float(step[0]), float(step[1]), float(step[2]))
        self.scale_range = float(scale_range)
        if oblique_max_deg < 0:
            raise ValueError(f"oblique_max_deg must be >= 0, got {oblique_max_deg}")
        self.oblique_max_deg = float(oblique_max_deg)
        self.sample_spacing = tuple(float(v) for v in sample_spacing)

    @property
    def resamples(self) -> bool:
        """True when crops are resampled (a step other than 1, or zoom augmentation)."""
        return self.scale_range > 0 or self.step != (1.0, 1.0, 1.0)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One crop: ``(image, label)``, both ``crop_size`` ``(z, y, x)``; the volume dtypes,
        or a float32 image when resampled."""
        where, label = self.sample_label(rng)
        return self.read_image(where), label

    def sample_label(self, rng: np.random.Generator) -> tuple[Where, np.ndarray]:
        """Where one draw lies (an origin, or a :class:`CropBox` when resampling) and its
        label crop ``(z, y, x)`` uint8 (the image is not read)."""
        step = self.step
        if self.scale_range > 0:  # one zoom per crop, before the other draws
            zoom = float(rng.uniform(1.0 - self.scale_range, 1.0 + self.scale_range))
            step = (step[0] * zoom, step[1] * zoom, step[2] * zoom)
        has_vessel = self.index.vessel.size > 0
        has_background = self.index.background.size > 0
        want_background = rng.random() < self.background_crop_fraction
        if has_background and (want_background or not has_vessel):
            return self._crop_around(BACKGROUND, rng, step)
        if has_vessel:
            return self._vessel_crop(rng, step)
        if self.resamples:
            box = random_box(self.crop_size, step, self.index.shape, rng)
            return box, self.read_label(box)
        origin = random_origin(self.crop_size, self.index.shape, rng)
        return origin, self.read_label(origin)

    def read_image(self, where: Where) -> np.ndarray:
        """The image crop at ``where`` (padded with ``image_pad_value``)."""
        if isinstance(where, CropBox):
            return read_box(self.image, where, True, self.image_pad_value)
        if isinstance(where, ObliqueBox):
            return read_oblique(self.image, where, True, self.image_pad_value)
        return read_crop(self.image, where, self.crop_size, self.image_pad_value)

    def read_label(self, where: Where) -> np.ndarray:
        """The uint8 label crop at ``where`` (padded with 0, not annotated)."""
        if isinstance(where, CropBox):
            return read_box(self.mask, where, False, 0).astype(np.uint8, copy=False)
        if isinstance(where, ObliqueBox):
            return read_oblique(self.mask, where, False, 0).astype(np.uint8, copy=False)
        return read_crop(self.mask, where, self.crop_size, 0).astype(np.uint8, copy=False)

    def _vessel_crop(
        self, rng: np.random.Generator, step: tuple[float, float, float]
    ) -> tuple[Where, np.ndarray]:
        best: tuple[int, Where, np.ndarray] | None = None
        for _ in range(self.max_tries):
            where, label = self._crop_around(VESSEL, rng, step)
            count = int(np.count_nonzero(label == VESSEL))
            if count >= self.min_vessel_voxels:
                return where, label
            if best is None or count > best[0]:
                best = (count, where, label)
        assert best is not None
        return best[1], best[2]

    def _crop_around(
        self, label: int, rng: np.random.Generator, step: tuple[float, float, float]
    ) -> tuple[Where, np.ndarray]:
        point = self.index.random_point(label, rng)
        assert point is not None
        if self.oblique_max_deg > 0:
            return self._oblique_around(point, rng, step)
        if self.resamples:
            box = box_containing(
                point, self.crop_size, step, self.index.shape, rng, self.center_axis
            )
            return box, self.read_label(box)
        origin = crop_origin_containing(point, self.crop_size, self.index.shape, rng)
        if self.center_axis is not None:
            a = self.center_axis
            centred = list(origin)
            centred[a] = int(point[a]) - self.crop_size[a] // 2
            origin = (centred[0], centred[1], centred[2])
        return origin, self.read_label(origin)

    def _oblique_around(
        self, point: Sequence[int], rng: np.random.Generator, step: tuple[float, float, float]
    ) -> tuple[Where, np.ndarray]:
        """A crop around ``point`` (which it holds, on the centre slice along
        ``center_axis``), rotated by a random tilt about it."""
        box = box_containing(point, self.crop_size, step, self.index.shape, rng, self.center_axis)
        anchor = [round((float(p) - b) / f) for p, b, f in zip(point, box.start, step, strict=True)]
        zoom = step[0] / self.step[0]
        sample = [t * zoom for t in self.sample_spacing]
        source = [t / s for t, s in zip(self.sample_spacing, self.step, strict=True)]
        rotation = random_rotation(rng, self.oblique_max_deg)
        where = oblique_box(point, anchor, self.crop_size, rotation, sample, source)
        return where, self.read_label(where)
