"""The ``vesselseg`` command line: one thin command per pipeline stage.

Commands parse options, load ``params.yaml`` (strictly; CLI options and ``--set
section.key=value`` override it) and call one function of the package. Heavy libraries (torch,
mlflow, lightning, optuna, dvc, numpy) are imported inside commands so ``--help`` stays instant.
Every :class:`~vesselseg.errors.VesselsegError` is printed as one line and exits with code 2.

One module per group of commands; importing them registers the commands on :data:`app`.
"""

from __future__ import annotations

import sys

from vesselseg.cli import data, models, plan, predict, submit, train, tune, view  # noqa: F401
from vesselseg.cli.app import GuardedGroup, app
from vesselseg.cli.common import best_threshold_from, load_params, parse_size

__all__ = ["GuardedGroup", "app", "best_threshold_from", "load_params", "main", "parse_size"]


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())
