"""Ranking-based classification losses: Rank & Sort, AP and aLRP (identity update), Smooth-AP.

Semantics follow the official code (kemaloksuz/RankSortLoss b41f64df ``ranking_losses.py``;
aLRPLoss 2cfaa8ec), pinned by ``tests/fixtures/rs_loss/``. Notation: ``s`` logits, ``P`` the
positives, ``H(x) = clip(x / (2 delta) + 1/2, 0, 1)`` the smoothed step (``1[x >= 0]`` when
``delta = 0``). For a positive ``i``, ``a_ij = H(s_j - s_i)`` over positives and
``b_ik = H(s_k - s_i)`` over negatives; ``FP_i = sum_k b_ik``.

* **RS** (targets: ``y in (0, 1]`` positive with its IoU, ``0`` negative, ``< 0`` ignored):
  ``R+_i = sum_j a_ij`` (self term included), ranking error ``FP_i / (R+_i + FP_i)``; sorting error
  ``sum_j a_ij (1 - y_j) / R+_i`` minus its target (the same over ``T_ij = a_ij 1[y_j >= y_i]``).
  Identity update: positive ``i`` gets ``-l_R(i)`` (if ``FP_i > eps``), negative ``k`` gets
  ``l_R(i) b_ik / FP_i``; positive ``i`` gets ``-e_S(i)`` and each mis-sorted positive ``j``
  (``M_ij = a_ij 1[y_j < y_i]``, if ``sum_j M_ij > eps``) gets ``e_S(i) M_ij / sum_j M_ij``;
  everything divided by ``|P|``. The whole gradient hangs on the first output (as officially):
  train with ``ranking + sorting``.
* **AP** (targets 1 / 0 / -1): ``R+_i = 1 + sum_{j != i} a_ij``, precision ``R+_i / R_i``,
  interpolated by a running maximum in ascending logit order (a ``cummax``).
* **aLRP**: as AP for ranks; ``L_cls = mean FP_i / R_i``; positive ``i`` gets
  ``-(sum_{j != i} a_ij E_j + FP_i) / R_i`` (if ``FP_i > 1e-5``), spread over negatives by
  ``b_ik / FP_i``. :func:`alrp_loc_loss` is the heads' localisation component.

**Speed, and why it is exact.** The official code loops over positives, O(P (P + N)). ``H`` is
piecewise linear, so every sum above splits into a *full* part (``s_j >= s_i + delta``: a count)
and a *window* part (``|s_j - s_i| < delta``: ``(sum s_j - c (s_i - delta)) / (2 delta)``). Each
entry is bucketed against the ``2P`` sorted window edges of the positives; per-bucket counts and
sums (``bincount``) with prefix sums give every ``FP_i``, and each negative's gradient is linear
in its logit within its bucket (``A_b + B_b s_k``, from a prefix sum over the edge events): a
handful of passes over the N logits, with no compaction (:mod:`percepta.losses.ranking_sums`).
The targets are scanned once (``nonzero``: only non-zero targets need checking, and they are
the entries that are not negatives). From 2e4 logits the buckets come from a uniform grid over
the edges' range (O(1) per element; a binary search costs ~15 ns an element), walked in
L2-sized chunks on the CPU; below, from ``searchsorted``. The RS
sorting terms add an IoU condition (``y_j >= y_i``): with up to 256 positives they are dense
``P x P`` matrices (fewest operations), beyond that a 2-D dominance sum by a merge-sort tree over
the logit-sorted positives (O(P log^2 P), no ``P x P`` matrix). Sums run in float64 and are cast
back, so float32 results match the official float64 run to ~1e-7 relative. The only deliberate
differences: no positive at all gives zero losses and zero gradients (the official code crashes
on ``min`` of an empty tensor); AP/aLRP accept ``delta = 0`` (the step ``1[x >= 0]``; officially
a division by zero); inputs are validated (:class:`~percepta.errors.DataError`); devices follow
the input (no hard-coded ``.cuda()``).

**Smooth-AP** (Brown et al., ECCV 2020): ``1 - mean_i (1 + sum_{j in P, j != i} sig(D_ij / tau))
/ (1 + sum_{j != i} sig(D_ij / tau))`` per query row, ``D_ij = s_j - s_i``; plain autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from percepta.errors import DataError
from percepta.losses.ranking_sums import (
    _DominanceTree,
    _edges,
    _NegBuckets,
    _prefix,
    _split,
    _window_sums,
)
from percepta.registry import LOSSES

__all__ = [
    "rank_sort_loss",
    "ap_loss",
    "alrp_loss",
    "alrp_loc_loss",
    "smooth_ap_loss",
    "RankSortLoss",
    "APLoss",
    "ALRPLoss",
    "SmoothAPLoss",
    "RankSortConfig",
    "APLossConfig",
    "ALRPLossConfig",
    "SmoothAPConfig",
]

_F64 = torch.float64


# --------------------------------------------------------------------------- validation


def _scan(
    logits: torch.Tensor, targets: torch.Tensor, name: str, binary: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate; return the flat indices of the non-zero targets (the entries that are not
    negatives) and of the positives (``> 0``), both ascending.

    One-line DataErrors for mismatched shapes, non-finite logits and bad targets. Zeros are
    always valid, so only the non-zero targets (one ``nonzero`` pass, which the losses need
    anyway) are checked; the logits' finiteness comes from their sum (one cheap pass; the
    element check runs only when it flags a problem). One host sync.
    """
    if logits.shape != targets.shape:
        raise DataError(
            f"{name}: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} "
            "differ in shape; pass one target per logit"
        )
    flat = targets.detach().reshape(-1)
    nz = flat.nonzero().squeeze(1)
    vals = flat[nz]
    total = logits.detach().sum().to(torch.float64)
    if vals.numel():
        lo, hi = torch.aminmax(vals)
        total, lo, hi = torch.stack([total, lo.to(total.dtype), hi.to(total.dtype)]).tolist()
    else:  # all negatives
        total, lo, hi = float(total), 1.0, 1.0
    if not math.isfinite(total) and not torch.isfinite(logits).all():
        raise DataError(f"{name}: logits contain NaN or inf; check the model output and the lr")
    if lo > 0 and hi <= 1 and (lo == 1 or not binary):  # every non-zero target a positive
        return nz, nz
    if binary:
        ok = (vals == -1) | (vals == 1)
    else:
        ok = (vals == -1) | ((vals > 0) & (vals <= 1))
    if not ok.all():
        allowed = (
            "1, 0 or -1 (ignored)" if binary else "in [0, 1] (IoU, 0 negative) or -1 (ignored)"
        )
        bad = vals[~ok][0].item()
        raise DataError(f"{name}: targets must be {allowed}; found {bad!r}")
    return nz, nz[vals > 0]


_DENSE_MAX_P = 256  # up to this many positives, the RS sorting terms use dense P x P matrices


# --------------------------------------------------------------------------- the three losses


def _rank_sort_forward(
    logits: torch.Tensor,
    targets: torch.Tensor,
    delta: float,
    eps: float,
    nz: torch.Tensor,
    pos_idx: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = pos_idx.numel()
    if n == 0:
        z = logits.new_zeros(())
        return z, z.clone(), torch.zeros_like(logits)
    pos_idx, sp = _split(logits, pos_idx)
    y = targets[pos_idx].to(_F64)
    neg = _NegBuckets(sp, logits, nz, delta)
    fp = neg.fp
    if n <= _DENSE_MAX_P:
        rpos, cur, d, mis_err, spread_sorting = _sorting_dense(sp, y, delta)
    else:
        rpos, cur, d, mis_err, spread_sorting = _sorting_tree(sp, y, delta)
    rank_total = rpos + fp
    rank_err = fp / rank_total
    sort_err = cur / rpos - (cur - mis_err) / (rpos - d)  # rpos - d >= the self term 1/2
    has_fp, sorting_on = fp > eps, sort_err * (d > eps)  # the official "if" conditions
    g_pos = spread_sorting(sorting_on / d.clamp(min=eps)) - rank_err * has_fp - sorting_on
    # negative k: sum_i (l_R(i) / FP_i) b_ik / |P|, and l_R(i) / FP_i = 1 / (R+_i + FP_i)
    grad = neg.spread(has_fp / (rank_total * n))
    grad[pos_idx] = (g_pos / n).to(grad.dtype)
    errors = torch.stack([rank_err, sort_err]).mean(1).to(logits.dtype)
    return errors[0], errors[1], grad


def _sorting_dense(sp: torch.Tensor, y: torch.Tensor, delta: float):
    """RS positive-positive sums with P x P matrices (few positives: fewest operations).

    Returns ``R+_i``, ``sum_j a_ij (1 - y_j)``, the mis-sorted mass ``D_i`` and
    ``sum_j M_ij (1 - y_j)``, and ``spread(v) = sum_i v_i M_ij`` (the sorting pmf).
    """
    a = sp[None, :] - sp[:, None]  # a[i, j] = H(s_j - s_i), self included (in place)
    a = (a >= 0).to(a.dtype) if delta == 0 else a.mul_(0.5 / delta).add_(0.5).clamp_(0, 1)
    mis = a * (y[None, :] < y[:, None])  # M_ij: lower IoU, comparable or higher score
    w = 1 - y
    return a.sum(1), a @ w, mis.sum(1), mis @ w, lambda v: v @ mis


def _sorting_tree(sp: torch.Tensor, y: torch.Tensor, delta: float):
    """The same sums as :func:`_sorting_dense` in O(P log^2 P) by the dominance tree."""
    n = sp.numel()
    t_lo, t_hi, lo = _edges(sp, delta)
    one = torch.ones_like(sp)
    w = torch.stack([one, 1 - y], 1)
    wq = torch.cat([w, w * sp[:, None]], 1)
    rpos, cur = _window_sums(_prefix(wq), t_lo, t_hi, lo, delta).unbind(1)
    # Mis-sorted mass: the same sums restricted to positives with a lower IoU (rank < own rank).
    yr = torch.searchsorted(torch.sort(y).values, y)
    tree = _DominanceTree(yr)
    full_n = torch.full_like(t_hi, n)
    q = tree.query(wq, torch.cat([full_n, t_hi, t_lo]), yr.repeat(3)).view(3, n, 4)
    mis = q[0, :, :2] - q[1, :, :2]
    if delta > 0:
        win = q[1] - q[2]
        mis = mis + (win[:, 2:] - win[:, :2] * lo[:, None]) / (2 * delta)
    d, mis_err = mis.unbind(1)
    return rpos, cur, d, mis_err, lambda v: _transpose_spread(tree, sp, yr, v, delta)


def _transpose_spread(
    tree: _DominanceTree, sp: torch.Tensor, yr: torch.Tensor, v: torch.Tensor, delta: float
) -> torch.Tensor:
    """For each positive ``j``: ``sum_{i: y_i > y_j} v_i H(s_j - s_i)`` (the sorting pmf)."""
    n = sp.numel()
    t_full = torch.searchsorted(sp, sp - delta, right=True)  # s_i <= s_j - delta
    t_hi = torch.searchsorted(sp, sp + delta)  # s_i < s_j + delta
    wv = torch.stack([v, v * sp], 1)
    cum = _prefix(wv)
    r = yr + 1  # rank <= own rank; the complement is "strictly higher IoU"
    ts = torch.cat([t_full, t_hi]) if delta > 0 else t_full
    below = tree.query(wv, ts, r.repeat(ts.numel() // n))
    higher = cum[ts] - below
    out = higher[:n, 0]
    if delta > 0:
        win = higher[n:] - higher[:n]
        out = out + (win[:, 0] * (sp + delta) - win[:, 1]) / (2 * delta)
    return out


def _ap_parts(
    logits: torch.Tensor,
    targets: torch.Tensor,
    delta: float,
    reg: torch.Tensor | None,
    pos_idx: torch.Tensor,
    nz: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Shared by AP and aLRP: indices, sorted positive logits, ``R+``, ``FP``, buckets and, for
    aLRP, ``sum_{j != i} a_ij E_j`` (``E`` re-ordered like the sorted positives)."""
    pos_idx, sp = _split(logits, pos_idx)
    neg = _NegBuckets(sp, logits, nz, delta)
    t_lo, t_hi, lo = _edges(sp, delta)
    self_term = 1.0 if delta == 0 else 0.5
    w = torch.ones_like(sp)[:, None]
    if reg is not None:
        w = torch.stack([w[:, 0], reg], 1)
    cum = _prefix(torch.cat([w, w * sp[:, None]], 1))
    sums = _window_sums(cum, t_lo, t_hi, lo, delta) - self_term * w
    rpos = 1 + sums[:, 0]
    extra = sums[:, 1] if reg is not None else None
    return pos_idx, sp, neg, rpos, extra


def _ap_forward(
    logits: torch.Tensor,
    targets: torch.Tensor,
    delta: float,
    nz: torch.Tensor,
    pos_idx: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    n = pos_idx.numel()
    if n == 0:
        return logits.new_zeros(()), torch.zeros_like(logits)
    pos_idx, _, neg, rpos, _ = _ap_parts(logits, targets, delta, None, pos_idx, nz)
    rank = rpos + neg.fp
    prec = rpos / rank
    best = torch.cummax(prec, 0).values  # ascending logits: best precision at higher recall
    prev = torch.cat([best.new_zeros(1), best[:-1]])
    factor = torch.where(prev <= prec, 1.0, (1 - best) / (1 - prec).clamp(min=1e-300))
    grad = neg.spread(factor / rank / n).to(logits.dtype)
    grad[pos_idx] = (-(1 - best) / n).to(grad.dtype)
    return (1 - best.mean()).to(logits.dtype), grad


def _alrp_forward(
    logits: torch.Tensor,
    targets: torch.Tensor,
    reg: torch.Tensor,
    delta: float,
    eps: float,
    nz: torch.Tensor,
    pos_idx: torch.Tensor,  # ascending: the order of appearance
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    n = pos_idx.numel()
    if reg.numel() != n:
        raise DataError(
            f"alrp_loss: regression_losses has {reg.numel()} entries for {n} positives; pass one "
            "localisation error per positive, in the positives' order of appearance"
        )
    empty = torch.zeros(0, dtype=torch.long, device=logits.device)
    if n == 0:
        return logits.new_zeros(()), logits.new_zeros(0), empty, torch.zeros_like(logits)
    order = torch.argsort(logits[pos_idx], stable=True)  # appearance -> ascending logits
    pos_idx, _, neg, rpos, aE = _ap_parts(logits, targets, delta, reg.to(_F64)[order], pos_idx, nz)
    fp = neg.fp
    rank = rpos + fp
    amount = torch.where(fp > eps, (aE + fp) / rank, 0.0)
    grad = neg.spread(amount / fp.clamp(min=eps) / n).to(logits.dtype)
    grad[pos_idx] = (-amount / n).to(grad.dtype)
    rank_app = torch.empty_like(rank)
    rank_app[order] = rank
    cls = (1 - (rpos / rank).mean()).to(logits.dtype)
    return cls, rank_app.to(logits.dtype), order, grad


class _RankSort(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, delta, eps, nz, pos):  # type: ignore[override]
        ranking, sorting, grad = _rank_sort_forward(logits.detach(), targets, delta, eps, nz, pos)
        ctx.save_for_backward(grad)
        return ranking, sorting

    @staticmethod
    def backward(ctx, g_rank, g_sort):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * g_rank, None, None, None, None, None


class _AP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, delta, nz, pos):  # type: ignore[override]
        loss, grad = _ap_forward(logits.detach(), targets, delta, nz, pos)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * g, None, None, None, None


class _ALRP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, reg, delta, eps, nz, pos):  # type: ignore[override]
        cls, rank, order, grad = _alrp_forward(
            logits.detach(), targets, reg.detach(), delta, eps, nz, pos
        )
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(rank, order)
        return cls, rank, order

    @staticmethod
    def backward(ctx, g, _g_rank, _g_order):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * g, None, None, None, None, None, None


def _flat(logits: torch.Tensor, targets: torch.Tensor, name: str, binary: bool, delta: float):
    """Validated flat ``(logits, targets, non-zero target indices, positive indices)``."""
    nz, pos = _scan(logits, targets, name, binary)
    if delta < 0:
        raise DataError(f"{name}: delta must be >= 0, got {delta}")
    return logits.reshape(-1), targets.reshape(-1).to(logits.dtype), nz, pos


def rank_sort_loss(
    logits: torch.Tensor, targets: torch.Tensor, delta: float = 0.5, eps: float = 1e-10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank & Sort loss (Oksuz et al., ICCV 2021): ``(ranking, sorting)`` scalars.

    ``targets``: IoU in ``(0, 1]`` for positives, 0 for negatives, -1 ignored; any shape equal to
    ``logits``'. The identity-update gradient of both parts is attached to ``ranking``: optimise
    ``ranking + sorting`` (weight 1 each), as the official heads do.
    """
    x, t, nz, pos = _flat(logits, targets, "rank_sort_loss", False, delta)
    return _RankSort.apply(x, t, float(delta), eps, nz, pos)


def ap_loss(logits: torch.Tensor, targets: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """AP loss (Chen et al. 2019, error-driven update, interpolated AP); targets 1 / 0 / -1."""
    x, t, nz, pos = _flat(logits, targets, "ap_loss", True, delta)
    return _AP.apply(x, t, float(delta), nz, pos)


def alrp_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    regression_losses: torch.Tensor,
    delta: float = 1.0,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """aLRP loss (Oksuz et al., NeurIPS 2020), classification part: ``(cls_loss, rank, order)``.

    ``regression_losses`` ``[P]``: localisation error of each positive in order of appearance
    (constant here). ``rank`` (detached): each positive's smoothed rank among all examples, in
    order of appearance; ``order``: ascending argsort of the positive logits. Feed both to
    :func:`alrp_loc_loss`.
    """
    x, t, nz, pos = _flat(logits, targets, "alrp_loss", True, delta)
    return _ALRP.apply(x, t, regression_losses.reshape(-1), float(delta), eps, nz, pos)


def alrp_loc_loss(
    pos_logits: torch.Tensor, regression_losses: torch.Tensor, rank: torch.Tensor
) -> torch.Tensor:
    """aLRP localisation component: ``mean_t (sum_{u <= t} E_(u)) / R_(t)`` in descending logit
    order (hard sort); the gradient flows through ``regression_losses`` only."""
    if regression_losses.numel() == 0:
        return regression_losses.sum()
    order = torch.argsort(pos_logits.detach(), descending=True, stable=True)
    e = regression_losses[order]
    return (torch.cumsum(e, 0) / rank.detach()[order]).mean()


def smooth_ap_loss(
    scores: torch.Tensor, targets: torch.Tensor, temperature: float = 0.01
) -> torch.Tensor:
    """Smooth-AP (Brown et al., ECCV 2020): ``1 - mean`` over query rows of the sigmoid-relaxed AP.

    ``scores``/``targets``: ``[N]`` (one query) or ``[Q, N]`` (one row per query: similarity of
    each gallery item), targets 1 relevant / 0 not / -1 ignored. Rows without a relevant item are
    skipped (the loss is 0 when none has one). Memory ``O(P N)`` per row; plain autograd.
    """
    _scan(scores, targets, "smooth_ap_loss", True)
    if temperature <= 0:
        raise DataError(f"smooth_ap_loss: temperature must be > 0, got {temperature}")
    rows_s = scores.reshape(-1, scores.shape[-1]) if scores.dim() else scores.reshape(1, 1)
    rows_t = targets.reshape(rows_s.shape)
    aps = []
    for s, t in zip(rows_s, rows_t):
        valid, pos = t >= 0, t == 1
        if not pos.any():
            continue
        sp, sv = s[pos], s[valid]
        rel = torch.sigmoid((sv[None, :] - sp[:, None]) / temperature)  # [P, V], self = 1/2
        rel_pos = torch.sigmoid((sp[None, :] - sp[:, None]) / temperature)
        r_all = 0.5 + rel.sum(1)  # 1 + sum_{j != i}
        r_pos = 0.5 + rel_pos.sum(1)
        aps.append((r_pos / r_all).mean())
    if not aps:
        return scores.sum() * 0
    return 1 - torch.stack(aps).mean()


# --------------------------------------------------------------------------- registry


@dataclass
class RankSortConfig:
    """Options of the Rank & Sort loss."""

    name: str = "rank_sort"
    delta: float = 0.5


@dataclass
class APLossConfig:
    """Options of the AP loss."""

    name: str = "ap_loss"
    delta: float = 1.0


@dataclass
class ALRPLossConfig:
    """Options of the aLRP loss."""

    name: str = "alrp"
    delta: float = 1.0


@dataclass
class SmoothAPConfig:
    """Options of Smooth-AP."""

    name: str = "smooth_ap"
    temperature: float = 0.01


class RankSortLoss(nn.Module):
    """Module form of :func:`rank_sort_loss`: returns ``(ranking, sorting)``."""

    def __init__(self, delta: float = 0.5) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, logits: torch.Tensor, targets: torch.Tensor):
        return rank_sort_loss(logits, targets, self.delta)


class APLoss(nn.Module):
    """Module form of :func:`ap_loss`."""

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return ap_loss(logits, targets, self.delta)


class ALRPLoss(nn.Module):
    """Module form of :func:`alrp_loss`: returns ``(cls_loss, rank, order)``."""

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, regression_losses):
        return alrp_loss(logits, targets, regression_losses, self.delta)


class SmoothAPLoss(nn.Module):
    """Module form of :func:`smooth_ap_loss`."""

    def __init__(self, temperature: float = 0.01) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return smooth_ap_loss(scores, targets, self.temperature)


@LOSSES.register("rank_sort", options=RankSortConfig)
def build_rank_sort(cfg: RankSortConfig | None = None) -> RankSortLoss:
    """Rank & Sort loss (identity update, O(N log P)); returns (ranking, sorting)."""
    return RankSortLoss((cfg or RankSortConfig()).delta)


@LOSSES.register("ap_loss", options=APLossConfig)
def build_ap_loss(cfg: APLossConfig | None = None) -> APLoss:
    """AP loss (error-driven update, interpolated AP)."""
    return APLoss((cfg or APLossConfig()).delta)


@LOSSES.register("alrp", options=ALRPLossConfig)
def build_alrp(cfg: ALRPLossConfig | None = None) -> ALRPLoss:
    """aLRP loss, classification part (returns cls_loss, rank, order)."""
    return ALRPLoss((cfg or ALRPLossConfig()).delta)


@LOSSES.register("smooth_ap", options=SmoothAPConfig)
def build_smooth_ap(cfg: SmoothAPConfig | None = None) -> SmoothAPLoss:
    """Smooth-AP (sigmoid-relaxed AP for retrieval)."""
    return SmoothAPLoss((cfg or SmoothAPConfig()).temperature)
