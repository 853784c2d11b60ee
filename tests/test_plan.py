"""The planner on fingerprints with known answers, anisotropic networks, the fingerprint's
radius oracle, plans.json and ``vesselseg plan --show``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vesselseg.cli import app
from vesselseg.config import (
    ModelConfig,
    Params,
    PlanConfig,
    apply_overrides,
    explicit_keys,
    with_values,
)
from vesselseg.errors import ConfigError
from vesselseg.models import build_model, model_divisors, size_divisor, size_divisors
from vesselseg.plan import (
    Fingerprint,
    VolumeFingerprint,
    VolumeInput,
    apply_plan,
    fingerprint_volumes,
    make_plan,
    plan_from_dict,
    plan_to_dict,
    pool_schedule,
)
from vesselseg.plan.fingerprint import _blocks
from vesselseg.plan.planner import field_of_view

CPU = PlanConfig()  # 4 GB, 48^3 voxels


def fingerprint(*volumes: tuple[tuple[int, int, int], tuple[float, float, float]]) -> Fingerprint:
    return Fingerprint(
        tuple(
            VolumeFingerprint(f"v{i}", shape, spacing) for i, (shape, spacing) in enumerate(volumes)
        )
    )


def divisible(size: list[int], divisors: tuple[int, ...]) -> bool:
    return all(s % d == 0 for s, d in zip(size, divisors, strict=True))


# --------------------------------------------------------------------------- planner


def test_isotropic_cube_pools_every_axis() -> None:
    plan = make_plan(fingerprint(((128, 128, 128), (1.0, 1.0, 1.0))), CPU)
    assert plan.value("data.target_spacing") == [1.0, 1.0, 1.0]
    assert plan.value("data.crop_size") == [48, 48, 48]  # 48^3 voxels, today's default
    assert plan.value("model.depth") == 3
    assert plan.value("model.strides") is None and plan.value("model.kernels") is None
    assert plan.value("infer.tile_size") == [48, 48, 48]
    assert plan.value("model.views") == ["z", "y", "x"]
    assert plan.value("train.batch_size") >= 2
    assert plan.source("data.crop_size") == "fingerprint"
    assert plan.source("plan.memory_gb") == "default"


def test_isotropic_cube_on_a_big_accelerator() -> None:
    cfg = PlanConfig(memory_gb=80.0, crop_voxels=128**3)
    plan = make_plan(fingerprint(((128, 128, 128), (1.0, 1.0, 1.0))), cfg)
    assert plan.value("data.crop_size") == [128, 128, 128]
    assert plan.value("model.depth") == 4  # 128 -> 64 -> 32 -> 16 (>= 2 * 8)
    assert plan.value("model.strides") is None


def test_thin_anisotropic_stack() -> None:
    plan = make_plan(fingerprint(((15, 512, 512), (5.0, 1.0, 1.0))), CPU)
    assert plan.value("data.target_spacing") == [5.0, 1.0, 1.0]
    crop = plan.value("data.crop_size")
    assert crop[0] <= 15 and crop[1] == crop[2] >= 64
    strides = plan.value("model.strides")
    assert strides is not None and len(strides) == plan.value("model.depth") - 1
    assert strides[0] == [1, 2, 2] and strides[1] == [1, 2, 2]  # no z pooling at first
    kernels = plan.value("model.kernels")
    assert kernels[0] == [1, 3, 3]
    divisors = size_divisors(plan.value("model.depth"), strides)
    assert divisible(crop, divisors) and divisible(plan.value("infer.tile_size"), divisors)
    assert plan.value("model.views") == ["z"]  # 15-pixel-wide slices along y and x: dropped


def test_volume_too_small_for_the_default_crop() -> None:
    plan = make_plan(fingerprint(((20, 24, 30), (1.0, 1.0, 1.0))), CPU)
    crop = plan.value("data.crop_size")
    assert all(c <= s for c, s in zip(crop, (20, 24, 30), strict=True))
    depth = plan.value("model.depth")
    assert depth >= 2 and divisible(crop, size_divisors(depth, plan.value("model.strides")))
    mv = plan.value("multiview.crop_size")
    assert mv[1] <= 24 and mv[2] <= 30


def test_mix_of_two_spacings_takes_the_median() -> None:
    plan = make_plan(
        fingerprint(
            ((96, 96, 96), (1.0, 1.0, 1.0)),
            ((64, 64, 64), (2.0, 2.0, 2.0)),
            ((64, 64, 64), (2.0, 2.0, 2.0)),
        ),
        CPU,
    )
    assert plan.value("data.target_spacing") == [2.0, 2.0, 2.0]
    assert plan.info["smallest_extent"] == [48, 48, 48]  # 96 voxels at 1 um = 48 at 2 um
    assert all(c <= 48 for c in plan.value("data.crop_size"))


def test_thick_slices_target_the_10th_percentile() -> None:
    volumes = [((20, 256, 256), (z, 1.0, 1.0)) for z in (3.0, 6.0, 6.0, 6.0, 6.0)]
    plan = make_plan(fingerprint(*volumes), CPU)
    z = plan.value("data.target_spacing")[0]
    assert 3.0 <= z < 6.0
    assert "10th percentile" in plan.values["data.target_spacing"].note


def test_memory_budget_shrinks_the_crop_and_batch() -> None:
    stack = fingerprint(((64, 512, 512), (1.0, 1.0, 1.0)))
    roomy = make_plan(stack, PlanConfig(memory_gb=40.0, crop_voxels=128**3))
    tight = make_plan(stack, PlanConfig(memory_gb=1.0, crop_voxels=128**3))
    assert math.prod(tight.value("data.crop_size")) < math.prod(roomy.value("data.crop_size"))
    assert tight.info["train_gb_3d"] <= 1.0


def test_user_keys_win_and_are_reported() -> None:
    params = apply_overrides(Params(), ["data.crop_size=[8, 64, 64]", "train.batch_size=3"])
    explicit = explicit_keys(params)
    plan = make_plan(fingerprint(((15, 512, 512), (5.0, 1.0, 1.0))), CPU, params, explicit)
    assert plan.value("data.crop_size") == [8, 64, 64]
    assert plan.source("data.crop_size") == "user"
    assert plan.value("train.batch_size") == 3 and plan.source("train.batch_size") == "user"
    assert plan.source("model.depth") == "fingerprint"
    applied = apply_plan(params, plan)
    assert applied.data.crop_size == [8, 64, 64] and applied.train.batch_size == 3
    assert applied.model.strides == plan.value("model.strides")
    assert applied.model.views == ["z"]


def test_explicit_keys() -> None:
    params = apply_overrides(Params(), ["train.lr=0.01", "plan.keep=[model.depth]"])
    keys = explicit_keys(params, ["infer.overlap=0.25"], {"data.train_dir": "x", "a.b": None})
    assert {"train.lr", "plan.keep", "model.depth", "infer.overlap", "data.train_dir"} <= keys
    assert "data.crop_size" not in keys and "a.b" not in keys


def test_plan_round_trips_through_json() -> None:
    plan = make_plan(fingerprint(((15, 512, 512), (5.0, 1.0, 1.0))), CPU)
    again = plan_from_dict(json.loads(json.dumps(plan_to_dict(plan))))
    assert plan_to_dict(again) == plan_to_dict(plan)
    with pytest.raises(ConfigError, match="not a vesselseg plan"):
        plan_from_dict({"format": "x"})


def test_apply_plan_skips_keys_params_lack_and_keeps_user_values() -> None:
    plan = make_plan(fingerprint(((15, 512, 512), (5.0, 1.0, 1.0))), CPU)
    applied = apply_plan(Params(), plan)  # data.target_spacing is not a params key here
    assert applied.data.crop_size == plan.value("data.crop_size")
    assert applied.model.depth == plan.value("model.depth")
    assert applied.multiview.depth == plan.value("multiview.depth")


def test_pool_schedule_forced_depth_and_field_of_view() -> None:
    topo = pool_schedule((5.0, 1.0, 1.0), (15, 88, 88), 2.0, 8, 6, depth=3)
    assert topo.strides == ((1, 2, 2), (1, 2, 2)) and topo.depth == 3
    assert pool_schedule((1, 1, 1), (64, 64, 64), 2.0, 8, 5).divisors == (8, 8, 8)
    sides = field_of_view((5.0, 1.0, 1.0), (15, 512, 512), 48**3)
    assert sides[0] == 15 and sides[1] == pytest.approx(sides[2])
    assert math.prod(sides) == pytest.approx(48**3)


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize("name", ["unet", "vnet"])
def test_anisotropic_networks_keep_planned_shapes(name: str) -> None:
    params = with_values(Params(), {"model.name": name, "model.base_channels": 2})
    plan = make_plan(fingerprint(((15, 512, 512), (5.0, 1.0, 1.0))), CPU, params)
    cfg = apply_plan(params, plan).model
    assert cfg.strides is not None
    net = build_model(cfg).eval()
    size = plan.value("data.crop_size")
    with torch.no_grad():
        out = net(torch.zeros(1, 1, *size))
    assert tuple(out.shape) == (1, 1, *size)
    assert model_divisors(cfg) == size_divisors(cfg.depth, cfg.strides)


def test_default_networks_are_unchanged() -> None:
    assert size_divisors(3) == (size_divisor(3),) * 3
    for name in ("unet", "vnet"):
        torch.manual_seed(0)
        a = build_model(ModelConfig(name=name, base_channels=2, depth=3))
        torch.manual_seed(0)
        iso = [[2, 2, 2]] * 2
        kernel = 3 if name == "unet" else 5
        b = build_model(
            ModelConfig(
                name=name, base_channels=2, depth=3, strides=iso, kernels=[[kernel] * 3] * 3
            )
        )
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert ka == kb and torch.equal(va, vb)


def test_model_config_checks_strides_against_depth() -> None:
    with pytest.raises(ConfigError, match="model.strides must list depth - 1"):
        with_values(Params(), {"model.strides": [[1, 2, 2]]})
    with pytest.raises(ConfigError, match="model.kernels must be odd"):
        with_values(Params(), {"model.kernels": [[1, 2, 2], [3, 3, 3], [3, 3, 3]]})
    assert model_divisors({"name": "unet2d", "depth": 4, "views": ["z"]}) == (1, 8, 8)


# --------------------------------------------------------------------------- fingerprint


def cylinder(shape: tuple[int, ...], spacing: tuple[float, ...], radius: float, axis: int):
    """Labels 1 inside a straight cylinder along ``axis`` through voxel centres, else 2."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    centre = [(n // 2) * s for n, s in zip(shape, spacing)]
    d2 = sum((grids[a] - centre[a]) ** 2 for a in range(3) if a != axis)
    return np.where(d2 <= radius**2, 1, 2).astype(np.uint8)


@pytest.mark.parametrize(
    ("spacing", "axis", "radius"),
    [((3.0, 1.0, 1.0), 0, 5.0), ((2.0, 1.0, 1.0), 2, 6.0), ((1.0, 0.5, 0.5), 1, 3.0)],
)
def test_fingerprint_radius_of_a_cylinder(spacing, axis, radius) -> None:
    shape = tuple(int(round(33 / s)) | 1 for s in spacing)
    labels = cylinder(shape, spacing, radius, axis)
    image = np.where(labels == 1, 1.0, 0.0).astype(np.float32)
    fp = fingerprint_volumes([VolumeInput("c", image, labels, spacing, "um")])
    across = max(s for a, s in enumerate(spacing) if a != axis)
    assert abs(fp.radius.p50 - radius) <= 0.5 * across + 0.25
    assert fp.foreground.mean == 1.0 and fp.foreground.count == int((labels == 1).sum())
    assert fp.vessel_fraction == pytest.approx((labels == 1).mean())
    assert fp.annotated_fraction == 1.0 and fp.volumes[0].spacing == spacing


def test_fingerprint_sparse_mask_and_units() -> None:
    labels = np.zeros((8, 40, 40), np.uint8)
    labels[4, 10:30, 10:30] = 2
    labels[4, 18:23, 10:30] = 1  # a band 5 voxels wide on one slice: radius ~2.5
    image = np.random.default_rng(0).random(labels.shape).astype(np.float32)
    a = VolumeInput("a", image, labels, (0.002, 0.001, 0.001), "mm")
    b = VolumeInput("b", image, labels, (2.0, 1.0, 1.0), "um")
    fp = fingerprint_volumes([a, b])
    assert fp.unit == "um" and fp.volumes[0].spacing == pytest.approx((2.0, 1.0, 1.0))
    assert 2.0 <= fp.radius.p50 <= 3.5
    assert fp.annotated_fraction == pytest.approx(400 / labels.size)


def test_blocks_cover_the_volume_once_within_budget() -> None:
    shape = (40, 300, 200)
    seen = np.zeros(shape, np.int32)
    for core, outer in _blocks(shape, halo=4, budget=48 * 200_000):
        seen[core] += 1
        assert all(o.start <= c.start and c.stop <= o.stop for c, o in zip(core, outer))
    assert (seen == 1).all()


# --------------------------------------------------------------------------- CLI


def test_cli_plan_show_prints_sources(tmp_path: Path) -> None:
    train = tmp_path / "train"
    train.mkdir()
    labels = cylinder((16, 48, 48), (1.0, 1.0, 1.0), 4.0, 0)
    np.save(train / "data_a.npy", labels.astype(np.float32))
    np.save(train / "mask_a.npy", labels)
    out = tmp_path / "plans.json"
    runner = CliRunner()
    args = ["plan", "--train-dir", str(train), "--out", str(out), "--show"]
    result = runner.invoke(app, [*args, "--set", "train.batch_size=3"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line}
    assert lines["train.batch_size"].split()[1:3] == ["3", "user"]
    assert "fingerprint" in lines["data.crop_size"] and "default" in lines["plan.memory_gb"]
    saved = json.loads(out.read_text())
    assert saved["values"]["train.batch_size"] == {"value": 3, "source": "user", "note": ""}
    assert saved["fingerprint"]["volumes"][0]["shape"] == [16, 48, 48]
    both = runner.invoke(app, [*args, "--data-dir", str(train)])
    assert both.exit_code == 2 and "give one of them" in both.output


def test_plan_for_training_applies_the_plan(tmp_path: Path) -> None:
    from vesselseg.plan import plan_for_training

    train = tmp_path / "train"
    train.mkdir()
    labels = cylinder((15, 64, 64), (1.0, 1.0, 1.0), 3.0, 1)
    np.save(train / "data_a.npy", labels.astype(np.float32))
    np.save(train / "mask_a.npy", labels)
    params = apply_overrides(Params(), [f"data.train_dir={train}", "train.lr=0.01"])
    planned, plan = plan_for_training(params, explicit_keys(params))
    assert planned.data.crop_size == plan.value("data.crop_size") and planned.train.lr == 0.01
    assert planned.data.crop_size[0] <= 15 and plan.fingerprint.volumes[0].shape == (15, 64, 64)
    off = apply_overrides(params, ["plan.enabled=false"])
    assert plan_for_training(off, explicit_keys(off))[0] == off


def test_machine_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from vesselseg.plan import machine

    monkeypatch.setattr(machine, "cuda_memory_gb", lambda: None)
    assert machine.resolve_machine(PlanConfig()) == PlanConfig()
    monkeypatch.setattr(machine, "cuda_memory_gb", lambda: 80.0)
    gpu = machine.resolve_machine(PlanConfig(crop_voxels=4096))
    assert gpu.memory_gb == 80.0 and gpu.crop_voxels == 4096


def test_a_user_crop_given_as_one_number_is_planned_around(tmp_path: Path) -> None:
    """``data.crop_size: 16`` (an int, as params.yaml and --set allow) is the user's: the
    plan keeps it and still plans the batch from it."""
    from vesselseg.config import apply_overrides, explicit_keys
    from vesselseg.plan import plan_for_training

    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        np.save(tmp_path / split / "data_0.npy", np.random.default_rng(0).random((16, 32, 32)))
        mask = np.full((16, 32, 32), 2, np.uint8)
        mask[4:8, 4:8, 4:8] = 1
        np.save(tmp_path / split / "mask_0.npy", mask)
    overrides = ["data.crop_size=16", f"data.train_dir={tmp_path / 'train'}"]
    params = apply_overrides(Params(), overrides)
    planned, plan = plan_for_training(params, explicit_keys(params, overrides))
    assert planned.data.crop_size == 16 and plan.values["data.crop_size"].source == "user"
    assert isinstance(planned.train.batch_size, int) and planned.train.batch_size >= 1


def test_an_epoch_draws_at_least_crops_per_epoch() -> None:
    """Few training volumes get more crops each (nnU-Net fixes an epoch's iterations); the
    value is recorded only where it raises params.yaml's, and a user's value wins."""
    one = ((15, 128, 128), (5.0, 1.0, 1.0))
    two = make_plan(fingerprint(one, one), CPU)
    assert two.value("data.samples_per_volume") == 32 and two.source("data.samples_per_volume")
    assert make_plan(fingerprint(one, one, one), CPU).value("data.samples_per_volume") == 22
    four = make_plan(fingerprint(one, one, one, one), CPU)
    assert "data.samples_per_volume" not in four.values  # 4 x 16 = 64 already
    user = with_values(Params(), {"data.samples_per_volume": 5})
    mine = make_plan(fingerprint(one, one), CPU, user, {"data.samples_per_volume"})
    assert (
        mine.value("data.samples_per_volume") == 5
        and mine.source("data.samples_per_volume") == "user"
    )
    wide = make_plan(fingerprint(one, one), PlanConfig(crops_per_epoch=200))
    assert wide.value("data.samples_per_volume") == 100


def test_dataset_normalisation_is_planned_from_the_annotated_voxels() -> None:
    from vesselseg.plan.fingerprint import IntensityStats

    stats = IntensityStats(100, 2.0, 10.0, 90.0, 30.0, 12.0)
    fp = Fingerprint((VolumeFingerprint("a", (15, 64, 64), (5.0, 1.0, 1.0), "um", 100, 20),))
    fp = Fingerprint(fp.volumes, annotated=stats)
    dataset = with_values(Params(), {"data.normalization": "dataset"})
    assert make_plan(fp, CPU, dataset).value("data.intensity_stats") == [2.0, 90.0, 30.0, 12.0]
    assert "data.intensity_stats" not in make_plan(fp, CPU).values  # volume: nothing to plan
