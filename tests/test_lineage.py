"""Data lineage: the digest of a data folder (DVC's md5 when DVC knows it), DVC outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vesselseg.lineage import dataset_ref, dvc_md5, dvc_outputs, is_dvc_output

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"


def make_data(root: Path) -> Path:
    raw = root / "data" / "raw"
    (raw / "train" / "sub").mkdir(parents=True)
    (raw / "val").mkdir()
    (raw / "train" / "a.npy").write_bytes(b"a" * 10)
    (raw / "train" / "sub" / "b.npy").write_bytes(b"bb")
    (raw / "val" / "c.npy").write_bytes(b"c")
    return raw


def test_untracked_folder_digest_is_names_and_sizes(tmp_path: Path) -> None:
    raw = make_data(tmp_path)
    ref = dataset_ref(raw / "train", tmp_path / "dvc.lock")
    assert ref.kind == "files" and len(ref.digest) == 32
    assert (ref.files, ref.size, ref.source) == (2, 12, (raw / "train").resolve().as_posix())
    assert dataset_ref(raw / "train", tmp_path / "dvc.lock") == ref  # deterministic
    (raw / "train" / "a.npy").write_bytes(b"a" * 11)  # another size: another digest
    assert dataset_ref(raw / "train", tmp_path / "dvc.lock").digest != ref.digest
    assert '"files": 2' in ref.profile() and ref.label() == f"{ref.name}@{ref.digest}"


def test_name_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert dataset_ref("data/raw/val").name == "data/raw/val"
    monkeypatch.chdir(tmp_path / "data")
    assert dataset_ref(tmp_path / "data" / "raw").name == "raw"


def test_dvc_lock_entries_give_the_dvc_md5(tmp_path: Path) -> None:
    make_data(tmp_path)
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  train:\n    cmd: x\n    deps:\n"
        "    - path: data/raw/train\n      hash: md5\n"
        "      md5: 0123456789abcdef0123456789abcdef.dir\n"
    )
    ref = dataset_ref(tmp_path / "data" / "raw" / "train", lock)
    assert (ref.kind, ref.digest) == ("dvc", "0123456789abcdef0123456789abcdef")
    assert dvc_md5(tmp_path / "data" / "raw" / "val", lock) is None  # no entry, no cache
    assert dvc_md5(tmp_path.parent, lock) is None  # outside the project


@pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed")
def test_subfolder_of_a_tracked_folder_gets_the_md5_dvc_computes(tmp_path: Path) -> None:
    """``data/raw`` is tracked (``dvc add``); the digest of ``data/raw/train`` derived from its
    cached listing equals what ``dvc add data/raw/train`` records in a second project."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    projects = []
    for name, target in (("whole", "data/raw"), ("part", "data/raw/train")):
        project = tmp_path / name
        make_data(project)
        for args in (["init", "--no-scm", "-q"], ["add", "-q", target]):
            done = subprocess.run([str(DVC), *args], cwd=project, env=env, capture_output=True)
            assert done.returncode == 0, done.stderr.decode()[-2000:]
        projects.append(project)
    whole, part = projects
    from vesselseg.lineage import _dvc_file_md5

    expected = _dvc_file_md5("data/raw/train", part).removesuffix(".dir")
    ref = dataset_ref(whole / "data" / "raw" / "train", whole / "dvc.lock")
    assert (ref.kind, ref.digest) == ("dvc", expected)
    single = dataset_ref(whole / "data" / "raw" / "val" / "c.npy", whole / "dvc.lock")
    assert single.kind == "dvc" and single.digest == "4a8a08f09d37b73795649038408b5f33"  # md5("c")


def test_dvc_outputs_of_the_pipeline() -> None:
    outputs = dvc_outputs(ROOT / "dvc.yaml")
    assert {"metrics.json", "plots/pr.csv", "plots/pr.png", "metrics/stage1.json"} <= outputs
    assert {"models/stage1.curves.png", "data/raw"} <= outputs
    lock = ROOT / "dvc.yaml"
    assert is_dvc_output(ROOT / "metrics.json", lock)
    assert is_dvc_output(ROOT / "plots" / "compare" / "stage1" / "pr.png", lock)  # inside an out
    assert not is_dvc_output(ROOT / "metrics" / "test.stage2.json", lock)
    assert not is_dvc_output(ROOT / "plots" / "test.stage2", lock)
