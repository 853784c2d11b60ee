"""The MLflow pyfunc of a vesselseg model ("models from code": no cloudpickle).

``vesselseg register`` logs this file as the model's ``python_model``; MLflow runs it when the
model is loaded with ``mlflow.pyfunc.load_model``. It defines :class:`VesselsegModel` and hands
an instance to ``mlflow.models.set_model``; nothing else happens at import.

Artifacts (copied into the logged model):

* ``weights`` — ``NAME.pt``, a plain ``state_dict``, read with ``torch.load(weights_only=True)``;
* ``settings`` — ``NAME.json`` (:class:`vesselseg.bundle.ModelMeta`: network, normalisation
  percentiles, tiling, threshold, training info);
* ``config`` — ``config.json``, the resolved ``params.yaml`` at registration; its ``infer``
  section is the :class:`~vesselseg.config.InferConfig` the model predicts with.

``predict(context, model_input, params)`` takes a volume path (a string, a ``{"path": ...}``
dict or a DataFrame with a ``path`` column; any format ``vesselseg predict`` reads) or a 3D numpy
array, streams it through :func:`vesselseg.inference.run.predict_path` and returns the float32
probabilities ``(z, y, x)`` (a list of arrays for several paths). With ``params={"save_dir":
DIR}`` the outputs stay in DIR and the probabilities come back memory-mapped, so a volume larger
than RAM is never loaded whole; without it they are read into memory from a temporary folder.

The logged signature has no input schema (:func:`vesselseg.registry.pyfunc.model_signature`),
so every form works through ``mlflow.pyfunc.load_model(uri).predict(...)``::

    model = mlflow.pyfunc.load_model("models:/vesselseg@champion")
    prob = model.predict(volume)                           # a 3D numpy array
    prob = model.predict("scan.npy")                       # a path (or {"path": ...})
    prob = model.predict(pd.DataFrame({"path": ["scan.npy"]}), params={"save_dir": "out"})

and through ``mlflow models serve`` (``{"inputs": [[[...]]]}`` for an array,
``{"dataframe_split": {"columns": ["path"], "data": [["/abs/scan.npy"]]}}`` for a path on the
server's disk).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd


def infer_config(settings: dict[str, Any]) -> Any:
    """The :class:`InferConfig` of a logged model: ``config.json``'s ``infer`` section with the
    output forced to float32 ``.npy`` (what ``predict`` returns)."""
    import dataclasses

    from vesselseg.config import InferConfig, section_from_dict

    cfg = section_from_dict(InferConfig, settings, "infer", source="config.json")
    return dataclasses.replace(cfg, prob_dtype="float32", out_format="npy", naming="default")


class VesselsegModel(mlflow.pyfunc.PythonModel):
    """Streaming sliding-window vessel segmentation of a volume path or array."""

    def load_context(self, context: Any) -> None:
        from vesselseg.bundle import build_from_bundle

        self.weights = Path(context.artifacts["weights"])
        config = json.loads(Path(context.artifacts["config"]).read_text())
        self.cfg = infer_config(config["infer"])
        build_from_bundle(self.weights)  # fail at load time, not at the first request
        self.device = (context.model_config or {}).get("device", "auto")

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        """``model_input``: a 3D array, a path, a list of paths, a ``{"path": ...}`` dict or a
        DataFrame with a ``path`` column (MLflow passes it unchanged: no input schema). The
        hint is the one MLflow accepts without turning it into a second schema."""
        params = params or {}
        save_dir = params.get("save_dir")
        if isinstance(model_input, np.ndarray):
            return self._predict_array(model_input)
        results = [a for p in _paths(model_input) for a in self._predict_file(Path(p), save_dir)]
        return results[0] if len(results) == 1 else results

    def _predict_file(self, path: Path, save_dir: str | None) -> list[np.ndarray]:
        """Probabilities of the volume ``path`` (or of every volume in a folder)."""
        from vesselseg.inference.run import predict_path

        if save_dir:
            summary = predict_path(
                path, self.weights, save_dir, self.cfg, device=self.device, show_progress=False
            )
            return [np.load(r.outputs.prob, mmap_mode="r") for r in summary.results]
        with tempfile.TemporaryDirectory(prefix="vesselseg-pyfunc-") as tmp:
            summary = predict_path(
                path, self.weights, tmp, self.cfg, device=self.device, show_progress=False
            )
            return [np.load(r.outputs.prob) for r in summary.results]

    def _predict_array(self, array: np.ndarray) -> np.ndarray:
        from vesselseg.errors import VolumeFormatError

        array = np.squeeze(array) if array.ndim > 3 else array
        if array.ndim != 3:
            raise VolumeFormatError(f"model input: need a 3D (z, y, x) array, not {array.shape}")
        with tempfile.TemporaryDirectory(prefix="vesselseg-pyfunc-") as tmp:
            volume = Path(tmp) / "input.npy"
            np.save(volume, np.ascontiguousarray(array))
            return self._predict_file(volume, None)[0]


def _paths(model_input: Any) -> list[str]:
    """Volume paths from a string, a list of strings, a dict or a DataFrame with ``path``."""
    if isinstance(model_input, (str, Path)):
        return [str(model_input)]
    if isinstance(model_input, dict):
        value = model_input.get("path")
        return [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    if isinstance(model_input, (list, tuple)) and all(isinstance(v, str) for v in model_input):
        return [str(v) for v in model_input]
    columns = list(getattr(model_input, "columns", []))
    if "path" in columns or len(columns) == 1:  # the signature's string column
        return [str(v) for v in model_input["path" if "path" in columns else columns[0]].tolist()]
    raise TypeError(
        "vesselseg model input: give a volume path, {'path': ...}, a DataFrame with a 'path' "
        f"column or a 3D numpy array, not {type(model_input).__name__}"
    )


mlflow.models.set_model(VesselsegModel())
