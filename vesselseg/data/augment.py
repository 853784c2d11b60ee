"""Crop augmentation: pure numpy functions driven by an explicit ``np.random.Generator``.

Geometric transforms (flips, 90° rotations) are applied identically to image and label;
intensity transforms (scale, shift, Gaussian noise) and the low-resolution simulation to the
image only. Arrays are ``(z, y, x)``.

The low-resolution simulation (:func:`simulate_low_resolution`, ``data.lowres_factor``) is
what a scan at a coarser voxel size looks like once inference has resampled it to the model's
grid: the crop is averaged down to a grid up to ``lowres_factor`` times coarser and
interpolated back trilinearly (as :mod:`vesselseg.inference.resample` does), so a model
trained at 1 µm has seen blurred, upsampled vessels before it meets a 2 µm scan (nnU-Net's
``SimulateLowResolutionTransform``). The label is unchanged: the truth is still the fine one.

With a crop ``spacing`` (anisotropic data), 90° rotations stay in the planes whose two axes
have the same spacing within 1 % (:func:`rot90_planes`): a rotation never swaps a 5 µm axis
with a 1 µm one. Flips keep every axis's spacing, so they apply along any axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vesselseg.data.resample import linear_resample

PLANES = ((0, 1), (0, 2), (1, 2))
ISOTROPIC_TOLERANCE = 0.01  # two axes have "the same spacing" within 1 %


def rot90_planes(spacing: Sequence[float] | None = None) -> tuple[tuple[int, int], ...]:
    """The axis planes whose two axes have the same spacing within 1 % (all three without a
    spacing): the planes a 90° rotation may turn."""
    if spacing is None:
        return PLANES
    return tuple(
        (a, b)
        for a, b in PLANES
        if math.isclose(spacing[a], spacing[b], rel_tol=ISOTROPIC_TOLERANCE)
    )


def random_flip(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Flip each of the 3 axes with probability 1/2 (views, not copies)."""
    for axis in range(3):
        if rng.random() < 0.5:
            image, label = np.flip(image, axis), np.flip(label, axis)
    return image, label


def random_rot90(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by ``k * 90°`` (``k`` uniform in 0..3) in each axis plane whose sides are equal
    and, with a ``spacing`` ``(z, y, x)``, whose axes have the same spacing (:func:`rot90_planes`).

    Other planes are left alone (no draw), so the crop shape and each axis's spacing never
    change.
    """
    for axes in rot90_planes(spacing):
        if image.shape[axes[0]] != image.shape[axes[1]]:
            continue
        k = int(rng.integers(4))
        if k:
            image, label = np.rot90(image, k, axes), np.rot90(label, k, axes)
    return image, label


def scale_shift(
    image: np.ndarray, rng: np.random.Generator, scale: float, shift: float
) -> np.ndarray:
    """``image * (1 + U(-scale, scale)) + U(-shift, shift)`` as float32."""
    a = 1.0 + rng.uniform(-scale, scale) if scale > 0 else 1.0
    b = rng.uniform(-shift, shift) if shift > 0 else 0.0
    return (image.astype(np.float32, copy=False) * np.float32(a) + np.float32(b)).astype(
        np.float32, copy=False
    )


def coarse_factors(factor: float, spacing: Sequence[float] | None) -> tuple[float, ...]:
    """Per-axis coarsening for a physical coarsening ``factor``: an axis already ``r`` times
    coarser than the finest is coarsened by ``factor / r`` (never below 1)."""
    if spacing is None:
        return (factor,) * 3
    finest = min(spacing)
    return tuple(max(1.0, factor * finest / s) for s in spacing)


def simulate_low_resolution(image: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """``image`` as if acquired on a grid ``factors`` times coarser per axis and interpolated
    back: Gaussian anti-aliasing (sigma ``(f - 1) / 2`` voxels), trilinear samples at the
    coarse voxel centres, trilinear back to the fine centres. Same shape, float32; factors of
    1 leave an axis as it is."""
    from scipy import ndimage

    sigma = [max(0.0, (f - 1.0) / 2.0) for f in factors]
    out = np.asarray(image, dtype=np.float32)
    if not any(sigma):
        return out
    out = ndimage.gaussian_filter(out, sigma, mode="nearest")
    coarse = []
    for n, f in zip(out.shape, factors, strict=True):
        m = max(1, round(n / f))
        coarse.append((np.arange(m) + 0.5) * (n / m) - 0.5)  # coarse centres, fine coordinates
    low = linear_resample(out, coarse)
    back = [(np.arange(n) + 0.5) * (low.shape[a] / n) - 0.5 for a, n in enumerate(out.shape)]
    return linear_resample(low, back)


def random_low_resolution(
    image: np.ndarray,
    rng: np.random.Generator,
    factor: float,
    probability: float,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """With ``probability``, :func:`simulate_low_resolution` at a physical coarsening drawn
    from ``U(1, factor)`` (per axis: :func:`coarse_factors`)."""
    if rng.uniform() >= probability:
        return image
    return simulate_low_resolution(image, coarse_factors(rng.uniform(1.0, factor), spacing))


def add_noise(image: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """Add iid Gaussian noise of standard deviation ``std`` (float32)."""
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(std)
    return image.astype(np.float32, copy=False) + noise


def augment(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    flip: bool = True,
    rot90: bool = True,
    intensity_scale: float = 0.0,
    intensity_shift: float = 0.0,
    noise_std: float = 0.0,
    spacing: Sequence[float] | None = None,
    lowres_factor: float = 1.0,
    lowres_probability: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one ``(z, y, x)`` crop; returns C-contiguous ``(float32 image, label)``.

    Image and label get the same flips/rotations; intensity changes touch the image only.
    ``spacing`` is the crop's voxel size per axis: rotations stay in planes of equal spacing.
    ``lowres_factor > 1`` with ``lowres_probability > 0`` simulates a coarser scan
    (:func:`random_low_resolution`); off, no random number is drawn for it.
    """
    if image.shape != label.shape:
        raise ValueError(f"image shape {image.shape} != label shape {label.shape}")
    if flip:
        image, label = random_flip(image, label, rng)
    if rot90:
        image, label = random_rot90(image, label, rng, spacing)
    if intensity_scale > 0 or intensity_shift > 0:
        image = scale_shift(image, rng, intensity_scale, intensity_shift)
    if lowres_factor > 1.0 and lowres_probability > 0:
        image = random_low_resolution(image, rng, lowres_factor, lowres_probability, spacing)
    if noise_std > 0:
        image = add_noise(image, rng, noise_std)
    image = np.ascontiguousarray(image, dtype=np.float32)
    return image, np.ascontiguousarray(label)
