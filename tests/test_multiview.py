"""2D/2.5D multiview models: slab crops along z/y/x, the slice U-Net, multi-axis inference,
ensembles, and a 2D model trained on a TIFF slice-folder dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from torch import nn
from typer.testing import CliRunner

from vesselseg.bundle import ModelMeta, save_bundle
from vesselseg.cli import app
from vesselseg.config import InferConfig, ModelConfig, Params, apply_overrides, params_to_dict
from vesselseg.data.datasets import FixedCropDataset, RandomCropDataset, prepare_volumes
from vesselseg.data.normalize import normalize
from vesselseg.errors import ConfigError
from vesselseg.inference.ensemble import (
    EnsembleNet,
    is_ensemble_file,
    parse_member,
    read_members,
    write_ensemble,
)
from vesselseg.inference.loader import load_model
from vesselseg.inference.network import make_predict_fn
from vesselseg.inference.predictor import StreamingPredictor
from vesselseg.inference.run import predict_path
from vesselseg.inference.sinks import ArraySink
from vesselseg.inference.tiling import make_grid
from vesselseg.io.dataset import discover_dataset
from vesselseg.models import build_model, for_volumes
from vesselseg.models.unet2d import MultiAxisNet, SliceUNet, axis_indices

runner = CliRunner()


# --------------------------------------------------------------------------- slab crops


@pytest.fixture(scope="module")
def entries(tiny_dataset: Path) -> list:
    return prepare_volumes(
        discover_dataset(tiny_dataset / "train", require_masks=True), [0.5, 99.5]
    )


@pytest.mark.parametrize("context", [1, 3])
def test_views_along_each_axis_align_image_and_label(entries: list, context: int) -> None:
    """Every slab item equals the volume region it came from, moved to (axis, plane, plane),
    and its label is the centre slice of the same region."""
    ds = FixedCropDataset(entries, [16, 24, 32], 6, seed=1, views=(0, 1, 2), context=context)
    assert {axis for _, axis, _ in ds.crops} == {0, 1, 2}
    for i, (v, axis, origin) in enumerate(ds.crops):
        image, label = ds[i]
        entry = entries[v]
        size = ds.region_size(axis)
        region = tuple(slice(max(o, 0), o + s) for o, s in zip(origin, size, strict=True))
        raw = np.asarray(entry.sample.open_image()[region])
        mask = np.asarray(entry.sample.open_mask()[region])
        if raw.shape != tuple(size):  # near the border: padded, compare the inside only
            continue
        want = np.moveaxis(normalize(raw, entry.stats.lo, entry.stats.hi), axis, 0)
        plane = tuple(s for a, s in enumerate([16, 24, 32]) if a != axis)
        assert image.shape == (1, context, *plane) and label.shape == (1, 1, *plane)
        np.testing.assert_array_equal(image[0].numpy(), want)
        np.testing.assert_array_equal(label[0, 0].numpy(), np.moveaxis(mask, axis, 0)[context // 2])


def test_training_slabs_hold_vessel_on_their_centre_slice(entries: list) -> None:
    ds = RandomCropDataset(
        entries, 16, 12, background_crop_fraction=0.0, seed=3, views=(0, 1, 2), context=3
    )
    shapes = set()
    for key in range(len(ds)):
        image, label = ds[key]
        shapes.add(tuple(image.shape))
        assert label.shape == (1, 1, 16, 16)
        assert (label == 1).any(), f"item {key}: no vessel on the centre slice"
    assert shapes == {(1, 3, 16, 16)}
    a, b = (
        ds[5],
        RandomCropDataset(
            entries, 16, 12, background_crop_fraction=0.0, seed=3, views=(0, 1, 2), context=3
        )[5],
    )
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# --------------------------------------------------------------------------- networks


def test_slice_unet_is_valid_along_depth_and_same_in_plane() -> None:
    torch.manual_seed(0)
    net = SliceUNet(base_channels=4, depth=2, context=3).eval()
    x = torch.randn(2, 1, 6, 8, 12)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (2, 1, 4, 8, 12)
        for d in range(4):  # output slice d sees input slices d .. d+2 only
            np.testing.assert_allclose(out[:, :, d : d + 1], net(x[:, :, d : d + 3]), atol=1e-5)
    with pytest.raises(ValueError, match="at least 3 slices"):
        net(torch.randn(1, 1, 2, 8, 8))


def test_build_unet2d_and_config_checks() -> None:
    cfg = ModelConfig(name="unet2d", base_channels=4, depth=2, context=5, views=["x", "z"])
    net = build_model(cfg)
    assert isinstance(net, SliceUNet) and net.context == 5
    wrapped = for_volumes(net, cfg)
    assert isinstance(wrapped, MultiAxisNet) and wrapped.axes == (2, 0)
    assert (
        for_volumes(build_model(ModelConfig(base_channels=2, depth=2)), ModelConfig()) is not None
    )
    assert axis_indices(["y"]) == (1,)
    with pytest.raises(ValueError):
        axis_indices(["z", "z"])
    for bad in ("model.context=2", "model.views=[]", "model.views=[z, z]", "model.views=[w]"):
        with pytest.raises(ConfigError, match="model.(context|views)"):
            apply_overrides(Params(), [bad])


class CentreSlice(nn.Module):
    """An identity-like 2.5D network: the logit of each output slice is its centre input slice."""

    outputs_probabilities = False

    def __init__(self, context: int) -> None:
        super().__init__()
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.context // 2
        return x[:, :, half : x.shape[2] - half]


@pytest.mark.parametrize("views", [["z"], ["y"], ["x"], ["z", "y", "x"]])
def test_multi_axis_inference_of_identity_model_reproduces_the_input(views: list[str]) -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 2, (20, 26, 30)).astype(np.float32)
    net = MultiAxisNet(CentreSlice(3), views)
    grid = make_grid(volume.shape, (16, 16, 16), 0.25)
    sink = ArraySink(volume.shape)
    StreamingPredictor(make_predict_fn(net, torch.device("cpu")), grid, batch_size=2).run(
        volume, sink
    )
    expected = 1 / (1 + np.exp(-volume))
    np.testing.assert_allclose(sink.array, expected, rtol=0, atol=1e-5)


def test_ensemble_net_weights_member_probabilities() -> None:
    class Const(nn.Module):
        def __init__(self, value: float, probs: bool) -> None:
            super().__init__()
            self.value, self.outputs_probabilities = value, probs

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full_like(x, self.value)

    net = EnsembleNet([Const(0.0, False), Const(0.9, True)], [1.0, 3.0])
    out = net(torch.zeros(1, 1, 2, 2, 2))
    torch.testing.assert_close(out, torch.full_like(out, (0.5 + 3 * 0.9) / 4))
    assert net.outputs_probabilities


# --------------------------------------------------------------------------- ensembles, files


def _save(path: Path, cfg: ModelConfig, seed: int, percentiles=(0.5, 99.5)) -> Path:
    torch.manual_seed(seed)
    return save_bundle(
        path,
        build_model(cfg).state_dict(),
        ModelMeta(model=params_to_dict(cfg), tile_size=[16, 16, 16], percentiles=list(percentiles)),
    )


def test_parse_member() -> None:
    assert parse_member("models/a.pt:0.6") == ("models/a.pt", 0.6)
    assert parse_member("models/a.pt") == ("models/a.pt", 1.0)
    assert parse_member("models:/vesselseg@champion:2") == ("models:/vesselseg@champion", 2.0)
    assert parse_member("models:/vesselseg@champion") == ("models:/vesselseg@champion", 1.0)
    with pytest.raises(ConfigError, match="weight"):
        parse_member("a.pt:-1")


def test_ensemble_file_predicts_the_weighted_mean(tmp_path: Path) -> None:
    a = _save(tmp_path / "m" / "a3d.pt", ModelConfig(base_channels=2, depth=2), 0)
    b = _save(tmp_path / "m" / "b2d.pt", ModelConfig(name="unet2d", base_channels=2, depth=2), 1)
    spec = write_ensemble([(str(a), 1.0), (str(b), 3.0)], tmp_path / "ens" / "ensemble.json")
    assert is_ensemble_file(spec) and not is_ensemble_file(a.with_suffix(".json"))
    assert read_members(spec) == [
        (str(spec.parent / "../m/a3d.pt"), 1.0),
        (str(spec.parent / "../m/b2d.pt"), 3.0),
    ]
    volume = tmp_path / "vol.npy"
    np.save(volume, np.random.default_rng(0).normal(100, 20, (16, 20, 24)).astype(np.float32))
    cfg = InferConfig(tile_size=16)
    probs = {}
    for model in (a, b, spec):
        run = predict_path(volume, model, tmp_path / "out", cfg, device="cpu", show_progress=False)
        probs[model.stem] = np.load(run.results[0].outputs.prob)
    assert set(probs) == {"a3d", "b2d", "ensemble"}
    np.testing.assert_allclose(probs["ensemble"], (probs["a3d"] + 3 * probs["b2d"]) / 4, atol=2e-6)
    net, meta = load_model(spec)
    assert meta.model["name"] == "ensemble" and meta.model["members"] == ["unet", "unet2d"]


def test_ensemble_refuses_members_that_normalise_differently(tmp_path: Path) -> None:
    a = _save(tmp_path / "a.pt", ModelConfig(base_channels=2, depth=2), 0)
    b = _save(tmp_path / "b.pt", ModelConfig(base_channels=2, depth=2), 1, percentiles=(1, 99))
    with pytest.raises(ConfigError, match="normalise intensities differently"):
        write_ensemble([(str(a), 1.0), (str(b), 1.0)], tmp_path / "e.json")
    with pytest.raises(ConfigError, match="at least two"):
        write_ensemble([(str(a), 1.0)], tmp_path / "e.json")
    assert not (tmp_path / "e.json").exists()


def test_registry_members_are_resolved_by_the_injected_resolver(tmp_path: Path) -> None:
    """inference never imports the registry: a ``models:/`` member needs the caller's
    ``resolve`` (the CLI passes ``registry.resolve_model``); without it, one ConfigError."""
    a = _save(tmp_path / "a.pt", ModelConfig(base_channels=2, depth=2), 0)
    b = _save(tmp_path / "b.pt", ModelConfig(name="unet2d", base_channels=2, depth=2), 1)
    uri = "models:/vesselseg@champion"
    asked: list[str] = []

    def resolve(source: str) -> Path:
        asked.append(source)
        return b

    with pytest.raises(ConfigError, match="models:/vesselseg@champion: a registry model"):
        write_ensemble([(str(a), 1.0), (uri, 3.0)], tmp_path / "e.json")
    spec = write_ensemble([(str(a), 1.0), (uri, 3.0)], tmp_path / "e.json", resolve)
    assert read_members(spec) == [(str(tmp_path / "a.pt"), 1.0), (uri, 3.0)]
    with pytest.raises(ConfigError, match="a registry model"):
        load_model(spec)
    net, meta = load_model(spec, resolve)
    assert meta.model["members"] == ["unet", "unet2d"] and asked == [uri, uri]
    with pytest.raises(ConfigError, match="a registry model"):
        load_model(uri)
    assert load_model(uri, resolve)[1].model["name"] == "unet2d"


def test_cli_predict_with_ensemble(tmp_path: Path) -> None:
    a = _save(tmp_path / "a.pt", ModelConfig(base_channels=2, depth=2), 0)
    b = _save(tmp_path / "b.pt", ModelConfig(name="unet2d", base_channels=2, depth=2), 1)
    volume = tmp_path / "vol.npy"
    np.save(volume, np.random.default_rng(0).normal(100, 20, (16, 16, 16)).astype(np.float32))
    out = tmp_path / "pred"
    result = runner.invoke(
        app,
        [
            "predict",
            str(volume),
            "--ensemble",
            f"{a}:0.3",
            "--ensemble",
            f"{b}:0.7",
            "--out-dir",
            str(out),
            "--tile-size",
            "16",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "ensemble.json").is_file()
    assert (out / "vol.ensemble.prob.npy").is_file() and (out / "vol.ensemble.mask.npy").is_file()
    bad = runner.invoke(
        app, ["predict", str(volume), "--ensemble", f"{a}:0.3", "--out-dir", str(out)]
    )
    assert bad.exit_code == 2 and "at least two" in bad.output


# --------------------------------------------------------------------------- training


def _as_slice_folders(src: Path, dst: Path) -> None:
    """Copy a data_/mask_ npy pair folder as TIFF slice folders (one file per z slice)."""
    for sample in discover_dataset(src, require_masks=True):
        for kind, path in (("data", sample.image), ("mask", sample.mask)):
            folder = dst / f"{kind}_{sample.id}"
            folder.mkdir(parents=True)
            for z, plane in enumerate(np.load(path)):
                tifffile.imwrite(folder / f"slice_{z:04d}.tif", plane)


def test_unet2d_trains_on_a_tiff_slice_folder_dataset(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vesselseg import tracking
    from vesselseg.training.fit import train_model

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for split in ("train", "val"):
        _as_slice_folders(tiny_dataset / split, tmp_path / "tiff" / split)
    assert {s.image.is_dir() for s in discover_dataset(tmp_path / "tiff" / "train")} == {True}
    params = apply_overrides(
        Params(),
        [
            "model.name=unet2d",
            "model.base_channels=4",
            "model.depth=2",
            "model.context=3",
            "data.crop_size=16",
            "infer.tile_size=16",
            "data.samples_per_volume=4",
            "train.max_epochs=2",
            "train.experiment=test",
            f"data.train_dir={tmp_path / 'tiff' / 'train'}",
            f"data.val_dir={tmp_path / 'tiff' / 'val'}",
        ],
    )
    out = tmp_path / "models" / "u2d.pt"
    result = train_model(params, out, mlflow_root=tmp_path / "mlruns")
    assert result.epochs == 2
    run = tracking.client(tmp_path / "mlruns").get_run(result.run_id)
    assert run.data.params["model.name"] == "unet2d"
    assert (
        len(tracking.client(tmp_path / "mlruns").get_metric_history(result.run_id, "val_dice")) == 2
    )
    net, meta = load_model(out)
    assert isinstance(net, MultiAxisNet) and meta.model["views"] == ["z", "y", "x"]
    pred = predict_path(
        tmp_path / "tiff" / "val",
        out,
        tmp_path / "pred",
        InferConfig(tile_size=16),
        device="cpu",
        show_progress=False,
    )
    prob = np.load(pred.results[0].outputs.prob)
    assert prob.shape == (32, 40, 48) and 0 <= prob.min() and prob.max() <= 1


def test_overlay_of_a_single_slice_crop_has_one_row() -> None:
    import matplotlib.pyplot as plt

    from vesselseg.training.overlay import overlay_figure

    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, (1, 16, 16)).astype(np.uint8)
    fig = overlay_figure(rng.random((1, 16, 16)), label, rng.random((1, 16, 16)))
    assert len(fig.axes) == 3
    plt.close(fig)
    fig = overlay_figure(rng.random((8, 16, 16)), label.repeat(8, 0), rng.random((8, 16, 16)))
    assert len(fig.axes) == 9
    plt.close(fig)


def test_cli_ensemble_command_and_bad_input(tmp_path: Path) -> None:
    a = _save(tmp_path / "a.pt", ModelConfig(base_channels=2, depth=2), 0)
    b = _save(tmp_path / "b.pt", ModelConfig(name="unet2d", base_channels=2, depth=2), 1)
    out = tmp_path / "ens.json"
    ok = runner.invoke(app, ["ensemble", str(a), f"{b}:3", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "0.25" in ok.output and "0.75" in ok.output
    assert read_members(out) == [(str(a), 1.0), (str(b), 3.0)]
    for args, message in (
        ([str(a), str(tmp_path / "missing.pt")], "no such model file"),
        ([str(a), f"{b}:0"], "weight"),
        ([str(a), str(b), "--out", str(tmp_path / "e.txt")], "ends in .json"),
    ):
        bad = runner.invoke(app, ["ensemble", *args])
        assert bad.exit_code == 2, bad.output
        assert message in bad.output and "Traceback" not in bad.output


def test_train_multiview_option_applies_the_multiview_section(tmp_path: Path) -> None:
    from vesselseg.config import multiview_params

    p = apply_overrides(Params(), ["multiview.base_channels=6", "multiview.crop_size=32"])
    mv = multiview_params(p)
    assert mv.model.name == "unet2d" and mv.model.base_channels == 6
    assert mv.data.crop_size == 32 and mv.train.max_epochs == p.multiview.max_epochs
    bad = runner.invoke(app, ["train", "--multiview", "--model", "vnet"])
    assert bad.exit_code == 2 and "--multiview trains unet2d" in bad.output


def test_init_refuses_another_architecture(tiny_dataset: Path, tmp_path: Path) -> None:
    from vesselseg.bundle import ModelFileError
    from vesselseg.training.fit import load_initial_weights

    a = _save(tmp_path / "a.pt", ModelConfig(base_channels=2, depth=2), 0)
    net = build_model(ModelConfig(base_channels=2, depth=2))
    load_initial_weights(net, a, ModelConfig(base_channels=2, depth=2))
    want = torch.load(a, weights_only=True)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in want.items())
    with pytest.raises(ModelFileError, match="cannot start a unet2d"):
        load_initial_weights(build_model(ModelConfig(name="unet2d")), a, ModelConfig(name="unet2d"))
    with pytest.raises(ModelFileError, match="do not fit"):
        load_initial_weights(
            build_model(ModelConfig(base_channels=4, depth=2)),
            a,
            ModelConfig(base_channels=4, depth=2),
        )


def test_models_saved_before_2d_support_still_load(tmp_path: Path) -> None:
    import json

    a = _save(tmp_path / "old.pt", ModelConfig(base_channels=2, depth=2), 0)
    side = a.with_suffix(".json")
    meta = json.loads(side.read_text())
    del meta["model"]["context"], meta["model"]["views"]
    side.write_text(json.dumps(meta))
    net, loaded = load_model(a)
    assert type(net).__name__ == "UNet3D" and "context" not in loaded.model


def test_pseudo_labels_from_an_ensemble_record_every_member(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    import hashlib
    import json

    from vesselseg.config import PseudoConfig
    from vesselseg.pseudo import pseudo_label_dataset

    a = _save(tmp_path / "m" / "a.pt", ModelConfig(base_channels=2, depth=2), 0)
    b = _save(tmp_path / "m" / "b.pt", ModelConfig(name="unet2d", base_channels=2, depth=2), 1)
    spec = write_ensemble([(str(a), 1.0), (str(b), 2.0)], tmp_path / "m" / "ens.json")
    out = tmp_path / "pseudo"
    summary = pseudo_label_dataset(
        tiny_dataset / "unlabelled",
        spec,
        out,
        PseudoConfig(hi=0.6, lo=0.4),
        InferConfig(tile_size=16),
    )
    assert set(summary.volumes) == {"004"}
    meta = json.loads((out / "pseudo.json").read_text())
    members = meta["members"]
    assert [m["weight"] for m in members] == [1.0, 2.0]
    for member, path in zip(members, (a, b), strict=True):
        assert member["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
