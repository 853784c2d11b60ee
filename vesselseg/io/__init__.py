"""Volume I/O: lazy readers with voxel size, atomic writers, dataset discovery, chunked checks."""

from vesselseg.io.atomic import partial_path
from vesselseg.io.checks import LabelCounts, check_finite, check_same_shape, count_labels
from vesselseg.io.dataset import Sample, discover_dataset, validate_sample, validate_training_set
from vesselseg.io.readers import detect_file_type, open_volume
from vesselseg.io.spacing import (
    SpacingError,
    SpacingMismatchError,
    VoxelSize,
    check_same_spacing,
    parse_spacing,
)
from vesselseg.io.volume import Volume, with_spacing
from vesselseg.io.writers import VolumeWriter, write_volume

__all__ = [
    "LabelCounts",
    "Sample",
    "SpacingError",
    "SpacingMismatchError",
    "Volume",
    "VolumeWriter",
    "VoxelSize",
    "check_finite",
    "check_same_shape",
    "check_same_spacing",
    "count_labels",
    "detect_file_type",
    "discover_dataset",
    "open_volume",
    "parse_spacing",
    "partial_path",
    "validate_sample",
    "validate_training_set",
    "with_spacing",
    "write_volume",
]
