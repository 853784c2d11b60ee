"""The sections of ``params.yaml``: one pydantic dataclass per stage, and :class:`Params`.

Types are strict (no coercion), ranges come from each field's ``Field(ge=…, gt=…, le=…,
lt=…)`` and relations between fields from validators; :mod:`vesselseg.config.loading` turns a
failure into one line naming the dotted key.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

import pydantic
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

T = TypeVar("T")

# Strict scalars: no "2" or 2.0 or True for an int (an int is a valid float); a list is a list
# or a tuple; a size is one side or [z, y, x]. ``precision: 32`` in YAML is the choice "32".
Int, Float = Annotated[int, pydantic.Strict()], Annotated[float, pydantic.Strict()]
Bool, Str = Annotated[bool, pydantic.Strict()], Annotated[str, pydantic.Strict()]
_untuple = pydantic.BeforeValidator(lambda v: list(v) if isinstance(v, tuple) else v)
List = Annotated[list[T], _untuple, pydantic.Strict()]
Size = T | Annotated[List[T], Field(min_length=3, max_length=3)]
Side8 = Annotated[Int, Field(ge=8)]
Triple = Annotated[List[T], Field(min_length=3, max_length=3)]
_number_text = pydantic.BeforeValidator(lambda v: str(v) if type(v) in (int, float) else v)
Precision = Annotated[Literal["32", "bf16"], _number_text]
InferPrecision = Annotated[Literal["32", "bf16", "fp16"], _number_text]  # fp16: CUDA only

# Unknown keys are refused. A relation check raises ValueError("{lo} must be < {hi}"): the
# braces name fields of the section and become dotted keys in the ConfigError.
_STRICT = pydantic.ConfigDict(extra="forbid", defer_build=True)


@dataclass(config=_STRICT)
class SynthConfig:
    """Synthetic demo data (``vesselseg synth``)."""

    out_dir: Str = "data/raw"
    n_train: Int = Field(4, ge=0)
    n_val: Int = Field(1, ge=0)
    n_test: Int = Field(2, ge=0)
    n_unlabelled: Int = Field(1, ge=0)
    shape: Size[Annotated[Int, Field(ge=16)]] = Field([96, 96, 96])
    spacing: Size[Annotated[Float, Field(gt=0.0)]] = Field([1.0, 1.0, 1.0])  # um (z, y, x)
    seed: Int = Field(0, ge=0)
    format: Literal["npy", "tiff", "zarr"] = "npy"
    n_trees: Int = Field(3, ge=1)
    max_radius: Float = Field(5.0, gt=0.5)
    min_radius: Float = Field(1.0, gt=0.0)
    annotated_fraction: Float = Field(0.01, gt=0.0, lt=0.5)
    # voxels just outside each vessel an annotator leaves unlabelled (0); 0: boxes fully labelled
    unlabelled_band: Float = Field(0.5, ge=0.0)
    noise: Float = Field(0.05, ge=0.0)
    slab: Int = Field(64, ge=8)

    @model_validator(mode="after")
    def _radii(self) -> SynthConfig:
        if self.min_radius > self.max_radius:
            raise ValueError("{min_radius} must be <= {max_radius}")
        return self


@dataclass(config=_STRICT)
class DataConfig:
    """Training data: where it is, how crops are drawn, resampled and augmented.

    Crops are sampled at ``target_spacing`` ``[z, y, x]`` (in the training volumes' unit;
    None: their median spacing per axis) and resampled from each volume on the fly;
    ``scale_range`` ``r`` zooms each training crop by a factor drawn from ``[1 - r, 1 + r]``;
    ``lowres_factor`` ``F > 1`` shows ``lowres_probability`` of the crops as a scan up to ``F``
    times coarser, resampled back to the crop's grid (what inference does to coarser scans).
    """

    train_dir: Str = "data/raw/train"
    val_dir: Str = "data/raw/val"
    crop_size: Size[Side8] = Field([48, 48, 48])
    samples_per_volume: Int = Field(16, ge=1)
    min_vessel_voxels: Int = Field(1, ge=1)
    background_crop_fraction: Float = Field(0.25, ge=0.0, le=1.0)
    num_loader_workers: Int = Field(0, ge=0)
    cache_dir: Str = ".cache/vesselseg"
    percentiles: List[Annotated[Float, Field(ge=0.0, le=100.0)]] = Field([0.5, 99.5])
    flip: Bool = True
    rot90: Bool = True
    intensity_scale: Float = Field(0.1, ge=0.0, lt=1.0)
    intensity_shift: Float = Field(0.1, ge=0.0)
    noise_std: Float = Field(0.0, ge=0.0)
    # voxel size (z, y, x) of every training and validation volume, overriding their files
    # (the CLI's --spacing); unit: of ``spacing`` (None: the volume's own unit, else um)
    spacing: Triple[Annotated[Float, Field(gt=0.0)]] | None = None
    unit: Literal["um", "mm"] | None = None
    # voxel size (z, y, x) crops are resampled to, in the volumes' unit; None: the median of
    # the training volumes (no resampling when none has a known spacing)
    target_spacing: Triple[Annotated[Float, Field(gt=0.0)]] | None = None
    scale_range: Float = Field(0.0, ge=0.0, lt=1.0)  # zoom each crop by U(1 - r, 1 + r)
    # simulate scans up to this many times coarser, resampled back (1 = off), on this share
    # of the crops: a model that meets coarser scans resampled to its grid has seen them
    lowres_factor: Float = Field(1.0, ge=1.0, le=4.0)
    lowres_probability: Float = Field(0.25, ge=0.0, le=1.0)
    # volume: each volume's percentiles -> 0..1; dataset: clip to the dataset's [lo, hi] and
    # z-score with its mean and sd (nnU-Net's CT scheme), the same numbers for every volume
    normalization: Literal["volume", "dataset"] = "volume"
    # [lo, hi, mean, std] of the training volumes' annotated voxels (the plan fills it)
    intensity_stats: Annotated[List[Float], Field(min_length=4, max_length=4)] | None = None

    @model_validator(mode="after")
    def _percentiles(self) -> DataConfig:
        if len(self.percentiles) != 2 or self.percentiles[0] >= self.percentiles[1]:
            raise ValueError("{percentiles} must be [low, high] with low < high")
        stats = self.intensity_stats
        if stats is not None and not (stats[0] < stats[1] and stats[3] > 0):
            raise ValueError("{intensity_stats} must be [lo, hi, mean, std] with lo < hi, std > 0")
        return self


@dataclass(config=_STRICT)
class ModelConfig:
    """Network architecture; ``norm`` is seed 000's ``--normalization {b,g}``.

    ``unet2d`` is a 2D U-Net trained on slices along ``views`` (multiview) with ``context``
    neighbouring slices as channels (2.5D; 1 = plain 2D) and applied along the same axes.

    ``strides`` and ``kernels`` make the 3D networks anisotropic (``vesselseg plan`` sets them
    from the voxel size): ``strides`` holds the ``[z, y, x]`` stride (1 or 2) of each of the
    ``depth - 1`` down-sampling steps, ``kernels`` the odd ``[z, y, x]`` kernel of the
    convolutions of each of the ``depth`` levels. None is the isotropic network (stride 2, and
    kernel 3 for ``unet`` or 5 for ``vnet``, on every axis). ``unet2d`` ignores both.

    ``oblique`` (``unet2d`` only; 3D networks ignore it) trains on slabs tilted by random 3D
    rotations of up to ``oblique_max_deg`` degrees about the annotated voxel they hold (the
    SenNet 1st place's rotated slice sampling); inference stays along ``views``.
    """

    name: Literal["vnet", "unet", "unet2d"] = "unet"
    norm: Literal["batch", "group"] = "batch"
    base_channels: Int = Field(8, ge=1)
    depth: Int = Field(3, ge=1, le=6)
    dropout: Float = Field(0.0, ge=0.0, lt=1.0)
    groups: Int = Field(8, ge=1)
    context: Int = Field(3, ge=1)
    views: List[Literal["z", "y", "x"]] = Field(["z", "y", "x"])
    strides: List[Triple[Annotated[Int, Field(ge=1, le=2)]]] | None = None
    kernels: List[Triple[Annotated[Int, Field(ge=1, le=7)]]] | None = None
    oblique: bool = False
    oblique_max_deg: Float = Field(30.0, gt=0.0, le=90.0)

    @model_validator(mode="after")
    def _slices(self) -> ModelConfig:
        if self.context % 2 == 0:
            raise ValueError(f"{{context}} must be odd, got {self.context}")
        if not self.views or len(set(self.views)) != len(self.views):
            raise ValueError("{views} must be distinct axes among z, y, x")
        if self.name == "unet2d":  # a 2D network: per-axis settings do not apply
            return self
        if self.strides is not None and len(self.strides) != self.depth - 1:
            raise ValueError(f"{{strides}} must list depth - 1 = {self.depth - 1} [z, y, x] steps")
        if self.kernels is not None and len(self.kernels) != self.depth:
            raise ValueError(f"{{kernels}} must list depth = {self.depth} [z, y, x] kernels")
        if self.kernels is not None and any(k % 2 == 0 for kk in self.kernels for k in kk):
            raise ValueError("{kernels} must be odd")
        return self


@dataclass(config=_STRICT)
class MultiviewConfig:
    """The 2D/2.5D multiview U-Net of seed 004 (``vesselseg train --multiview``).

    Its settings where they differ from the 3D model's: applied over ``model`` (name
    ``unet2d``; ``model.context`` and ``model.views`` as they are), ``data`` and ``train``.
    ``crop_size``'s sides give the in-plane size of the slices along each view. ``norm`` is
    its own (batch: its batches of 8 slices keep BatchNorm's statistics steady, unlike the 3D
    model's batches of 2 crops).
    """

    norm: Literal["batch", "group"] = "batch"
    base_channels: Int = Field(16, ge=1)
    depth: Int = Field(4, ge=2, le=6)
    crop_size: Size[Side8] = Field([96, 96, 96])
    batch_size: Int = Field(8, ge=1)
    samples_per_volume: Int = Field(64, ge=1)
    max_epochs: Int = Field(12, ge=1)
    lr: Float = Field(2e-3, gt=0.0)
    ensemble_weight: Float = Field(1.0, gt=0.0)


@dataclass(config=_STRICT)
class TrainConfig:
    """Optimisation, schedule, checkpoints and tracking of ``vesselseg train``."""

    out_dir: Str = "models"
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: Float = Field(2e-3, gt=0.0)
    weight_decay: Float = Field(1e-4, ge=0.0)
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    lr_reduce_factor: Float = Field(0.5, gt=0.0, lt=1.0)
    lr_patience: Int = Field(3, ge=0)
    min_lr: Float = Field(1e-6, ge=0.0)
    warmup_epochs: Int = Field(1, ge=0)
    # exponential moving average of the weights (per step; validated, checkpointed and saved
    # in place of the raw weights); 0 = off
    ema_decay: Float = Field(0.0, ge=0.0, lt=1.0)
    batch_size: Int = Field(2, ge=1)
    max_epochs: Int = Field(14, ge=1)
    precision: Precision = "32"
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    devices: Int = Field(1, ge=1)
    num_nodes: Int = Field(1, ge=1)
    seed: Int = Field(0, ge=0)
    dice_weight: Float = Field(1.0, ge=0.0)
    bce_weight: Float = Field(1.0, ge=0.0)
    monitor: Str = "val_dice"
    monitor_mode: Literal["max", "min"] = "max"
    # the saved model's weights: the last epoch's (robust when validation is small and noisy:
    # a best-epoch pick can land on an early model that only fits the validation volume), or
    # those of the epoch with the best ``monitor``
    model_from: Literal["last", "best"] = "last"
    experiment: Str = "vesselseg"
    run_name: Str = ""
    overlay_every_n_epochs: Int = Field(5, ge=0)
    # after training: the threshold maximising Dice on the validation volumes' annotated
    # voxels becomes the model's (predict uses it unless infer.threshold / --threshold is set)
    calibrate_threshold: Bool = True


@dataclass(config=_STRICT)
class InferConfig:
    """Streamed sliding-window inference (``vesselseg predict``).

    ``batch_size: auto`` picks the windows per network call from the device's free memory;
    ``compile`` wraps the network in ``torch.compile``; ``skip_empty`` (None: on when
    ``tissue_threshold`` or ``tissue_mask`` is given) skips windows without tissue."""

    tile_size: Size[Side8] = Field([48, 48, 48])
    overlap: Float = Field(0.25, ge=0.0, lt=1.0)
    border: Int = Field(0, ge=0)
    blend: Literal["gaussian", "constant"] = "gaussian"
    batch_size: Annotated[Int, Field(ge=1)] | Literal["auto"] = 2
    tta: Bool = False
    precision: InferPrecision = "32"
    compile: Bool = False
    skip_empty: Bool | None = None
    tissue_threshold: Float | None = None  # raw intensity: voxels >= this are tissue
    tissue_mask: Str | None = None  # a volume (non-zero: tissue), or a folder of them by name
    # mask = probability >= threshold; None: the model's own (calibrated at training, else 0.5)
    threshold: Annotated[Float, Field(gt=0.0, lt=1.0)] | None = None
    prob_dtype: Literal["float32", "float16", "uint8"] = "float32"
    out_format: Literal["npy", "zarr", "ome-zarr", "tiff", "nifti"] = "npy"
    chunk_size: Size[Annotated[Int, Field(ge=1)]] = Field([64, 64, 64])  # zarr outputs' chunks
    naming: Literal["default", "seed"] = "default"
    out_dir: Str = "predictions"
    resample: Bool = True  # inputs at another voxel size are resampled to the model's
    spacing: Triple[Annotated[Float, Field(gt=0.0)]] | None = None  # overrides inputs' (z, y, x)
    unit: Literal["um", "mm"] | None = None  # of ``spacing`` (None: the input's own unit)

    @model_validator(mode="after")
    def _tissue(self) -> InferConfig:
        if self.tissue_threshold is not None and self.tissue_mask is not None:
            raise ValueError("give {tissue_threshold} or {tissue_mask}, not both")
        if self.skip_empty and self.tissue_threshold is None and self.tissue_mask is None:
            raise ValueError("{skip_empty} needs {tissue_threshold} or {tissue_mask}")
        return self

    @property
    def skips_empty(self) -> bool:
        """Whether windows without tissue are skipped (``skip_empty``, by default on when a
        tissue threshold or mask is given)."""
        given = self.tissue_threshold is not None or self.tissue_mask is not None
        return given if self.skip_empty is None else self.skip_empty


@dataclass(config=_STRICT)
class PseudoConfig:
    """Pseudo labels from confident predictions (``vesselseg pseudo``) and stage-2 training:
    ``mix_ratio`` of its crops come from pseudo-labelled volumes, and it fine-tunes stage 1
    (``train --init``) for ``finetune_epochs`` at ``finetune_lr``, saving the moving average
    of its weights (``train.ema_decay`` = ``finetune_ema_decay``)."""

    in_dir: Str = "data/raw/unlabelled"
    out_dir: Str = "data/pseudo"
    hi: Float = Field(0.9, gt=0.0, lt=1.0)
    lo: Float = Field(0.02, gt=0.0, lt=1.0)
    min_component_voxels: Int = Field(0, ge=0)
    mix_ratio: Float = Field(0.25, ge=0.0, le=1.0)
    finetune_epochs: Int = Field(6, ge=1)
    finetune_lr: Float = Field(5e-4, gt=0.0)
    # weight averaging of the fine-tune: its last epoch alone drifts towards the pseudo-labelled
    # volumes (demo seed 2: test Dice 0.71 without, 0.84 with 0.995); 0 = off
    finetune_ema_decay: Float = Field(0.995, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _band(self) -> PseudoConfig:
        if self.lo >= self.hi:
            raise ValueError("{lo} must be < {hi}")
        return self


@dataclass(config=_STRICT)
class TuneConfig:
    """Optuna search space and study settings (``vesselseg tune``)."""

    n_trials: Int = Field(8, ge=1)
    timeout: Int = Field(0, ge=0)
    jobs: Int = Field(1, ge=1)
    study: Str = "vesselseg"
    storage: Str = ""
    pruner: Literal["median", "hyperband", "none"] = "median"
    crop_sizes: List[Side8] = Field([32, 48, 64])
    lr_min: Float = Field(1e-4, gt=0.0)
    lr_max: Float = Field(1e-2, gt=0.0)
    schedules: List[Literal["plateau", "cosine"]] = Field(["plateau", "cosine"])
    batch_sizes: List[Annotated[Int, Field(ge=1)]] = Field([1, 2, 4])
    max_epochs: Int = Field(4, ge=1)
    min_lr_ratios: List[Annotated[Float, Field(gt=0.0, le=1.0)]] = Field([0.001, 0.01])
    plateau_factor_min: Float = Field(0.2, gt=0.0, lt=1.0)
    plateau_factor_max: Float = Field(0.7, gt=0.0, lt=1.0)
    plateau_patiences: List[Annotated[Int, Field(ge=0)]] = Field([1, 2, 3])
    warmup_epochs: List[Annotated[Int, Field(ge=0)]] = Field([0, 1, 2])
    startup_trials: Int = Field(4, ge=0)
    pruner_warmup_epochs: Int = Field(1, ge=0)
    seed: Int = Field(0, ge=0)
    out_dir: Str = "tuning"

    @model_validator(mode="after")
    def _lr_range(self) -> TuneConfig:
        if self.lr_min > self.lr_max:
            raise ValueError("{lr_min} must be <= {lr_max}")
        return self


@dataclass(config=_STRICT)
class RegisterConfig:
    """MLflow Model Registry (``vesselseg register``)."""

    name: Str = "vesselseg"
    alias: Str = "challenger"
    champion_alias: Str = "champion"
    metric: Str = "dice"
    test_dir: Str = "data/raw/test"  # the metric is read from metrics of this folder only


@dataclass(config=_STRICT)
class PlanConfig:
    """``vesselseg plan``: how the dataset fingerprint becomes sizes (see vesselseg.plan).

    ``memory_gb`` is the training memory budget (None: the CUDA device's memory, 4 GB on CPU)
    and ``crop_voxels`` the crop volume aimed at (None: 128³ on a CUDA device, 48³ on CPU,
    where compute rather than memory is the limit). An axis is pooled (and gets 3-wide
    kernels) once its spacing is within ``anisotropy_ratio`` of the finest; the target spacing
    of an axis coarser than ``anisotropy_threshold`` times the others is its 10th percentile.
    Pooling stops when a pooled side would fall below ``min_feature_map`` voxels or at
    ``max_depth`` levels. A ``unet2d`` view is kept when its slices are at least
    ``min_view_pixels`` wide. An epoch draws at least ``crops_per_epoch`` crops: with few
    training volumes ``data.samples_per_volume`` is raised to reach it. Keys in ``keep`` are
    kept as params.yaml has them, like keys that differ from the defaults or are given on the
    command line.
    """

    enabled: Bool = True
    memory_gb: Annotated[Float, Field(gt=0.0)] | None = None
    crop_voxels: Annotated[Int, Field(ge=512)] | None = None
    anisotropy_ratio: Float = Field(2.0, gt=1.0)
    anisotropy_threshold: Float = Field(3.0, gt=1.0)
    min_feature_map: Int = Field(8, ge=1)
    max_depth: Int = Field(5, ge=2, le=6)
    min_view_pixels: Int = Field(32, ge=1)
    min_batch_size: Int = Field(2, ge=1)
    max_batch_size: Int = Field(8, ge=1)
    crops_per_epoch: Int = Field(64, ge=1)
    keep: List[Str] = Field([])

    @model_validator(mode="after")
    def _batch(self) -> PlanConfig:
        if self.min_batch_size > self.max_batch_size:
            raise ValueError("{min_batch_size} must be <= {max_batch_size}")
        return self


@dataclass(config=_STRICT)
class Params:
    """All of ``params.yaml``: one section per stage."""

    synth: SynthConfig = Field(default_factory=SynthConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    multiview: MultiviewConfig = Field(default_factory=MultiviewConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    pseudo: PseudoConfig = Field(default_factory=PseudoConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    register: RegisterConfig = Field(default_factory=RegisterConfig)
