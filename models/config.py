"""Training parameters: one strict, frozen pydantic model (unknown keys are errors).

Defaults follow the SimAQ reference (../shared/reference/SIMAQ.md): 7-slice stacks, 64 features,
depth 4, Adam lr 1e-4 and weight decay 1e-5 (none on PReLU, bias, norm), focal (α 1, γ 2) + soft
Dice, 98 % of background-only stacks dropped, flips / elastic / resized crop / brightness / contrast
/ blur / noise / inversion augmentations.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from factory.errors import ConfigError
from factory.params import StrictModel

# Fields that define the network and its input; a resumed run must not change them.
ARCH_FIELDS = ("model", "features", "depth", "window", "axis")


class AugmentConfig(StrictModel):
    """Probabilities and ranges of the training augmentations (each applied independently).

    Intensities are in standard-normal units (the reconstructions are quantile-normalised).
    """

    enabled: bool = True
    flip_p: float = Field(0.5, ge=0, le=1)  # each of the two in-plane axes
    elastic_p: float = Field(0.3, ge=0, le=1)
    elastic_alpha_px: float = Field(4.0, ge=0)  # displacement amplitude, pixels
    elastic_sigma_px: float = Field(6.0, gt=0)  # smoothness of the displacement field, pixels
    crop_p: float = Field(0.3, ge=0, le=1)  # random resized crop
    crop_scale: tuple[float, float] = (0.5, 1.0)  # area fraction kept
    brightness_p: float = Field(0.3, ge=0, le=1)
    brightness: float = Field(0.2, ge=0)  # additive shift ~ U(−b, b)
    contrast_p: float = Field(0.3, ge=0, le=1)
    contrast: tuple[float, float] = (0.75, 1.25)  # multiplicative factor range
    blur_p: float = Field(0.2, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels (reference: 0.1 to 2)
    noise_p: float = Field(0.2, ge=0, le=1)
    noise_sd: tuple[float, float] = (0.0, 0.3)
    invert_p: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _ranges(self) -> AugmentConfig:
        for name in ("crop_scale", "contrast", "blur_sigma", "noise_sd"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name}: needs 0 <= lo <= hi, got {[lo, hi]}")
        if self.crop_scale[1] > 1 or self.crop_scale[0] <= 0:
            raise ValueError(f"crop_scale: must lie in (0, 1], got {list(self.crop_scale)}")
        return self


class TrainConfig(StrictModel):
    """Everything that defines a training run (recorded in every checkpoint)."""

    model: Literal["unet25d", "unet2d", "stack2d", "stack2d-dense", "unet3d"] = "unet25d"
    features: int = Field(64, ge=1, le=1024)  # channels of the first level; doubled per level
    depth: int = Field(4, ge=1, le=8)  # resolution levels (depth − 1 poolings)
    # slices per stack (odd); the centre one is segmented (dense models: any size, every slice)
    window: int = Field(7, ge=1, le=63)
    axis: int = Field(1, ge=0, le=2)  # slicing axis of (Z, Y, X); 1 = the tilt axis Y
    patch: int | None = Field(None, ge=8)  # random in-plane crop of this size (None: whole slice)
    batch_size: int = Field(8, ge=1)
    epochs: int = Field(10, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)  # None: one pass over the worker's slices
    max_steps: int | None = Field(None, ge=1)  # stop after this many optimiser steps in total
    # also checkpoint (with the stream position) every this many steps; None: at epoch ends only
    checkpoint_every: int | None = Field(None, ge=1)
    lr: float = Field(1e-4, gt=0)
    # constant, or cosine decay from lr to 0 over the run's steps (a stable last checkpoint)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: float = Field(1e-5, ge=0)
    focal_alpha: float = Field(1.0, ge=0)
    focal_gamma: float = Field(2.0, ge=0)
    dice_weight: float = Field(1.0, ge=0)
    background_keep: float = Field(0.02, ge=0, le=1)  # reference drops 98 % of background stacks
    mix_volumes: int = Field(4, ge=1)  # volumes held at once; stacks are drawn across them
    prefetch: int = Field(4, ge=0)  # batches prepared ahead by a background thread
    # Validation slices per epoch (all ranks together), evenly spaced through the val volumes;
    # 0 skips validation, None scores every slice (slow on a CPU; `simaq evaluate` does that).
    val_slices: int | None = Field(64, ge=0)
    augment: AugmentConfig = AugmentConfig()
    amp: bool = True  # mixed precision (CUDA only)
    seed: int = Field(0, ge=0)
    workers: int = Field(1, ge=1)
    # None: the machine's CPUs shared among the workers (at most one node's), as whole threads
    cpus_per_worker: float | None = Field(None, gt=0)
    use_gpu: bool = False
    real_ratio: float = Field(0.0, ge=0, le=1)  # few-shot: probability a stack comes from real data
    allow_bad_shards: bool = False
    # Ray Train's restarts from the last checkpoint after a worker fails (its process killed, OOM,
    # node lost, or an exception); a data or input error stops every rank at once, not retried
    max_failures: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.window % 2 != 1 and self.model not in ("unet3d", "stack2d-dense"):
            raise ValueError(f"window: must be odd, got {self.window}")
        if self.patch is not None and self.patch % (2 ** (self.depth - 1)):
            raise ValueError(
                f"patch: must be a multiple of 2**(depth-1) = {2 ** (self.depth - 1)}, "
                f"got {self.patch}"
            )
        return self

    def arch(self) -> dict:
        """The fields that define the network (recorded in checkpoints)."""
        return {k: getattr(self, k) for k in ARCH_FIELDS}


# Training presets: the base a run starts from, before --config and the flags.
# ``reference`` is the SimAQ network (64 features, depth 4): about 15 s a step on a 2-core CPU,
# meant for a GPU. ``cpu`` gives a useful model of the demo preset in minutes on 2 cores (README:
# "Segmentation quality"): 16 features, depth 3, a higher learning rate, 10 × 50 steps.
# ``cpu-quality`` was the README's first quality recipe, about 30 minutes on 2 cores: the channel-stacked
# U-Net (a step costs a sixth of unet25d's of the same width, so it affords 32 features, depth 4)
# for 10 × 300 steps. ``cpu-quality-light`` is the same network with light augmentation (flips,
# brightness, contrast) for 10 × 450 steps, the 45-minute budget: the simulator already draws blur,
# noise and dose physically, and inference resamples to the model's voxel size, so the 2D blur,
# noise, resized-crop, elastic and inversion augmentations only move the training slices away from
# the simulated distribution (README: 1200 steps on grid4s, cell / vacuole / droplet IoU 0.927 /
# 0.706 / 0.634 light against 0.896 / 0.653 / 0.547 with all of them; none: 0.917 / 0.671 / 0.597).
_LIGHT_AUGMENT = {"elastic_p": 0.0, "crop_p": 0.0, "blur_p": 0.0, "noise_p": 0.0, "invert_p": 0.0}
TRAIN_PRESETS: dict[str, dict] = {
    "reference": {},
    "cpu": {
        "features": 16,
        "depth": 3,
        "batch_size": 8,
        "lr": 2e-3,
        "lr_schedule": "cosine",
        "epochs": 10,
        "steps_per_epoch": 50,
        "val_slices": 32,
    },
    "cpu-quality": {
        "model": "stack2d",
        "features": 32,
        "depth": 4,
        "batch_size": 8,
        "lr": 2e-3,
        "lr_schedule": "cosine",
        "epochs": 10,
        "steps_per_epoch": 300,
        "val_slices": 32,
    },
}
TRAIN_PRESETS["cpu-quality-light"] = {
    **TRAIN_PRESETS["cpu-quality"],
    "steps_per_epoch": 450,
    "augment": _LIGHT_AUGMENT,
}
# ``cpu-10min``: ``cpu-quality``'s network and augmentations for 10 × 60 steps, the wall time of
# ``cpu`` (README: 204 s against 205 s on capillary-demo; about 8 minutes on the slower 2-core
# machine of the 2026-11-30 figures). The zero-shot recipe: under the domain shifts of
# bench/shift.py it loses 0.01-0.12 cell IoU where ``cpu``'s model loses up to 0.22.
TRAIN_PRESETS["cpu-10min"] = {**TRAIN_PRESETS["cpu-quality"], "steps_per_epoch": 60}


def default_train_preset(use_gpu: bool | None) -> str:
    """``reference`` when training on a GPU (asked for, or the only sensible choice), else ``cpu``."""
    return "reference" if use_gpu else "cpu"


def learning_rate(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of a run of ``total_steps`` steps.

    A pure function of the step, so a resumed run continues the schedule exactly.
    """
    if cfg.lr_schedule == "constant" or total_steps <= 1:
        return cfg.lr
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def parse_train_config(
    data: dict | None = None,
    *,
    preset: str | None = None,
    sets: list[str] | None = None,
    **overrides,
) -> TrainConfig:
    """A :class:`TrainConfig` from a preset, a dict (a ``--config`` file), ``--set KEY=VALUE``
    items (YAML values, dotted keys as for the factory's config), then keyword overrides (the
    CLI's flags; ``None`` ignored), each merged over the one before.

    Raises :class:`ConfigError` naming the field and the value.
    """
    from factory.config import deep_merge, parse_overrides

    if preset is not None and preset not in TRAIN_PRESETS:
        raise ConfigError(
            f"train.preset: unknown preset {preset!r} (choose from {', '.join(TRAIN_PRESETS)})"
        )
    merged = deep_merge(TRAIN_PRESETS[preset or "reference"], data or {})
    merged = deep_merge(merged, parse_overrides(sets or []))
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**merged)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e["loc"]) or "train"
        raise ConfigError(f"train.{loc}: {e['msg']} (got {e.get('input')!r})") from None
