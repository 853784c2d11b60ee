"""Pseudo labels: thresholds, streamed small-component removal, provenance, stage-2 mixing."""

from __future__ import annotations

import json
from pathlib import Path

import cc3d
import numpy as np
import pytest

from vesselseg import pseudo
from vesselseg.config import DataConfig, InferConfig, PseudoConfig
from vesselseg.data.datamodule import VesselDataModule
from vesselseg.errors import MissingPathError
from vesselseg.io import open_volume
from vesselseg.io.pseudo_layout import discover_pseudo
from vesselseg.provenance import sha256_file
from vesselseg.pseudo import (
    pseudo_label_dataset,
    threshold_labels,
    write_pseudo_labels,
)


def test_threshold_labels_literal() -> None:
    prob = np.array([0.0, 0.1, 0.11, 0.5, 0.89, 0.9, 1.0], np.float32)
    np.testing.assert_array_equal(threshold_labels(prob, hi=0.9, lo=0.1), [2, 2, 0, 0, 0, 1, 1])


def test_small_components_dropped_across_slabs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pseudo, "SLAB_BYTES", 16 * 24 * 24 * 4)  # 4-plane slabs
    prob = np.zeros((24, 24, 24), np.float32)
    prob[2:20, 5:8, 5:8] = 0.95  # a long tube crossing many slab boundaries: 162 voxels
    prob[10:12, 15:17, 15:17] = 0.95  # a speck of 8 voxels, split by a boundary
    prob[0, 20, 20] = 0.5  # uncertain
    counts = write_pseudo_labels(
        prob, tmp_path / "mask.npy", PseudoConfig(hi=0.9, lo=0.1, min_component_voxels=20)
    )
    labels = open_volume(tmp_path / "mask.npy")[:]
    expected = threshold_labels(prob, 0.9, 0.1)
    vessel = cc3d.dust(expected == 1, threshold=20, connectivity=26)
    expected[(expected == 1) & ~vessel] = 0
    np.testing.assert_array_equal(labels, expected)
    assert counts.vessel == 162 and labels[10, 15, 15] == 0 and labels[0, 20, 20] == 0


def test_pseudo_dataset_provenance_and_discovery(
    tiny_dataset: Path, tmp_path: Path, tiny_model: Path
) -> None:
    out = tmp_path / "pseudo"
    cfg = PseudoConfig(hi=0.6, lo=0.4)
    summary = pseudo_label_dataset(
        tiny_dataset / "unlabelled", tiny_model, out, cfg, InferConfig(tile_size=[16, 16, 16])
    )
    meta = json.loads((out / "pseudo.json").read_text())
    assert meta["model_sha256"] == sha256_file(tiny_model)
    assert meta["hi"] == 0.6 and meta["lo"] == 0.4 and meta["created"]
    assert set(meta["volumes"]) == set(summary.volumes) == {"004"}
    labels = open_volume(out / "mask_004.npy")[:]
    prob = np.load(next((out / "probabilities").glob("*.prob.npy")))
    np.testing.assert_array_equal(labels, threshold_labels(prob, 0.6, 0.4))
    (sample,) = discover_pseudo(out)
    assert sample.image == (tiny_dataset / "unlabelled" / "data_004.npy").resolve()
    assert not list(out.rglob("*.part"))


def test_discover_pseudo_needs_provenance(tmp_path: Path) -> None:
    with pytest.raises(MissingPathError, match="pseudo.json"):
        discover_pseudo(tmp_path)


def test_stage2_mixes_labelled_and_pseudo_volumes(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "pseudo"
    out.mkdir()
    truth = open_volume(tiny_dataset / "unlabelled" / "truth_004.npy")[:].astype(np.float32)
    write_pseudo_labels(truth, out / "mask_004.npy", PseudoConfig())
    image = (tiny_dataset / "unlabelled" / "data_004.npy").resolve()
    (out / "pseudo.json").write_text(
        json.dumps(
            {
                "format": pseudo.FORMAT,
                "volumes": {"004": {"image": str(image), "mask": "mask_004.npy"}},
            }
        )
    )
    cfg = DataConfig(
        train_dir=str(tiny_dataset / "train"),
        val_dir=str(tiny_dataset / "val"),
        crop_size=[16, 16, 16],
        samples_per_volume=50,
    )
    dm = VesselDataModule(
        cfg, batch_size=2, seed=0, cache_dir=tmp_path / "cache", pseudo_dir=out, pseudo_ratio=0.8
    )
    dm.setup("fit")
    ds = dm.train_set
    assert len(ds.volumes) == 3 and ds.weights is not None
    picks = [ds.volume_of(k) for k in range(400)]
    assert 0.7 < np.mean(np.array(picks) == 2) < 0.9  # the pseudo volume, ~80% of crops
    image, label = ds[0]
    assert image.shape == (1, 16, 16, 16) and (label == 1).any()
