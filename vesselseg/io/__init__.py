"""Volume I/O: lazy readers, atomic writers, dataset discovery and chunked checks."""

from vesselseg.io.checks import LabelCounts, check_finite, check_same_shape, count_labels
from vesselseg.io.dataset import Sample, discover_dataset, validate_sample, validate_training_set
from vesselseg.io.readers import Volume, detect_file_type, open_volume
from vesselseg.io.writers import VolumeWriter, partial_path, write_volume

__all__ = [
    "LabelCounts",
    "Sample",
    "Volume",
    "VolumeWriter",
    "check_finite",
    "check_same_shape",
    "count_labels",
    "detect_file_type",
    "discover_dataset",
    "open_volume",
    "partial_path",
    "validate_sample",
    "validate_training_set",
    "write_volume",
]
