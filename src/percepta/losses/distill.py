"""centerX knowledge-distillation losses for CenterNet-style heads, and their config options.

Follows ``CPFLAME/centerX`` ``modeling/losses/centernet_kdloss.py`` (notes/detection.md §2.3):

* **Heat map**: mean squared error between the student's and the teacher's class *probabilities*
  over every element of the supervised channels (``mean`` over ``B x C_t x H x W``).
* **Peak weights**: the teacher's heat map -> 3x3 max-pool -> keep the local maxima (zero
  elsewhere) -> maximum over the teacher's class channels: a ``[B,1,H,W]`` map whose non-zeros
  are the teacher's peak scores, i.e. "how sure the teacher is that an object is centred here".
* **Size / offset**: ``sum |s*m/n - t*m/n| / (sum m + 1e-4)`` with ``m`` the peak weights summed
  over both channels and all pixels (the normaliser ``sum m`` is over ``B x 1 x H x W``, not
  doubled for the two channels, exactly as centerX). ``n = (t_w + t_h) / 2 + 1e-4`` per pixel
  with ``norm_wh`` (relative size error), else 1. The offset term never uses ``n``.

About the blog's "relu": centerX passes both heat maps (and the mask's input) through
``LeakyReLU(0.01)`` / ``ReLU`` "to remove negatives" before the MSE. Its heads already end in a
sigmoid, so the maps are probabilities in (0, 1) and the (leaky) ReLU changes nothing: the loss
*is* MSE on probabilities, which is what is computed here (no ReLU). It does **not** clip
negative logits - a re-implementation that distils logits and adds a ReLU would compute a
different loss (it would ignore every background pixel whose logit is negative).

The default weights follow centerX's code defaults (``KD_WEIGHT`` 10 times ``KD_CLS_WEIGHT`` 1,
``KD_WH_WEIGHT`` 1, ``KD_REG_WEIGHT`` 0.1). The raw heat-map MSE is tiny (most pixels are ~0 in
both maps), which is why centerX's COCO yaml multiplies it by 10^5; with fixed-value loss
balancing (:mod:`percepta.losses.balance`) the static weights do not matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from percepta.ops import peak_mask

__all__ = [
    "TeacherConfig",
    "DistillConfig",
    "peak_weight_map",
    "kd_heatmap_loss",
    "kd_regression_loss",
]


@dataclass
class TeacherConfig:
    """One entry of ``model.distill.teachers``."""

    checkpoint: str = ""  # a percepta detection checkpoint (any backbone)
    name: str = ""  # used in the loss names (loss_kd_heatmap_<name>); default t0, t1, ...
    classes: list[str] = field(default_factory=list)  # teacher classes it teaches; [] = all
    hm_weight: float = 10.0
    wh_weight: float = 10.0
    off_weight: float = 1.0
    norm_wh: bool = False  # relative size error (divide by the teacher's mean side)


@dataclass
class DistillConfig:
    """``distill``: teachers supervising the student (CenterNet only); none = plain training.

    Each teacher's classes are mapped to the student's classes **by name**; with
    ``without_labels`` the student trains on the KD terms alone (e.g. on an ``image_folder``).
    """

    teachers: list[TeacherConfig] = field(default_factory=list)
    without_labels: bool = False  # drop the ground-truth losses (unlabelled training images)


def peak_weight_map(teacher_heat: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """``[B,C,H,W]`` probabilities -> ``[B,1,H,W]``: local maxima kept (others 0), max over C.

    A pixel is a peak when it equals the max of its ``kernel x kernel`` neighbourhood (the
    CenterNet decode's rule, ties included: :func:`percepta.ops.peak_mask`).
    """
    if teacher_heat.dim() != 4:
        raise ValueError(f"teacher heat map must be [B,C,H,W], got {tuple(teacher_heat.shape)}")
    return peak_mask(teacher_heat, kernel).amax(dim=1, keepdim=True)


def kd_heatmap_loss(student_heat: torch.Tensor, teacher_heat: torch.Tensor) -> torch.Tensor:
    """Mean squared error between student and teacher probabilities (same shape)."""
    if student_heat.shape != teacher_heat.shape:
        raise ValueError(
            f"student heat {tuple(student_heat.shape)} and teacher heat "
            f"{tuple(teacher_heat.shape)} differ"
        )
    return F.mse_loss(student_heat.float(), teacher_heat.float(), reduction="mean")


def kd_regression_loss(
    student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor, norm_wh: bool = False
) -> torch.Tensor:
    """Peak-weighted L1 between student and teacher ``[B,2,H,W]`` maps (size or offset).

    ``sum |s*m/n - t*m/n| / (sum m + 1e-4)``; ``m = weights`` ``[B,1,H,W]``; with ``norm_wh``,
    ``n = (t_w + t_h)/2 + 1e-4`` (the teacher's mean side at that pixel), else ``n = 1``.
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"student map {tuple(student.shape)} and teacher map {tuple(teacher.shape)} differ"
        )
    s, t, m = student.float(), teacher.float(), weights.float()
    if norm_wh:
        n = t.mean(dim=1, keepdim=True) + 1e-4
        s, t = s / n, t / n
    return (s * m - t * m).abs().sum() / (m.sum() + 1e-4)
