"""Optimizer and learning-rate schedule builders from the ``train.optimizer`` / ``train.scheduler``
options (:mod:`percepta.engine.options`).

- Optimizers are ``torch.optim.SGD`` and ``torch.optim.AdamW`` (its fused implementation where
  the parameters allow it: the same update, one kernel). With
  ``no_decay_norm_and_bias`` the parameters of normalisation layers (BatchNorm, GroupNorm,
  LayerNorm, InstanceNorm, LocalResponseNorm, RMSNorm) and every parameter named ``bias`` go to
  a second parameter group with ``weight_decay=0`` ("no bias decay", He et al., Bag of
  Tricks, 2019; detectron2's ``get_default_optimizer_params`` with ``weight_decay_norm=0``).
  The rule goes by module type rather than timm's "every 1-d parameter" so that the option
  means what its name says.
- The schedule is one ``torch.optim.lr_scheduler.LambdaLR`` whose factor is the closed form

      factor(t) = warmup(t) * base(t)
      warmup(t) = warmup_factor + (1 - warmup_factor) * t / warmup_iters  (t < warmup_iters)
                = 1                                                      (otherwise)
      base(t)   = 1                                           (constant)
                = gamma ** #{k in milestones : k <= t}       (step)
                = m + (1 - m) * (1 + cos(pi * t / T)) / 2    (cosine; m = min_lr_factor,
                                                              T = max_iters, t capped at T)

  with ``t`` the number of completed iterations. One closed form of the iteration, rather than
  a chain such as ``SequentialLR(LinearLR, CosineAnnealingLR)`` (whose chainable cosine updates
  the lr from its previous value), keeps the schedule exactly resumable: ``LambdaLR``'s state is
  ``last_epoch`` and the base learning rates, so the lr after a resume is the same float as in
  an uninterrupted run.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from percepta.errors import ConfigError, PerceptaError

__all__ = [
    "NORM_LAYERS",
    "param_groups",
    "build_optimizer",
    "build_scheduler",
    "lr_factor_fn",
    "amp_dtype",
]

NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*d, SyncBatchNorm, InstanceNorm*d
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def _config_error(msg: str) -> PerceptaError:

    return ConfigError(msg)


def _get(opts: Any, key: str, default: Any = None) -> Any:
    return opts.get(key, default) if isinstance(opts, dict) else getattr(opts, key, default)


def param_groups(
    model: nn.Module, weight_decay: float, no_decay_norm_and_bias: bool = True
) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed group and a ``weight_decay=0`` group.

    Returns a list of one or two ``{"params": [...], "weight_decay": wd, "name": ...}`` dicts
    (empty groups are left out); shared parameters appear once.
    """
    no_decay_ids: set[int] = set()
    if no_decay_norm_and_bias:
        for module in model.modules():
            is_norm = isinstance(module, NORM_LAYERS)
            for pname, p in module.named_parameters(recurse=False):
                if is_norm or pname == "bias":
                    no_decay_ids.add(id(p))
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if id(p) in no_decay_ids else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": float(weight_decay), "name": "decay"})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    if not groups:
        raise _config_error("the model has no trainable parameters")
    return groups


def _fusable(groups: list[dict[str, Any]]) -> bool:
    """PyTorch's fused AdamW (one kernel over all tensors; ~5x faster than the default
    per-tensor loop on CPU, e.g. 19 vs 90 ms per step for a ResNet-18) takes float tensors on
    CPU or CUDA; anything else keeps the default implementation."""
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )


def build_optimizer(model: nn.Module, opts: Any) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` or ``torch.optim.AdamW`` from ``train.optimizer`` options."""
    name = str(_get(opts, "name", "adamw")).lower()
    lr = float(_get(opts, "lr", 1e-3))
    groups = param_groups(
        model,
        float(_get(opts, "weight_decay", 0.0)),
        bool(_get(opts, "no_decay_norm_and_bias", True)),
    )
    if name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=float(_get(opts, "momentum", 0.9)),
            nesterov=bool(_get(opts, "nesterov", False)),
        )
    if name == "adamw":
        betas = tuple(float(b) for b in _get(opts, "betas", (0.9, 0.999)))
        if len(betas) != 2:
            raise _config_error(f"train.optimizer.betas must have two values, got {list(betas)}")
        return torch.optim.AdamW(
            groups,  # type: ignore[arg-type]
            lr=lr,
            betas=betas,
            fused=_fusable(groups),
        )
    raise _config_error(f"train.optimizer.name: unknown optimizer {name!r}; use 'sgd' or 'adamw'")


def lr_factor_fn(opts: Any, max_iters: int):
    """The closed-form lr multiplier ``factor(t)`` described in the module docstring."""
    name = str(_get(opts, "name", "constant")).lower()
    warmup_iters = int(_get(opts, "warmup_iters", 0))
    warmup_factor = float(_get(opts, "warmup_factor", 0.001))
    milestones = sorted(int(m) for m in (_get(opts, "milestones", None) or []))
    gamma = float(_get(opts, "gamma", 0.1))
    min_lr_factor = float(_get(opts, "min_lr_factor", 0.0))
    max_iters = max(1, int(max_iters))
    if name not in ("constant", "step", "cosine"):
        raise _config_error(
            f"train.scheduler.name: unknown scheduler {name!r}; use 'constant', 'step' or 'cosine'"
        )
    if warmup_iters < 0:
        raise _config_error(f"train.scheduler.warmup_iters must be >= 0, got {warmup_iters}")

    def factor(t: int) -> float:
        if name == "step":
            base = gamma ** bisect.bisect_right(milestones, t)
        elif name == "cosine":
            progress = min(t, max_iters) / max_iters
            cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
            base = min_lr_factor + (1.0 - min_lr_factor) * cosine
        else:
            base = 1.0
        if t < warmup_iters:
            base *= warmup_factor + (1.0 - warmup_factor) * t / warmup_iters
        return base

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, opts: Any, max_iters: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A ``LambdaLR`` stepping once per iteration (see the module docstring for the formula)."""
    fn = lr_factor_fn(opts, max_iters)

    def lr_lambda(t: int) -> float:  # a plain function: LambdaLR leaves it out of state_dict
        return fn(t)

    return LambdaLR(optimizer, lr_lambda)


def amp_dtype(tc: Any, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``train.amp`` / ``train.amp_dtype`` ask for (``None``: fp32)."""
    if not tc.amp:
        return None
    name = str(tc.amp_dtype).lower()
    if name == "auto":
        return torch.bfloat16 if device.type == "cpu" else torch.float16
    if name in ("bf16", "bfloat16"):
        return torch.bfloat16
    if name in ("fp16", "float16", "half"):
        if device.type == "cpu":
            raise ConfigError("train.amp_dtype=fp16 is for CUDA; on CPU use bf16 (or auto)")
        return torch.float16
    raise ConfigError(f"train.amp_dtype={tc.amp_dtype!r}: use auto, bf16 or fp16")
