"""Streamed sliding-window inference (``vesselseg predict``).

* :mod:`~vesselseg.inference.tiling`: window grid (MONAI-compatible), Gaussian importance map,
  ``border`` variant, padding of small volumes - small pure functions.
* :mod:`~vesselseg.inference.predictor`: :class:`StreamingPredictor` - bounded-memory,
  resumable blending of a predict function over a lazily read volume.
* :mod:`~vesselseg.inference.network`: model loading, BatchNorm folding, flip TTA, bf16.
* :mod:`~vesselseg.inference.outputs`: output names, atomic probability + mask writers,
  progress file for ``--resume``.
* :mod:`~vesselseg.inference.run`: :func:`predict_path` over one volume or a folder.

Submodules import torch; this package itself imports nothing heavy.
"""
