"""Streamed sliding-window inference (``vesselseg predict``).

An engine in four parts - plan windows (pure), read ahead (thread), compute and blend (on the
device), write (thread) - plus the model side and the command's driver:

* :mod:`~vesselseg.inference.tiling`: window grid (MONAI-compatible), Gaussian importance map
  (MONAI's), ``border`` variant, padding of small volumes - small pure functions.
* :mod:`~vesselseg.inference.plan`: the pure planning of a run: plane regions, window order,
  output cells and the window that finishes each, memory estimate and plane block.
* :mod:`~vesselseg.inference.reader`: :class:`StripReader`, the read-ahead thread.
* :mod:`~vesselseg.inference.predictor`: :class:`StreamingPredictor` - bounded-memory,
  resumable blending of a predict function over a lazily read volume.
* :mod:`~vesselseg.inference.blender`: the weighted sums of the live cells as torch tensors on
  the inference device; finished cells to the host (pinned, non-blocking on CUDA).
* :mod:`~vesselseg.inference.writer`: :class:`SinkThread`, the writer thread (bounded queue,
  checkpoints after the cells before them).
* :mod:`~vesselseg.inference.tissue`: which voxels hold tissue (raw threshold or mask volume),
  for skipping windows without any (``infer.skip_empty``).
* :mod:`~vesselseg.inference.batching`: ``infer.batch_size: auto`` from the device's memory.
* :mod:`~vesselseg.inference.sinks`: the ``Sink`` protocol finished output goes to; an
  in-memory sink.
* :mod:`~vesselseg.inference.outputs`: output names, atomic probability + mask writers,
  progress file for ``--resume``, reading probabilities back.
* :mod:`~vesselseg.inference.network`: one saved network, BatchNorm folding (torch's), flip
  TTA batched in one call, bf16/fp16 autocast, ``torch.compile``.
* :mod:`~vesselseg.inference.ensemble`: ensemble files and the network averaging members.
* :mod:`~vesselseg.inference.loader`: :func:`load_model` - model file, ensemble, or registry
  URI (through an injected ``resolve``).
* :mod:`~vesselseg.inference.inputs`: the volumes a path holds; ``--shard`` selection.
* :mod:`~vesselseg.inference.resample`: the voxel-centre convention and a lazily sliced
  trilinear view of a volume on another grid (any box equals that box of the whole).
* :mod:`~vesselseg.inference.voxels`: the model's training voxel size, and whether an input is
  predicted on the model's grid (``infer.resample``).
* :mod:`~vesselseg.inference.model_grid`: predicting on the model's grid into a resumable
  file, and writing the probabilities back at the input's grid.
* :mod:`~vesselseg.inference.options`: the settings of a run, the prepared model, the checks.
* :mod:`~vesselseg.inference.volume_run`: :func:`predict_volume` - one volume, end to end.
* :mod:`~vesselseg.inference.run`: :func:`predict_path` over one volume or a folder;
  :func:`ensure_predictions` for the samples of a dataset.

Submodules import torch; this package itself imports nothing heavy.
"""
