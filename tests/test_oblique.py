"""Oblique 2.5D training slabs (``model.oblique``): rotated crops about an annotated voxel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vesselseg.config import Params, apply_overrides
from vesselseg.data.crops import CropSampler, read_crop, read_oblique
from vesselseg.data.datasets import FixedCropDataset, RandomCropDataset, prepare_volumes
from vesselseg.data.oblique import oblique_box, random_rotation
from vesselseg.io.dataset import discover_dataset


@pytest.fixture(scope="module")
def entries(tiny_dataset: Path) -> list:
    return prepare_volumes(
        discover_dataset(tiny_dataset / "train", require_masks=True), [0.5, 99.5]
    )


def test_an_untilted_box_reads_exactly_the_axis_aligned_crop() -> None:
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, (20, 30, 40)).astype(np.uint8)
    point, anchor, size = (10, 12, 20), (1, 5, 7), (3, 16, 16)
    box = oblique_box(point, anchor, size, np.eye(3), (1, 1, 1), (1, 1, 1))
    origin = [p - a for p, a in zip(point, anchor, strict=True)]
    want = read_crop(volume, origin, size)
    np.testing.assert_array_equal(read_oblique(volume, box, linear=False), want)
    np.testing.assert_array_equal(read_oblique(volume, box, linear=True), want.astype(np.float32))


def test_a_quarter_turn_in_plane_is_rot90_of_the_crop() -> None:
    rng = np.random.default_rng(1)
    volume = rng.random((9, 40, 40)).astype(np.float32)
    point, anchor, size = (4, 20, 20), (1, 8, 8), (3, 17, 17)
    quarter = Rotation.from_rotvec([np.pi / 2, 0, 0]).as_matrix()  # about z: y, x turn
    box = oblique_box(point, anchor, size, quarter, (1, 1, 1), (1, 1, 1))
    crop = read_crop(volume, (3, 12, 12), size)
    got = read_oblique(volume, box, linear=True)
    # sample (i, j) lands on (y, x) = point + R (i - 8, j - 8): a quarter turn of the crop
    turned = [np.rot90(crop, k, axes=(1, 2)) for k in (1, 3)]
    assert any(np.allclose(got, t, atol=1e-5) for t in turned)
    assert not np.allclose(got, crop, atol=1e-3)


def test_rotation_acts_in_physical_space_on_anisotropic_voxels() -> None:
    """Trilinear interpolation of a linear ramp is exact, so every sample must equal the ramp at
    ``point + R((i - anchor) * sample_spacing)`` in physical coordinates."""
    spacing = np.array([5.0, 1.0, 1.0])  # a thin stack: 5 µm slices, 1 µm pixels
    shape = (15, 96, 96)
    grad = np.array([0.3, -0.2, 0.5])
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    volume = grad[0] * zz * spacing[0] + grad[1] * yy * spacing[1] + grad[2] * xx * spacing[2]
    rotation = random_rotation(np.random.default_rng(7), 20.0)
    point, anchor, size, sample = (7, 48, 48), (1, 16, 16), (3, 33, 33), (2.0, 1.0, 1.0)
    box = oblique_box(point, anchor, size, rotation, sample, spacing)
    got = read_oblique(volume.astype(np.float32), box, linear=True)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij")).reshape(3, -1)
    offsets = (idx - np.array(anchor)[:, None]) * np.array(sample)[:, None]
    physical = np.array(point)[:, None] * spacing[:, None] + rotation @ offsets
    inside = ((physical / spacing[:, None]) >= 0).all(0) & (
        (physical / spacing[:, None]) <= np.array(shape)[:, None] - 1
    ).all(0)
    want = (grad @ physical).reshape(size)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(got.reshape(-1)[inside], want.reshape(-1)[inside], atol=1e-3)
    assert got[anchor] == pytest.approx(float(volume[point]), abs=1e-4)


def test_random_rotations_stay_within_the_largest_tilt() -> None:
    rng = np.random.default_rng(3)
    angles = [
        np.degrees(Rotation.from_matrix(random_rotation(rng, 25.0)).magnitude()) for _ in range(200)
    ]
    assert max(angles) <= 25.0 + 1e-6 and max(angles) > 15.0
    r = random_rotation(rng, 25.0)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def test_oblique_training_slabs_are_tilted_and_keep_vessel_on_the_centre_slice(
    entries: list,
) -> None:
    def dataset(tilt: float) -> RandomCropDataset:
        return RandomCropDataset(
            entries, 24, 10, background_crop_fraction=0.0, seed=5, views=(0, 1, 2),
            context=3, oblique_max_deg=tilt,
        )  # fmt: skip

    tilted, straight = dataset(40.0), dataset(0.0)
    differs = 0
    for key in range(len(tilted)):
        image, label = tilted[key]
        assert image.shape == (1, 3, 24, 24) and label.shape == (1, 1, 24, 24)
        assert (label == 1).any(), f"item {key}: no vessel on the centre slice"
        assert set(np.unique(label.numpy())) <= {0, 1, 2}
        differs += not np.array_equal(image.numpy(), straight[key][0].numpy())
    assert differs == len(tilted)
    again = dataset(40.0)[4]
    np.testing.assert_array_equal(again[0].numpy(), tilted[4][0].numpy())


def test_validation_slabs_and_3d_crops_are_never_tilted(entries: list) -> None:
    val = FixedCropDataset(entries, 16, 4, seed=1, views=(0,), context=3)
    assert val.oblique_max_deg == 0.0
    crops_3d = RandomCropDataset(entries, 16, 4, seed=1, oblique_max_deg=30.0)
    assert crops_3d.oblique_max_deg == 0.0  # 3D crops: the flag is for slice models
    sampler = crops_3d.sampler(0)
    assert sampler.oblique_max_deg == 0.0
    shape = sampler.index.shape
    with pytest.raises(ValueError, match="oblique_max_deg"):
        CropSampler(
            np.zeros(shape), np.zeros(shape, np.uint8), sampler.index, 4, oblique_max_deg=-1
        )


def test_model_oblique_config() -> None:
    p = apply_overrides(Params(), ["model.oblique=true", "model.oblique_max_deg=45"])
    assert p.model.oblique and p.model.oblique_max_deg == 45.0
    with pytest.raises(Exception, match="oblique_max_deg"):
        apply_overrides(Params(), ["model.oblique_max_deg=0"])
