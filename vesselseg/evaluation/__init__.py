"""``vesselseg evaluate``: score predictions against truth, write metrics, curves and pictures.

For every volume of a dataset folder that has a dense truth (``truth_<X>``, or Kaggle labels)
or a sparse annotation (``mask_<X>``), the predictions written by ``vesselseg predict`` are
scored with :func:`vesselseg.metrics.evaluate_pair` (missing predictions are made on the fly).
Outputs (``--metrics``/``--plots``; by default ``metrics/<data>.<model>.json`` and
``plots/<data>.<model>/``, so evaluations never overwrite each other —
:mod:`~vesselseg.evaluation.outputs`):

* the metrics file — overall (voxel counts summed over volumes; clDice and surface Dice
  averaged) and per-volume metrics, the model, the data and its digest, for ``dvc metrics``;
* ``pr.csv`` — precision, recall and Dice over thresholds, for ``dvc plots``, and ``pr.png``,
  the same curves drawn offline (:mod:`vesselseg.plots`);
* ``<X>.mip.png`` — maximum-intensity projection of true positives, false positives and
  false negatives; ``<X>.slices.png`` — three orthogonal slices with the same colours
  (:mod:`~vesselseg.evaluation.pictures`);
* the best-Dice threshold on the validation set (``--val-dir``), which ``vesselseg predict
  --threshold-from metrics.json`` uses.

Everything is logged to an MLflow evaluation run linked to the model's training run
(:mod:`~vesselseg.evaluation.tracked`).

Modules: :mod:`~vesselseg.evaluation.run` (:func:`evaluate_dataset`),
:mod:`~vesselseg.evaluation.score`, :mod:`~vesselseg.evaluation.pictures`,
:mod:`~vesselseg.evaluation.outputs`, :mod:`~vesselseg.evaluation.tracked`.
"""

from vesselseg.evaluation.outputs import EvaluationOutputError, default_outputs, write_json
from vesselseg.evaluation.pictures import colourise, outcome_mips, write_pictures
from vesselseg.evaluation.run import EvalSummary, evaluate_dataset
from vesselseg.evaluation.score import (
    aggregate,
    best_threshold,
    binary_truth,
    open_probabilities,
    scored_samples,
    truth_of,
    write_pr_csv,
)

__all__ = [
    "EvalSummary",
    "EvaluationOutputError",
    "aggregate",
    "best_threshold",
    "binary_truth",
    "colourise",
    "default_outputs",
    "evaluate_dataset",
    "open_probabilities",
    "outcome_mips",
    "scored_samples",
    "truth_of",
    "write_json",
    "write_pictures",
    "write_pr_csv",
]
