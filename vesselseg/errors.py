"""User-facing errors.

Every problem a user can cause (bad path, wrong shape, label values outside 0/1/2, NaN
intensities, bad params) raises a subclass of :class:`VesselsegError` with a one-line message
naming the file or field. The CLI prints the message and exits with code 2, no traceback.
"""

from __future__ import annotations


class VesselsegError(Exception):
    """Base class of every error a user can cause; the message is one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ConfigError(VesselsegError):
    """params.yaml or a CLI override is unknown, missing, mistyped or out of range."""


class MissingPathError(VesselsegError):
    """A path the user named does not exist or cannot be read."""


class VolumeFormatError(VesselsegError):
    """A volume file is truncated, corrupt, of an unknown type or not 3D."""


class ShapeMismatchError(VesselsegError):
    """Two volumes that must align (image and mask) have different shapes."""


class LabelValueError(VesselsegError):
    """A label volume holds values outside {0, 1, 2}."""


class NonFiniteError(VesselsegError):
    """An image holds NaN or infinite intensities."""


class DatasetError(VesselsegError):
    """A dataset folder is empty, inconsistent or lacks annotated vessel."""
