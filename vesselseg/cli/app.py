"""The Typer application and its error guard; commands register on :data:`app`."""

from __future__ import annotations

import errno
from typing import Any

import typer
from typer.core import TyperGroup

from vesselseg.errors import VesselsegError

COMMAND_ORDER = (  # --help lists the commands in pipeline order
    "synth",
    "info",
    "prepare",
    "plan",
    "train",
    "predict",
    "evaluate",
    "pseudo",
    "view",
    "register",
    "ensemble",
    "models",
    "tune",
    "submit",
)
DISK_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
}


class GuardedGroup(TyperGroup):
    """Turn user errors into one line on stderr and exit code 2 (no traceback).

    Besides :class:`~vesselseg.errors.VesselsegError`, an ``OSError`` that the machine rather
    than the code causes (disk full, quota exceeded, read-only file system, permission denied)
    becomes ``error: <path>: no space left on device`` (and so on). Writers leave only
    ``NAME.part`` files behind, so nothing half-written looks finished.
    """

    @staticmethod
    def disk_error(exc: OSError) -> str | None:
        """``<path>: no space left on device`` for ENOSPC, EDQUOT, EROFS, EACCES; else None."""
        if exc.errno not in DISK_ERRORS:
            return None
        where = f"{exc.filename}: " if exc.filename else ""
        return " ".join(f"{where}{DISK_ERRORS[exc.errno]}".split())

    def list_commands(self, ctx: Any) -> list[str]:
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(super().list_commands(ctx), key=lambda n: rank.get(n, len(rank)))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VesselsegError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            message = self.disk_error(exc)
            if message is None:
                raise
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(VesselsegError.exit_code) from None


app = typer.Typer(
    cls=GuardedGroup,
    help="Segment blood vessels in very large 3D CT volumes from sparse annotations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
