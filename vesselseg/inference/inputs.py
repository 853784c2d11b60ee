"""What to predict: the volumes a path holds, and the share of them this process takes.

* :func:`find_inputs`: ``path`` itself, or the images of a dataset folder (outputs this package
  wrote are skipped).
* :func:`parse_shard` / :func:`select_shard`: ``--shard i/n`` (or ``slurm``, from a SLURM array
  job) keeps the inputs at positions ``p % n == i`` of the sorted list, so ``n`` processes
  cover every input exactly once with no coordination.
"""

from __future__ import annotations

import os
from pathlib import Path

from vesselseg.errors import ConfigError, DatasetError, MissingPathError
from vesselseg.inference.outputs import looks_like_output
from vesselseg.io.dataset import Sample


def find_inputs(path: Path, file_type: str | None = None) -> list[tuple[str, Path]]:
    """``(name, path)`` of the volumes to predict: ``path`` itself, or the images of a folder
    (``data_<X>`` of seed 000 pairs, ``kidney_*/images`` of Kaggle, or any volume files).

    ``name`` is the input's file name (the case id for Kaggle, also when ``path`` is one
    ``kidney_*`` case folder). Files this package wrote
    (``*.prob.npy``, ``*.mask.npy``...) are skipped; ``file_type`` keeps only that type.
    """
    from vesselseg.io import detect_file_type, discover_dataset

    if not path.exists():
        raise MissingPathError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "images").is_dir():  # one Kaggle case: kidney_X/images
        return [(path.name, path / "images")]
    samples = discover_dataset(path)
    found = []
    for sample in samples:
        if looks_like_output(sample.image):
            continue
        if file_type is not None and path.is_dir() and sample.layout != "kaggle":
            try:
                if detect_file_type(sample.image) != file_type:
                    continue
            except Exception:  # noqa: BLE001 - undetectable: let --file-type decide
                pass
        found.append((input_name(sample), sample.image))
    if not found:
        raise DatasetError(f"{path}: no volumes to predict")
    return found


def input_name(sample: Sample) -> str:
    """The name outputs are called after: the case id for Kaggle cases, else the file name —
    except a slice folder called ``images``, which is a case's (``kidney_5/images`` is
    ``kidney_5``, so predicting the folder itself names outputs as predicting its parent does)."""
    if sample.layout == "kaggle":
        return sample.id
    image = Path(sample.image)
    if image.name == "images" and image.is_dir():
        return image.resolve().parent.name
    return image.name


SLURM_ARRAY_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")


def parse_shard(text: str | None, env: dict[str, str] | None = None) -> tuple[int, int] | None:
    """``"i/n"`` (0-based: ``0 <= i < n``) → ``(i, n)``; ``"slurm"`` reads the array task.

    ``slurm`` takes ``i = (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP``
    and ``n = SLURM_ARRAY_TASK_COUNT``, so ``sbatch --array=0-3`` (or ``1-4``, ``0-6:2``) gives
    shards 0/4 .. 3/4.
    """
    if text is None:
        return None
    text = text.strip()
    if text.lower() == "slurm":
        env = os.environ if env is None else env
        missing = [k for k in SLURM_ARRAY_VARS if not env.get(k)]
        if missing:
            raise ConfigError(f"--shard slurm: ${missing[0]} is not set (not a SLURM array job?)")
        try:
            task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
            first = int(env.get("SLURM_ARRAY_TASK_MIN") or 0)
            step = int(env.get("SLURM_ARRAY_TASK_STEP") or 1)
        except ValueError:
            raise ConfigError("--shard slurm: SLURM_ARRAY_TASK_* are not integers") from None
        if step < 1 or (task - first) % step:
            raise ConfigError(f"--shard slurm: task {task} is not on the array's grid")
        index = (task - first) // step
        if not 0 <= index < count:
            raise ConfigError(
                f"--shard slurm: task {task} is not one of the {count} tasks "
                "(use a plain range such as --array=0-3)"
            )
        return index, count
    parts = text.split("/")
    try:
        index, count = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        index = count = None
    if index is None or count is None:
        raise ConfigError(f"--shard: expected i/n (e.g. 0/4) or slurm, got {text!r}")
    check_shard((index, count))
    return index, count


def check_shard(shard: tuple[int, int]) -> None:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {index}/{count}: need n >= 1 and 0 <= i < n (0-based)")


def select_shard(
    inputs: list[tuple[str, Path]], shard: tuple[int, int] | None
) -> list[tuple[str, Path]]:
    """The inputs of shard ``(i, n)``: position ``% n == i`` in the list sorted by name (and
    path), so ``n`` processes with ``i = 0 .. n-1`` cover every input exactly once."""
    if shard is None:
        return inputs
    check_shard(shard)
    index, count = shard
    ordered = sorted(inputs, key=lambda item: (item[0], str(item[1])))
    return [item for position, item in enumerate(ordered) if position % count == index]
