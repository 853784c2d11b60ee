"""Crop augmentation: pure numpy functions driven by an explicit ``np.random.Generator``.

Geometric transforms (flips, 90° rotations) are applied identically to image and label;
intensity transforms (scale, shift, Gaussian noise) to the image only. Arrays are
``(z, y, x)``.
"""

from __future__ import annotations

import numpy as np

PLANES = ((0, 1), (0, 2), (1, 2))


def random_flip(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Flip each of the 3 axes with probability 1/2 (views, not copies)."""
    for axis in range(3):
        if rng.random() < 0.5:
            image, label = np.flip(image, axis), np.flip(label, axis)
    return image, label


def random_rot90(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by ``k * 90°`` (``k`` uniform in 0..3) in each axis plane whose sides are equal.

    Planes with unequal sides are left alone so the crop shape never changes.
    """
    for axes in PLANES:
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
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one ``(z, y, x)`` crop; returns C-contiguous ``(float32 image, label)``.

    Image and label get the same flips/rotations; intensity changes touch the image only.
    """
    if image.shape != label.shape:
        raise ValueError(f"image shape {image.shape} != label shape {label.shape}")
    if flip:
        image, label = random_flip(image, label, rng)
    if rot90:
        image, label = random_rot90(image, label, rng)
    if intensity_scale > 0 or intensity_shift > 0:
        image = scale_shift(image, rng, intensity_scale, intensity_shift)
    if noise_std > 0:
        image = add_noise(image, rng, noise_std)
    image = np.ascontiguousarray(image, dtype=np.float32)
    return image, np.ascontiguousarray(label)
