"""A detector head's ranking-loss objective: classifier loss by name + the box loss, balanced.

One mechanism for every percepta detector (RS-R-CNN's RPN and RoI head, RS-CenterNet): the head
flattens its classification logits into one vector with continuous targets (the IoU of each
positive's detached predicted box with its ground truth, 0 for negatives, -1 ignored), computes
one localisation loss per positive (in the positives' order of appearance in that vector), and
calls :class:`RankingObjective`. What it returns follows the seed papers
(``notes/detection.md`` section 3):

* ``rank_sort`` (Oksuz et al., ICCV 2021): ``loss_<p>rank``, ``loss_<p>sort`` and the box term
  ``loss_<p>box``;
* ``ap_loss`` (Chen et al. 2019): ``loss_<p>ap`` and ``loss_<p>box`` (binary targets: every
  positive counts 1);
* ``alrp`` (Oksuz et al., NeurIPS 2020): ``loss_<p>alrp_cls`` and ``loss_<p>alrp_loc``, the
  localisation component ``mean_t (sum_{u<=t} E_(u)) / R_(t)`` over the positives sorted by logit.

How the box term is weighted (``model.ranking``, :class:`RankingBalanceConfig`):

* **score weighting** (``score_weighting``, RS): each positive's box loss is weighted by its
  detached max class probability, normalised by the sum of the weights (1 when the sum is below
  1e-12), instead of a plain mean;
* **value-based task balancing** (``task_balance: value``, RS): ``lambda = L_cls / L_box`` every
  step, both detached (``L_cls`` = ranking + sorting), so the box term always has the value of the
  classification loss and the gradient ``L_cls grad(L_box) / L_box``: no weight to tune. A box
  loss of exactly 0 gets ``lambda = 0``;
* **self-balancing** (``task_balance: self``, aLRP): the box term is weighted by ``w``, initially
  ``sb_init`` (50); the unweighted values of both terms are accumulated over ``sb_period`` training
  steps, then ``w = (mean L_loc + mean L_cls) / mean L_loc`` and the sums restart. ``w`` and the
  sums are buffers, so they live in the checkpoint and a resumed run continues exactly;
* ``task_balance: fixed``: the box term times ``box_weight``.

**Per-class ranking** (``per_class: true``, ``rank_sort`` and ``ap_loss``): the head passes its
logits and targets as ``[C, M]`` (one row per class); each row is ranked on its own (a class's
positives against that class's negatives only, as COCO AP ranks each class separately) and the
row losses are combined weighted by their share of the positives, ``sum_c (P_c / P) L_c``: the
mean over all positives of their own errors, so each positive's identity-update gradient keeps
the ``1 / P`` of the joint ranking. Rows without a positive add nothing.

The losses themselves come from the ``LOSSES`` registry (:mod:`percepta.losses.ranking`), chosen by
name in the detector's ``cls_loss:`` section, e.g. ``cls_loss: {name: rank_sort, delta: 0.5}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from percepta.errors import ConfigError
from percepta.losses.ranking import alrp_loc_loss
from percepta.registry import LOSSES

__all__ = [
    "RANKING_CLS_LOSSES",
    "RankingBalanceConfig",
    "RankingObjective",
    "build_ranking_objective",
    "weighted_mean",
]

RANKING_CLS_LOSSES = ("rank_sort", "ap_loss", "alrp")
_BALANCES = ("value", "fixed", "self")
_EPS = 1e-12


@dataclass
class RankingBalanceConfig:
    """``model.ranking``: how a ranking-loss classifier is combined with the box loss."""

    task_balance: str = "value"  # value (RS: lambda = L_cls / L_box) | self (aLRP) | fixed
    box_weight: float = 1.0  # the box term's weight with task_balance: fixed
    score_weighting: bool = True  # weight each positive's box loss by its max class prob
    sb_init: float = 50.0  # aLRP self-balancing: initial weight of the box term
    sb_period: int = 7330  # ... updated every this many training steps (official: 7330)
    # floor of the IoU targets; 0 = official (a positive whose predicted box misses its ground
    # truth entirely gets IoU 0 and so counts as a negative)
    min_iou: float = 0.0
    # one ranking per class (rank_sort / ap_loss; the head passes its logits as [C, M] rows),
    # combined as the mean over all positives, instead of one ranking of every class together:
    # COCO AP ranks each class on its own
    per_class: bool = False


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``sum(w * v) / sum(w)`` (``sum(w)`` replaced by 1 below 1e-12); plain mean without weights.

    An empty ``values`` gives a 0 that stays connected to the graph.
    """
    if values.numel() == 0:
        return values.sum()
    if weights is None:
        return values.mean()
    w = weights.detach().to(values.dtype)
    total = w.sum()
    denom = torch.where(total < _EPS, torch.ones_like(total), total)
    return (values * w).sum() / denom


def _cls_options_name(cfg: Any) -> str:
    name = cfg.get("name") if isinstance(cfg, dict) else getattr(cfg, "name", "")
    return str(name or "")


class RankingObjective(nn.Module):
    """Classification loss by name + balanced box loss for one detector head.

    Args:
        loss: a module from the ``LOSSES`` registry (``rank_sort``, ``ap_loss`` or ``alrp``).
        kind: its registry name.
        balance: :class:`RankingBalanceConfig`.
        prefix: inserted in the term names (``"rpn_"`` -> ``loss_rpn_rank``).
    """

    def __init__(
        self, loss: nn.Module, kind: str, balance: RankingBalanceConfig, prefix: str = ""
    ) -> None:
        super().__init__()
        if kind not in RANKING_CLS_LOSSES:
            raise ConfigError(
                f"cls_loss.name {kind!r} is not a ranking classification loss; choose one of "
                f"{', '.join(RANKING_CLS_LOSSES)}"
            )
        if balance.task_balance not in _BALANCES:
            raise ConfigError(
                f"ranking.task_balance must be one of {', '.join(_BALANCES)}, got "
                f"{balance.task_balance!r}"
            )
        if balance.task_balance == "self" and balance.sb_period < 1:
            raise ConfigError(f"ranking.sb_period must be >= 1, got {balance.sb_period}")
        if not 0.0 <= balance.min_iou < 1.0:
            raise ConfigError(f"ranking.min_iou must be in [0, 1), got {balance.min_iou}")
        if balance.per_class and kind == "alrp":
            raise ConfigError(
                "ranking.per_class works with rank_sort and ap_loss; aLRP ranks its "
                "localisation errors across all classes (set per_class: false)"
            )
        self.loss = loss
        self.kind = kind
        self.balance = balance
        self.prefix = prefix
        # aLRP self-balancing state (buffers: saved with the model, exact resume)
        self.register_buffer("sb_weight", torch.tensor(float(balance.sb_init), dtype=torch.float64))
        self.register_buffer("sb_sums", torch.zeros(2, dtype=torch.float64))  # cls, box
        self.register_buffer("sb_steps", torch.zeros((), dtype=torch.long))

    @property
    def per_class(self) -> bool:
        """Whether the head must pass ``[C, M]`` logits (one ranking per class)."""
        return bool(self.balance.per_class)

    # ------------------------------------------------------------------ targets
    def iou_targets(self, iou: torch.Tensor) -> torch.Tensor:
        """Detached IoU of each positive -> its target (floored at ``min_iou``)."""
        iou = iou.detach()
        if self.balance.min_iou > 0:
            iou = iou.clamp(min=self.balance.min_iou)
        return iou.clamp(max=1.0)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        box_losses: torch.Tensor,
        box_scores: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The head's loss terms.

        Args:
            logits: ``[M]`` classification logits, all images and classes flattened
                (``[C, M]``, one row per class, with ``per_class``).
            targets: ``[M]``: IoU target in ``(0, 1]`` for positives, 0 negatives, -1 ignored
                (``[C, M]`` with ``per_class``).
            box_losses: ``[P]`` localisation loss of each positive (GIoU loss, say), in the order
                the positives appear in ``targets``; differentiable.
            box_scores: ``[P]`` the positives' max class probability (detached) for score
                weighting; ``None`` = uniform.
        """
        p = f"loss_{self.prefix}"
        if self.balance.per_class:
            return self._per_class(p, logits, targets.to(logits.dtype), box_losses, box_scores)
        logits = logits.reshape(-1)
        targets = targets.reshape(-1).to(logits.dtype)
        if self.kind == "rank_sort":
            ranking, sorting = self.loss(logits, targets)
            cls_value = (ranking + sorting).detach()
            box = weighted_mean(box_losses, box_scores if self.balance.score_weighting else None)
            out = {f"{p}rank": ranking, f"{p}sort": sorting}
            out[f"{p}box"] = self._balanced(box, cls_value)
            return out
        binary = torch.where(targets > 0, torch.ones_like(targets), targets)
        if self.kind == "ap_loss":
            ap = self.loss(logits, binary)
            box = weighted_mean(box_losses, box_scores if self.balance.score_weighting else None)
            return {f"{p}ap": ap, f"{p}box": self._balanced(box, ap.detach())}
        cls, rank, _order = self.loss(logits, binary, box_losses.detach())
        loc = alrp_loc_loss(logits[targets > 0], box_losses, rank)
        return {f"{p}alrp_cls": cls, f"{p}alrp_loc": self._balanced(loc, cls.detach())}

    def _per_class(
        self,
        p: str,
        logits: torch.Tensor,
        targets: torch.Tensor,
        box_losses: torch.Tensor,
        box_scores: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """``per_class``: one ranking per row of ``[C, M]`` logits (module docstring)."""
        if logits.dim() != 2 or logits.shape != targets.shape:
            raise ConfigError(
                f"ranking.per_class: the head must pass [C, M] logits and targets, got "
                f"{tuple(logits.shape)} and {tuple(targets.shape)}"
            )
        counts = (targets > 0).sum(1)
        total = int(counts.sum())
        terms: list[torch.Tensor] = []
        for c in counts.nonzero().flatten().tolist():
            share = float(counts[c]) / total
            row = targets[c]
            if self.kind == "rank_sort":
                parts = self.loss(logits[c], row)
            else:
                parts = (self.loss(logits[c], torch.where(row > 0, torch.ones_like(row), row)),)
            terms.append(torch.stack(list(parts)) * share)
        n_parts = 2 if self.kind == "rank_sort" else 1
        cls = torch.stack(terms).sum(0) if terms else logits.sum() * 0.0 + logits.new_zeros(n_parts)
        box = weighted_mean(box_losses, box_scores if self.balance.score_weighting else None)
        names = ("rank", "sort") if self.kind == "rank_sort" else ("ap",)
        out = {f"{p}{name}": cls[i] for i, name in enumerate(names)}
        out[f"{p}box"] = self._balanced(box, cls.sum().detach())
        return out

    def _balanced(self, box: torch.Tensor, cls_value: torch.Tensor) -> torch.Tensor:
        mode = self.balance.task_balance
        if mode == "fixed":
            return box * self.balance.box_weight
        if mode == "value":
            b = box.detach()
            lam = torch.where(b > 0, cls_value / b.clamp(min=_EPS), torch.zeros_like(b))
            return box * lam
        weighted = box * self.sb_weight.to(box.dtype)  # this step's weight: before the update
        if self.training and torch.is_grad_enabled():
            self._self_balance_step(float(cls_value), float(box.detach()))
        return weighted

    @torch.no_grad()
    def _self_balance_step(self, cls_value: float, box_value: float) -> None:
        """aLRP SB: accumulate, and every ``sb_period`` steps set ``w = (loc + cls) / loc``."""
        self.sb_sums += torch.tensor([cls_value, box_value], dtype=torch.float64)
        self.sb_steps += 1
        if int(self.sb_steps) % self.balance.sb_period == 0:
            cls_sum, box_sum = (float(v) for v in self.sb_sums)
            if box_sum > 0:
                self.sb_weight.fill_((box_sum + cls_sum) / box_sum)
            self.sb_sums.zero_()


def build_ranking_objective(
    cls_loss: Any, balance: RankingBalanceConfig | dict | None, prefix: str = ""
) -> RankingObjective | None:
    """The objective for a detector's ``cls_loss`` / ``ranking`` options; ``None`` when
    ``cls_loss`` is empty (the detector keeps its own classification loss)."""
    kind = _cls_options_name(cls_loss) if cls_loss is not None else ""
    if not kind:
        return None
    if kind not in RANKING_CLS_LOSSES:
        raise ConfigError(
            f"model.cls_loss.name {kind!r} is not a ranking classification loss; choose one of "
            f"{', '.join(RANKING_CLS_LOSSES)}"
        )
    options_type = LOSSES.options(kind)
    if isinstance(cls_loss, dict) and options_type is not None:
        cls_loss = options_type(**cls_loss)
    if isinstance(balance, dict):
        balance = RankingBalanceConfig(**balance)
    return RankingObjective(
        LOSSES.build(kind, cls_loss), kind, balance or RankingBalanceConfig(), prefix
    )
