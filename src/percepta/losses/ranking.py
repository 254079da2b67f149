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
and a *window* part (``|s_j - s_i| < delta``: ``(sum s_j - c (s_i - delta)) / (2 delta)``). The
negatives are bucketed against the ``2P`` sorted window edges (``searchsorted``, O(N log P)); per
bucket counts and sums with prefix sums give every ``FP_i`` and, by a prefix sum over the edge
events, every negative's gradient. The RS sorting terms add an IoU condition (``y_j >= y_i``):
a 2-D dominance sum, done by a merge-sort-tree over the logit-sorted positives (one sort per
level, O(P log^2 P), no P x P matrix). Arithmetic runs in float64 and is cast back, so float32
results match the official float64 run to ~1e-7 relative. The only deliberate differences: no
positive at all gives zero losses and zero gradients (the official code crashes on
``min`` of an empty tensor); AP/aLRP accept ``delta = 0`` (the step ``1[x >= 0]``; officially a
division by zero); inputs are validated (:class:`~percepta.errors.DataError`); devices follow the
input (no hard-coded ``.cuda()``).

**Smooth-AP** (Brown et al., ECCV 2020): ``1 - mean_i (1 + sum_{j in P, j != i} sig(D_ij / tau))
/ (1 + sum_{j != i} sig(D_ij / tau))`` per query row, ``D_ij = s_j - s_i``; plain autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from percepta.errors import DataError
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


def _check(logits: torch.Tensor, targets: torch.Tensor, name: str, binary: bool) -> None:
    """One-line DataErrors for mismatched shapes, non-finite logits and bad targets."""
    if logits.shape != targets.shape:
        raise DataError(
            f"{name}: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} "
            "differ in shape; pass one target per logit"
        )
    if not torch.isfinite(logits).all():
        raise DataError(f"{name}: logits contain NaN or inf; check the model output and the lr")
    ok = (targets == -1) | ((targets >= 0) & (targets <= 1))
    if binary:
        ok = (targets == -1) | (targets == 0) | (targets == 1)
    if not ok.all():
        allowed = (
            "1, 0 or -1 (ignored)" if binary else "in [0, 1] (IoU, 0 negative) or -1 (ignored)"
        )
        bad = targets[~ok].flatten()[0].item()
        raise DataError(f"{name}: targets must be {allowed}; found {bad!r}")


# --------------------------------------------------------------------------- shared sums


def _window_sums(
    cum: torch.Tensor, t_lo: torch.Tensor, t_hi: torch.Tensor, lo: torch.Tensor, delta: float
) -> torch.Tensor:
    """``sum_j H(s_j - s_i) w_j`` from a prefix-sum table ``cum`` ([P+1, 2m]: ``w`` then ``w s``
    in s-order): full part beyond ``t_hi`` plus the linear window ``[t_lo, t_hi)``."""
    m = cum.shape[1] // 2
    full = cum[-1, :m] - cum[t_hi, :m]
    if delta == 0:
        return full
    win = cum[t_hi] - cum[t_lo]
    return full + (win[:, m:] - win[:, :m] * lo[:, None]) / (2 * delta)


def _prefix(w: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix sums along dim 0 with a leading zero row."""
    return torch.cat([w.new_zeros((1,) + w.shape[1:]), torch.cumsum(w, 0)])


class _NegBuckets:
    """The negatives bucketed against the sorted window edges ``s_i -/+ delta`` of the positives.

    Bucket ``b`` of a negative = the number of edges ``<= s_k``. Per-bucket counts and sums give
    ``FP_i``; prefix sums over the edge events give each negative's ``sum_i w_i H(s_k - s_i)``.
    """

    def __init__(self, sp: torch.Tensor, sn: torch.Tensor, delta: float) -> None:
        self.delta, self.sn = delta, sn
        self.lo, self.hi = sp - delta, sp + delta
        p = sp.numel()
        edges, self.perm = torch.sort(torch.cat([self.lo, self.hi]))
        self.bucket = torch.searchsorted(edges, sn, right=True)
        counts = torch.bincount(self.bucket, minlength=2 * p + 1).to(_F64)
        sums = torch.bincount(self.bucket, weights=sn, minlength=2 * p + 1)
        cum = _prefix(torch.stack([counts, sums], 1))  # cum[b] = totals of buckets < b
        pl = torch.searchsorted(edges, self.lo) + 1
        ph = torch.searchsorted(edges, self.hi) + 1
        fp = sn.numel() - cum[ph, 0]
        if delta > 0:
            win = cum[ph] - cum[pl]
            fp = fp + (win[:, 1] - win[:, 0] * self.lo) / (2 * delta)
        self.fp = fp

    def spread(self, w: torch.Tensor) -> torch.Tensor:
        """``g_k = sum_i w_i H(s_k - s_i)`` for every negative ``k``."""
        z = torch.zeros_like(w)
        ev = torch.stack(
            [torch.cat([z, w]), torch.cat([w, -w]), torch.cat([w * self.lo, -w * self.lo])], 1
        )
        pre = _prefix(ev[self.perm])[self.bucket]
        if self.delta == 0:
            return pre[:, 0]
        return pre[:, 0] + (pre[:, 1] * self.sn - pre[:, 2]) / (2 * self.delta)


class _DominanceTree:
    """Merge-sort tree over points in logit order: ``query(w, t, r)`` returns, per query,
    ``sum w_j`` over points with position ``< t`` and rank ``yr_j < r`` (all vectorised).

    Level ``l`` groups positions into nodes of ``2**l``; within each node the points are sorted by
    rank (one global sort of ``node * (P + 2) + rank``). A prefix ``[0, t)`` is the union of the
    nodes ``(t >> l) - 1`` at the levels where bit ``l`` of ``t`` is set.
    """

    def __init__(self, yr: torch.Tensor) -> None:
        self.p = yr.numel()
        pos = torch.arange(self.p, device=yr.device)
        self.levels = []
        for lev in range(max(1, self.p.bit_length())):
            keys, perm = torch.sort((pos >> lev) * (self.p + 2) + yr)
            self.levels.append((lev, keys, perm))

    def query(self, w: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        out = w.new_zeros((t.numel(),) + w.shape[1:])
        for lev, keys, perm in self.levels:
            cum = _prefix(w[perm])
            has = ((t >> lev) & 1) == 1
            node = ((t >> lev) - 1).clamp(min=0)
            idx = torch.searchsorted(keys, node * (self.p + 2) + r)
            part = cum[idx] - cum[node << lev]
            out += part * has.reshape((-1,) + (1,) * (w.dim() - 1))
        return out


def _split(
    logits: torch.Tensor, targets: torch.Tensor, pos_mask: torch.Tensor, delta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices and float64 logits of the positives (logit order) and the relevant negatives."""
    pos_idx = pos_mask.nonzero().squeeze(1)
    sp = logits[pos_idx].to(_F64)
    sp, order = torch.sort(sp, stable=True)
    pos_idx = pos_idx[order]
    neg_idx = ((targets == 0) & (logits >= logits[pos_idx[0]] - delta)).nonzero().squeeze(1)
    return pos_idx, sp, neg_idx, logits[neg_idx].to(_F64)


def _edges(sp: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Window of each positive among the sorted positives: ``[t_lo, t_hi)`` and ``lo``."""
    lo = sp - delta
    return torch.searchsorted(sp, lo), torch.searchsorted(sp, sp + delta), lo


# --------------------------------------------------------------------------- the three losses


def _rank_sort_forward(
    logits: torch.Tensor, targets: torch.Tensor, delta: float, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grad = torch.zeros_like(logits)
    pos_mask = targets > 0
    n = int(pos_mask.sum())
    if n == 0:
        z = logits.new_zeros(())
        return z, z.clone(), grad
    pos_idx, sp, neg_idx, sn = _split(logits, targets, pos_mask, delta)
    y = targets[pos_idx].to(_F64)
    neg = _NegBuckets(sp, sn, delta)
    fp = neg.fp
    t_lo, t_hi, lo = _edges(sp, delta)
    one = torch.ones_like(sp)
    w = torch.stack([one, 1 - y], 1)
    cum = _prefix(torch.cat([w, w * sp[:, None]], 1))
    rpos, cur = _window_sums(cum, t_lo, t_hi, lo, delta).unbind(1)
    # Mis-sorted mass: the same sums restricted to positives with a lower IoU (rank < own rank).
    yr = torch.searchsorted(torch.sort(y).values, y)
    tree = _DominanceTree(yr)
    wq = torch.cat([w, w * sp[:, None]], 1)
    full_n = torch.full_like(t_hi, n)
    q = tree.query(wq, torch.cat([full_n, t_hi, t_lo]), yr.repeat(3)).view(3, n, 4)
    mis = q[0, :, :2] - q[1, :, :2]
    if delta > 0:
        win = q[1] - q[2]
        mis = mis + (win[:, 2:] - win[:, :2] * lo[:, None]) / (2 * delta)
    d, mis_err = mis.unbind(1)
    rank_err = fp / (rpos + fp)
    sort_err = cur / rpos - (cur - mis_err) / (rpos - d)
    g_pos = -torch.where(fp > eps, rank_err, 0.0) - torch.where(d > eps, sort_err, 0.0)
    v = torch.where(d > eps, sort_err / d.clamp(min=eps), 0.0)
    g_pos = g_pos + _transpose_spread(tree, sp, yr, v, delta)
    g_neg = neg.spread(torch.where(fp > eps, rank_err / fp.clamp(min=eps), 0.0))
    grad[pos_idx] = (g_pos / n).to(grad.dtype)
    grad[neg_idx] = (g_neg / n).to(grad.dtype)
    return rank_err.mean().to(logits.dtype), sort_err.mean().to(logits.dtype), grad


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
    logits: torch.Tensor, targets: torch.Tensor, delta: float, reg: torch.Tensor | None
) -> tuple[torch.Tensor, ...]:
    """Shared by AP and aLRP: indices, sorted positive logits, ``R+``, ``FP``, buckets and, for
    aLRP, ``sum_{j != i} a_ij E_j`` (``E`` re-ordered like the sorted positives)."""
    pos_idx, sp, neg_idx, sn = _split(logits, targets, targets == 1, delta)
    neg = _NegBuckets(sp, sn, delta)
    t_lo, t_hi, lo = _edges(sp, delta)
    self_term = 1.0 if delta == 0 else 0.5
    w = torch.ones_like(sp)[:, None]
    if reg is not None:
        w = torch.stack([w[:, 0], reg], 1)
    cum = _prefix(torch.cat([w, w * sp[:, None]], 1))
    sums = _window_sums(cum, t_lo, t_hi, lo, delta) - self_term * w
    rpos = 1 + sums[:, 0]
    extra = sums[:, 1] if reg is not None else None
    return pos_idx, sp, neg_idx, neg, rpos, extra


def _ap_forward(
    logits: torch.Tensor, targets: torch.Tensor, delta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    grad = torch.zeros_like(logits)
    n = int((targets == 1).sum())
    if n == 0:
        return logits.new_zeros(()), grad
    pos_idx, _, neg_idx, neg, rpos, _ = _ap_parts(logits, targets, delta, None)
    rank = rpos + neg.fp
    prec = rpos / rank
    best = torch.cummax(prec, 0).values  # ascending logits: best precision at higher recall
    prev = torch.cat([best.new_zeros(1), best[:-1]])
    factor = torch.where(prev <= prec, 1.0, (1 - best) / (1 - prec).clamp(min=1e-300))
    grad[pos_idx] = (-(1 - best) / n).to(grad.dtype)
    grad[neg_idx] = (neg.spread(factor / rank) / n).to(grad.dtype)
    return (1 - best.mean()).to(logits.dtype), grad


def _alrp_forward(
    logits: torch.Tensor, targets: torch.Tensor, reg: torch.Tensor, delta: float, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    grad = torch.zeros_like(logits)
    pos_mask = targets == 1
    n = int(pos_mask.sum())
    if reg.numel() != n:
        raise DataError(
            f"alrp_loss: regression_losses has {reg.numel()} entries for {n} positives; pass one "
            "localisation error per positive, in the positives' order of appearance"
        )
    empty = torch.zeros(0, dtype=torch.long, device=logits.device)
    if n == 0:
        return logits.new_zeros(()), logits.new_zeros(0), empty, grad
    order = torch.argsort(logits[pos_mask], stable=True)  # appearance -> ascending logits
    pos_idx, _, neg_idx, neg, rpos, aE = _ap_parts(logits, targets, delta, reg.to(_F64)[order])
    fp = neg.fp
    rank = rpos + fp
    amount = torch.where(fp > eps, (aE + fp) / rank, 0.0)
    grad[pos_idx] = (-amount / n).to(grad.dtype)
    grad[neg_idx] = (neg.spread(amount / fp.clamp(min=eps)) / n).to(grad.dtype)
    rank_app = torch.empty_like(rank)
    rank_app[order] = rank
    cls = (1 - (rpos / rank).mean()).to(logits.dtype)
    return cls, rank_app.to(logits.dtype), order, grad


class _RankSort(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, delta, eps):  # type: ignore[override]
        ranking, sorting, grad = _rank_sort_forward(logits.detach(), targets, delta, eps)
        ctx.save_for_backward(grad)
        return ranking, sorting

    @staticmethod
    def backward(ctx, g_rank, g_sort):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * g_rank, None, None, None


class _AP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, delta):  # type: ignore[override]
        loss, grad = _ap_forward(logits.detach(), targets, delta)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * g, None, None


class _ALRP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, reg, delta, eps):  # type: ignore[override]
        cls, rank, order, grad = _alrp_forward(logits.detach(), targets, reg.detach(), delta, eps)
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(rank, order)
        return cls, rank, order

    @staticmethod
    def backward(ctx, g, _g_rank, _g_order):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * g, None, None, None, None


def _flat(logits: torch.Tensor, targets: torch.Tensor, name: str, binary: bool, delta: float):
    _check(logits, targets, name, binary)
    if delta < 0:
        raise DataError(f"{name}: delta must be >= 0, got {delta}")
    return logits.reshape(-1), targets.reshape(-1).to(logits.dtype)


def rank_sort_loss(
    logits: torch.Tensor, targets: torch.Tensor, delta: float = 0.5, eps: float = 1e-10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank & Sort loss (Oksuz et al., ICCV 2021): ``(ranking, sorting)`` scalars.

    ``targets``: IoU in ``(0, 1]`` for positives, 0 for negatives, -1 ignored; any shape equal to
    ``logits``'. The identity-update gradient of both parts is attached to ``ranking``: optimise
    ``ranking + sorting`` (weight 1 each), as the official heads do.
    """
    x, t = _flat(logits, targets, "rank_sort_loss", False, delta)
    return _RankSort.apply(x, t, float(delta), eps)


def ap_loss(logits: torch.Tensor, targets: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """AP loss (Chen et al. 2019, error-driven update, interpolated AP); targets 1 / 0 / -1."""
    x, t = _flat(logits, targets, "ap_loss", True, delta)
    return _AP.apply(x, t, float(delta))


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
    x, t = _flat(logits, targets, "alrp_loss", True, delta)
    return _ALRP.apply(x, t, regression_losses.reshape(-1), float(delta), eps)


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
    _check(scores, targets, "smooth_ap_loss", True)
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
