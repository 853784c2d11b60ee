"""The MLflow pyfunc of a saved model: what it is made of and how it is logged.

"Models from code": the model is :mod:`vesselseg.mlflow_model` (no cloudpickle), with the
weights, their settings and the resolved config as artifacts and a copy of the ``vesselseg``
package as ``code_paths``; requirements are pinned from this environment (no inference, no
network). mlflow is imported inside functions only.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOGGED_MODEL_NAME = "vesselseg"  # the pyfunc's name inside its run
VOXEL_COUNTS = ("tp", "fp", "fn", "tn", "volumes")  # of metrics.json's overall: not scores
REQUIREMENTS = (
    "torch",
    "numpy",
    "pandas",
    "monai",
    "scipy",
    "tifffile",
    "zarr",
    "pyyaml",
    "mlflow",
)


def pinned_requirements() -> list[str]:
    """``name==version`` of what the pyfunc imports, from this environment (no inference)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            log.warning("%s is not installed; left out of the model's requirements", name)
    return pins


def model_signature() -> Any:
    """No input schema, so MLflow passes the input through unchanged: a 3D numpy array, a
    volume path (string, list, ``{"path": ...}``) or a DataFrame with a ``path`` column all
    reach :meth:`vesselseg.mlflow_model.VesselsegModel.predict` (one input schema cannot hold
    both a tensor and a string column: MLflow would refuse the other form). Output: float32
    probabilities (z, y, x); param ``save_dir`` keeps the outputs there (memory-mapped
    result)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=None,
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, -1, -1))]),
        params=ParamSchema([ParamSpec("save_dir", "string", "")]),
    )


def stage_model(model_path: Path, params: Any, folder: Path) -> tuple[Path, Any, dict[str, str]]:
    """Copy (or convert, for a ``.ckpt``) the model and the resolved config into ``folder``;
    returns ``(weights path, meta, artifacts)``."""
    from vesselseg.bundle import build_from_bundle, load_bundle, meta_path, save_bundle
    from vesselseg.config import Params, params_to_dict

    build_from_bundle(model_path)  # the weights must fit the saved settings
    if model_path.suffix == ".ckpt":
        state, meta = load_bundle(model_path)
        weights = save_bundle(folder / f"{model_path.stem}.pt", state, meta)
    else:
        weights = folder / model_path.name
        shutil.copyfile(model_path, weights)
        shutil.copyfile(meta_path(model_path), meta_path(weights))
        _, meta = load_bundle(weights)
    config = folder / "config.json"
    config.write_text(json.dumps(params_to_dict(params or Params()), indent=2, sort_keys=True))
    artifacts = {"weights": str(weights), "settings": str(meta_path(weights))}
    return weights, meta, {**artifacts, "config": str(config)}


def stage_code(folder: Path) -> Path:
    """A copy of the vesselseg package without caches, for ``code_paths``."""
    import vesselseg

    source = Path(vesselseg.__file__).parent
    target = folder / "vesselseg"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def log_pyfunc(
    run_id: str,
    meta: Any,
    artifacts: dict[str, str],
    code: Path,
    tags: dict[str, str],
    metrics: dict[str, float],
) -> Any:
    """Log the pyfunc ("models from code") into ``run_id``; returns MLflow's ``ModelInfo``."""
    import mlflow

    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # no input example, on purpose: the signature is explicit and an example would run the
        # model while logging
        warnings.filterwarnings("ignore", message=".*input example.*")
        info = mlflow.pyfunc.log_model(
            name=LOGGED_MODEL_NAME,
            python_model=str(Path(__file__).parents[1] / "mlflow_model.py"),
            artifacts=artifacts,
            code_paths=[str(code)],
            pip_requirements=pinned_requirements(),
            signature=model_signature(),
            model_config={"device": "auto"},
            metadata={
                "vesselseg_format": meta.format,
                "weights_sha256": tags["weights_sha256"],
                "data_version": tags["data_version"],
                "threshold": float(meta.threshold),  # predict's mask threshold (calibrated)
                "threshold_calibrated": "calibration" in meta.info,
                "normalization": "volume" if meta.intensity is None else "dataset",
            },
        )
        scores = {f"registered_{k}": v for k, v in metrics.items() if k not in VOXEL_COUNTS}
        if scores:  # on the logged model (and so the run); the voxel counts stay version tags
            mlflow.log_metrics(scores, model_id=info.model_id)
    return info
