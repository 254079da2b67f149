"""The sums behind the ranking losses (:mod:`percepta.losses.ranking`), in O(N log P).

The smoothed step ``H`` is piecewise linear, so every sum over the negatives splits into a full
count and a linear window part per positive: :class:`_NegBuckets` buckets every logit against
the ``2P`` sorted window edges (:func:`_bucket_grid` from 2e4 logits: O(1) per element, no binary
search) and gives every ``FP_i`` and every negative's gradient from per-bucket counts and sums;
:class:`_DominanceTree` is the merge-sort tree of the RS sorting terms with many positives.
Written by hand because no library offers these sums; arithmetic in float64.
"""

from __future__ import annotations

import torch

_F64 = torch.float64


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


# Path thresholds (module constants so the tests can force every path on small inputs).
# from this many logits, bucket through a uniform grid (no binary search); measured crossover:
# at 1e4 logits the binary search is ~10 % faster, at 3e4 the grid ~15 %
_GRID_MIN_N = 20_000


def _bucket_grid(
    x: torch.Tensor, edges: torch.Tensor, skip: torch.Tensor | None, dummy: int
) -> torch.Tensor:
    """``searchsorted(edges, x, right=True)`` through a uniform grid, int32; entries where
    ``skip`` is true get bucket ``dummy``.

    ``torch.searchsorted`` costs ~15 ns per element (a binary search, one thread): at 1e6 logits
    it alone would eat the whole time budget. The range of the ``2P`` sorted edges is cut into
    ``M = 128 P`` equal cells (at most ``N / 4``, so the table stays cheap to build), plus one
    cell below and one above them; a table gives, per cell, the number of edges below it, which
    is every element's bucket unless an edge lies in its cell (widened by a quarter cell, so the
    rounding of the cell arithmetic cannot misplace an element). Those few elements (a fraction
    ~``3P / M`` of the elements inside the range) are binary-searched, comparing in ``x``'s
    dtype.
    """
    if x.dtype not in (torch.float32, torch.float64):  # bf16 / fp16: too coarse for the cells
        x = x.to(_F64)
    m = max(64, min(64 * edges.numel(), x.numel() // 4))
    base, top = float(edges[0]), float(edges[-1])
    h = (top - base) / (m - 2) if top > base else 1.0
    origin = base - h  # cells 1..m cover [base - h, top + h): no edge near their outer bounds
    # Table cell j (0-based, the elements with floor((x - origin) / h) = j) needs a search when
    # an edge lies within a quarter cell of it, u_e in [j - 1/4, j + 5/4) with u = (e - origin)
    # / h; otherwise its bucket is #{u_e < j - 1/4} = #{floor(u_e + 1/4) < j}. Both counts come
    # from bincounts of the (sorted) edges' cells, O(m + P): a searchsorted of the m cell
    # bounds costs ~13 ns each here, more than the rest of the table.
    u = (edges - origin) / h  # in [1, m - 1]
    lo_cnt = torch.bincount((u + 0.25).floor_().long(), minlength=m + 1)[:m]
    hi_cnt = torch.bincount((u - 0.25).floor_().long(), minlength=m + 1)[:m]
    lo_idx = lo_cnt.cumsum(0).sub_(lo_cnt)  # edges with u_e < j - 1/4
    hi_idx = hi_cnt.cumsum(0)  # edges with floor(u_e - 1/4) <= j, i.e. u_e < j + 5/4
    inner = torch.where(hi_idx > lo_idx, -1, lo_idx)  # -1: an edge inside, search these
    p2 = edges.numel()
    first = torch.cat([inner.new_zeros(1), inner, inner.new_full((2,), p2)])
    first[-1] = dummy  # cell 0: below every edge; m + 1: above; m + 2: skipped entries
    first = first.to(torch.int32)
    # x / h - (origin / h - 1): in x's dtype its rounding error is <= (|origin| / h + m) ulps,
    # far below the quarter-cell margin while |origin| / h < 1e5; beyond, compute in float64
    xc = x if abs(origin) / h < 1e5 else x.to(_F64)
    cell = torch.mul(xc, 1.0 / h).sub_(origin / h - 1).clamp_(0, m + 1).to(torch.int32)
    if skip is not None:
        cell.masked_fill_(skip, m + 2)
    bucket = first.index_select(0, cell)
    near = (bucket < 0).nonzero().squeeze(1)
    bucket[near] = torch.searchsorted(edges.to(x.dtype), x[near], right=True, out_int32=True)
    return bucket


class _NegBuckets:
    """The negatives bucketed against the sorted window edges ``s_i -/+ delta`` of the positives.

    Works on the whole logit vector (no compaction: masks are cheaper than ``nonzero`` + gathers
    + scatters at 1e6 entries). Bucket ``b`` of an entry = the number of edges ``<= s_k``;
    entries that are not negatives go to an extra bucket ``2P + 1`` that nothing reads. Per
    bucket counts and sums (float64) give ``FP_i``; each negative's ``sum_i w_i H(s_k - s_i)``
    is linear in ``s_k`` within its bucket, ``A_b + B_b s_k``, with ``A``, ``B`` from prefix sums
    over the edge events (evaluated in the logits' dtype: the function is continuous for
    ``delta > 0``, so float32 rounding near an edge moves it by ~1e-7 only).
    """

    def __init__(
        self,
        sp: torch.Tensor,
        logits: torch.Tensor,
        pos_idx: torch.Tensor,
        skip: torch.Tensor | None,
        delta: float,
    ) -> None:
        """``skip``: the entries that are not negatives; ``None`` when these are only the
        positives ``pos_idx`` (no ignored entries): those few are then moved to the unread
        bucket instead of masking the whole vector."""
        self.delta, self.x = delta, logits
        p = sp.numel()
        self.both = torch.cat([sp - delta, sp + delta])  # the window edges lo_i, then hi_i
        self.lo = self.both[:p]
        edges, self.perm = torch.sort(self.both)
        nb = 2 * p + 2  # buckets 0..2P, and 2P + 1 for the entries that are not negatives
        if logits.numel() >= _GRID_MIN_N:
            bucket = _bucket_grid(logits, edges, skip, nb - 1)
            x64 = logits.to(_F64)  # after the grid: fewer large buffers alive at once
        else:
            x64 = logits.to(_F64)
            bucket = torch.searchsorted(edges, x64, right=True, out_int32=True)
            if skip is not None:
                bucket.masked_fill_(skip, nb - 1)
        if skip is None:  # the positives join the unread bucket (their gradient is overwritten)
            bucket[pos_idx] = nb - 1
        self.bucket = bucket
        counts = torch.bincount(bucket, minlength=nb)[: nb - 1].to(_F64)
        sums = torch.bincount(bucket, weights=x64, minlength=nb)[: nb - 1]
        # cum[b - 1] = totals of the buckets < b; a positive's window starts at bucket pl >= 1
        cum = torch.stack([counts, sums], 1).cumsum_(0)
        at = cum[torch.searchsorted(edges, self.both)]  # rows at pl (lo_i), then at ph (hi_i)
        at_lo, at_hi = at[:p], at[p:]
        above = cum[-1, 0] - at_hi[:, 0]
        if delta > 0:
            win = at_hi - at_lo
            above = above + (win[:, 1] - win[:, 0] * self.lo) / (2 * delta)
        self.fp = above

    def spread(self, w: torch.Tensor) -> torch.Tensor:
        """``g_k = sum_i w_i H(s_k - s_i)`` for every negative ``k`` (0 elsewhere).

        Within a bucket ``g`` is ``A + B s_k``; each edge changes the slope and intercept: a
        window opening at ``lo_i`` adds ``(u_i, -u_i lo_i)`` with ``u_i = w_i / (2 delta)``, its
        end at ``hi_i`` adds ``(-u_i, u_i hi_i)`` (the ramp leaves at height ``w_i``); so
        ``slope = cat(u, -u)`` and ``intercept = -slope * edges`` per edge, prefix-summed in
        edge order. With ``delta = 0`` the step at ``s_i`` adds ``w_i`` to the intercept."""
        if self.delta == 0:
            slope = torch.zeros_like(self.both)
            inter = torch.cat([torch.zeros_like(w), w])
        else:
            u = w / (2 * self.delta)
            slope = torch.cat([u, -u])
            inter = slope * self.both
            inter.neg_()
        ev = torch.stack([inter, slope], 1)[self.perm].cumsum_(0)
        zero = ev.new_zeros(1, 2)
        ab = torch.cat([zero, ev, zero]).to(self.x.dtype)  # [2P + 2, 2]: + "not a negative"
        if self.x.dtype in (torch.float32, torch.float64):  # one gather of (A, B) pairs
            pairs = torch.view_as_real(torch.view_as_complex(ab).index_select(0, self.bucket))
            return torch.addcmul(pairs[:, 0], pairs[:, 1], self.x)
        ab = ab.T.contiguous()
        a, b = ab[0].index_select(0, self.bucket), ab[1].index_select(0, self.bucket)
        return torch.addcmul(a, b, self.x)


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


def _split(logits: torch.Tensor, pos_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and float64 logits of the positives, in ascending logit order (stable)."""
    sp, order = torch.sort(logits[pos_idx].to(_F64), stable=True)
    return pos_idx[order], sp


def _positives(targets: torch.Tensor, ignored: bool) -> torch.Tensor:
    """Indices of the positives (``> 0``) in order; without ignored entries, the non-zeros."""
    return (targets > 0 if ignored else targets).nonzero().squeeze(1)


def _skip_mask(targets: torch.Tensor, ignored: bool) -> torch.Tensor | None:
    """The entries that are not negatives, or ``None`` when those are only the positives."""
    return targets != 0 if ignored else None


def _step(x: torch.Tensor, delta: float) -> torch.Tensor:
    """The smoothed step ``H``: ``clip(x / (2 delta) + 1/2, 0, 1)``, ``1[x >= 0]`` at delta 0."""
    if delta == 0:
        return (x >= 0).to(x.dtype)
    return (x / (2 * delta) + 0.5).clamp_(0, 1)


def _edges(sp: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Window of each positive among the sorted positives: ``[t_lo, t_hi)`` and ``lo``."""
    lo = sp - delta
    return torch.searchsorted(sp, lo), torch.searchsorted(sp, sp + delta), lo
