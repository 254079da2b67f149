"""Fixed-value loss balancing (centerX's "communism loss"; notes/detection.md §2.5).

Every step, each loss term ``L_i`` gets the weight ``alpha_i = target_i / L_i.detach()``, so its
*value* in the total equals its target and its gradient becomes ``target_i * grad(L_i) / L_i``
(= ``target_i * grad log L_i``): no term can dominate the update however large it grows, which
is what keeps training stable at learning rates where a plain weighted sum blows up. Stateless:
no running averages.

The target of a term is chosen by name (the ``loss*`` keys of the model's loss dict): an exact
key match first, otherwise the **longest** configured pattern contained in the key (so
``heatmap`` covers ``loss_heatmap`` and ``loss_kd_heatmap_t0``, as centerX's ``cls``/``wh``/
``off`` substrings cover its GT and KD terms). A term that matches nothing is added unscaled
(``default_target: 0``) or pinned to ``default_target``.

Under DDP the weights come from the loss values averaged over all ranks (``reduce``), so two
processes compute the weights that one process computes on the same global batch.

Deliberate difference from centerX: a term that is exactly zero (a batch without boxes gives
size/offset losses of 0) or not finite is **left out of that step** instead of producing an
infinite weight and a NaN total. When every term is left out and one of them is non-finite, the
returned total is NaN so that the trainer's non-finite guard skips the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LossBalanceConfig", "FixedValueBalance", "match_target"]


@dataclass
class LossBalanceConfig:
    """``train.loss_balance``: fixed-value ("communism") balancing of the loss terms."""

    enabled: bool = False
    # term-name pattern -> value the term is pinned to (centerX defaults: cls 1.5, wh 0.3, off 0.1)
    targets: dict[str, float] = field(
        default_factory=lambda: {"heatmap": 1.5, "wh": 0.3, "offset": 0.1}
    )
    default_target: float = 0.0  # for terms no pattern matches; 0 = add them unscaled


def match_target(key: str, targets: Mapping[str, float]) -> float | None:
    """The target for loss term ``key``: exact key, else the longest pattern inside it."""
    if key in targets:
        return float(targets[key])
    hits = [p for p in targets if p and p in key]
    if not hits:
        return None
    return float(targets[max(hits, key=len)])


class FixedValueBalance:
    """``loss_transform`` for :class:`~percepta.engine.trainer.Trainer`: pin each term's value.

    Args:
        targets: pattern -> target value (see the module docstring for matching).
        default_target: target for unmatched terms; ``0`` adds them unscaled.
        reduce: maps a 1-D tensor of this rank's detached term values to their mean over all
            ranks (the trainer passes an all-reduce under DDP); ``None`` in one process.
    """

    __name__ = "FixedValueBalance"

    def __init__(
        self,
        targets: Mapping[str, float],
        default_target: float = 0.0,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        bad = {k: v for k, v in targets.items() if not (math.isfinite(float(v)) and float(v) > 0)}
        if bad:
            raise ValueError(f"train.loss_balance.targets must be positive numbers; got {bad}")
        self.targets = {str(k): float(v) for k, v in targets.items()}
        self.default_target = float(default_target)
        self.reduce = reduce
        self.last_weights: dict[
            str, float
        ] = {}  # alpha of each term in the last call (0 = left out)

    @classmethod
    def from_config(
        cls, cfg: Any, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> FixedValueBalance:
        return cls(dict(cfg.targets), float(cfg.default_target), reduce=reduce)

    def _values(self, terms: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Each term's detached value (its mean over the ranks with ``reduce``; one sync)."""
        stacked = torch.stack([t.detach().float().reshape(()) for t in terms.values()])
        if self.reduce is not None:
            stacked = self.reduce(stacked)
        return dict(zip(terms, stacked.tolist()))

    def __call__(self, loss_dict: Mapping[str, Any], trainer: Any = None) -> torch.Tensor:
        terms = {k: v for k, v in loss_dict.items() if str(k).startswith("loss")}
        if not terms:
            raise ValueError(
                f"fixed-value balancing needs at least one 'loss*' term; got {sorted(loss_dict)}"
            )
        total: torch.Tensor | None = None
        nonfinite = False
        weights: dict[str, float] = {}
        values = self._values(terms)
        for key, term in terms.items():
            value = values[key]
            if not math.isfinite(value):
                nonfinite = True
                weights[key] = 0.0
                continue
            target = match_target(key, self.targets)
            if target is None and self.default_target > 0:
                target = self.default_target
            if target is None:
                alpha = 1.0
            elif value == 0.0:
                weights[key] = 0.0
                continue
            else:
                alpha = target / value
            weights[key] = alpha
            scaled = term.float() * alpha
            total = scaled if total is None else total + scaled
        self.last_weights = weights
        if total is None:
            ref = next(iter(terms.values()))
            if nonfinite:
                return torch.full((), float("nan"), device=ref.device)
            return sum(t.float() for t in terms.values()) * 0.0  # all zero: a zero total
        return total
