"""The sums behind the ranking losses (:mod:`percepta.losses.ranking`), in O(N log P).

The smoothed step ``H`` is piecewise linear, so every sum over the negatives splits into a full
count and a linear window part per positive: :class:`_NegBuckets` buckets every logit against
the ``2P`` sorted window edges (:class:`_Grid` from 2e4 logits: O(1) per element, no binary
search, in L2-sized chunks) and gives every ``FP_i`` and every negative's gradient from
per-bucket counts and sums; :class:`_DominanceTree` is the merge-sort tree of the RS sorting
terms with many positives.
Written by hand because no library offers these sums; arithmetic in float64.
"""

from __future__ import annotations

import math

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
# the CPU grid path walks the logits in chunks of this many: each chunk's intermediates (cells,
# buckets, float64 copy, (A, B) pairs) stay in the cores' L2 and its buffers are reused instead
# of a dozen fresh 4-8 MB arrays per call (measured at 1e6 logits, P = 100: 8.5 ms a step vs
# 17 ms unchunked; 2^16: 11 ms, 2^18: 8.5 ms)
_CHUNK = 1 << 17


def _chunk(n: int, device: torch.device) -> int:
    """Chunk length for ``n`` logits: :data:`_CHUNK` on the CPU grid path, else all at once
    (a GPU wants one large launch, not many small ones)."""
    return min(n, _CHUNK) if n >= _GRID_MIN_N and device.type == "cpu" else n


def _grid_cells(n: int, n_edges: int) -> int:
    """Number of grid cells: ~``4 sqrt(n E)`` balances the table (O(cells)) against the binary
    searches of the elements whose cell holds an edge (a fraction ~``E / cells``); at least 64,
    at most ``n / 4``."""
    return max(64, min(n // 4, int(4 * math.sqrt(n * n_edges))))


class _Grid:
    """``searchsorted(edges, x, right=True)`` through a uniform grid, int32, chunk by chunk.

    ``torch.searchsorted`` costs ~15 ns per element (a binary search): at 1e6 logits it alone
    would eat the whole time budget. The range of the sorted edges is cut into equal cells
    (:func:`_grid_cells`), plus one below and one above; every element's cell comes from the
    same float arithmetic as the edges' cells (multiply, subtract, clamp, truncate: each step
    monotone and correctly rounded, so ``x < e`` implies ``cell(x) <= cell(e)``). An element in
    a cell without an edge therefore has as its bucket the number of edges in the cells below;
    only the elements of the (at most ``E``) cells that hold an edge are binary-searched,
    comparing in ``x``'s dtype.
    """

    def __init__(self, edges: torch.Tensor, n: int, dtype: torch.dtype) -> None:
        m = _grid_cells(n, edges.numel())
        base, top = edges[[0, -1]].tolist()
        h = (top - base) / (m - 2) if top > base else 1.0
        origin = base - h  # cells 1..m - 1 hold the edges
        # in x's dtype the cell arithmetic resolves a cell while |origin| / h stays well below
        # 1 / eps; beyond (logits far from 0 with a narrow spread), work in float64
        self.work = dtype if abs(origin) / h < 1e5 else _F64
        self.scale, self.shift, self.m = 1.0 / h, origin / h - 1, m
        self.edges = edges.to(dtype)  # compared with the elements in their own dtype
        ce = self._cells(self.edges.to(self.work))
        table = torch.zeros(m + 3, dtype=torch.int32, device=edges.device)
        table.index_add_(0, ce + 1, torch.ones_like(ce))  # row j + 1 counts the edges in cell j
        table = table.cumsum_(0)  # the edges in the cells below
        table[ce] = -1  # an edge inside: search these elements
        self.table = table

    def _cells(self, v: torch.Tensor, buf: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.mul(v, self.scale, out=buf) if buf is not None else torch.mul(v, self.scale)
        return out.sub_(self.shift).clamp_(0, self.m + 1).to(torch.int32)

    def fill(
        self, x: torch.Tensor, out: torch.Tensor, buf: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Write the buckets of ``x`` into ``out`` (int32, same length); ``buf``: scratch of
        ``x``'s length in the working dtype."""
        xc = x if x.dtype == self.work else x.to(self.work)
        cell = self._cells(xc, buf)
        torch.index_select(self.table, 0, cell, out=out)
        near = (out < 0).nonzero().squeeze(1)
        if near.numel():
            out[near] = torch.searchsorted(self.edges, x[near], right=True, out_int32=True)
        return out


class _NegBuckets:
    """The negatives bucketed against the sorted window edges ``s_i -/+ delta`` of the positives.

    Works on the whole logit vector (no compaction: cheaper than gathers + scatters at 1e6
    entries), in chunks of :data:`_CHUNK` on the CPU grid path. Bucket ``b`` of an entry = the
    number of edges ``<= s_k``; entries that are not negatives go to an extra bucket ``2P + 1``
    that nothing reads. Per bucket counts and sums (float64) give ``FP_i``;
    each negative's ``sum_i w_i H(s_k - s_i)`` is linear in ``s_k`` within its bucket,
    ``A_b + B_b s_k``, with ``A``, ``B`` from prefix sums over the edge events (evaluated in the
    logits' dtype: the function is continuous for ``delta > 0``, so float32 rounding near an
    edge moves it by ~1e-7 only).
    """

    def __init__(
        self, sp: torch.Tensor, logits: torch.Tensor, unread: torch.Tensor, delta: float
    ) -> None:
        """``unread``: the ascending indices of the entries that are not negatives (positives
        and ignored ones); they go to the unread bucket."""
        self.delta, self.x = delta, logits
        p = sp.numel()
        self.both = torch.cat([sp - delta, sp + delta])  # the window edges lo_i, then hi_i
        self.lo = self.both[:p]
        edges, self.perm = torch.sort(self.both)
        nb = 2 * p + 2  # buckets 0..2P, and 2P + 1 for the entries that are not negatives
        if logits.numel() < _GRID_MIN_N:
            x64 = logits.to(_F64)
            bucket = torch.searchsorted(edges, x64, right=True, out_int32=True)
            bucket[unread] = nb - 1
            counts = torch.bincount(bucket, minlength=nb)[: nb - 1].to(_F64)
            sums = torch.bincount(bucket, weights=x64, minlength=nb)[: nb - 1]
        else:
            bucket, counts, sums = self._grid_stats(edges, logits, unread, nb)
        self.bucket = bucket
        # cum[b - 1] = totals of the buckets < b; a positive's window starts at bucket pl >= 1
        cum = torch.stack([counts, sums], 1).cumsum_(0)
        at = cum[torch.searchsorted(edges, self.both)]  # rows at pl (lo_i), then at ph (hi_i)
        at_lo, at_hi = at[:p], at[p:]
        above = cum[-1, 0] - at_hi[:, 0]
        if delta > 0:
            win = at_hi - at_lo
            above = above + (win[:, 1] - win[:, 0] * self.lo) / (2 * delta)
        self.fp = above

    @staticmethod
    def _grid_stats(
        edges: torch.Tensor, logits: torch.Tensor, unread: torch.Tensor, nb: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Buckets, per-bucket counts and float64 sums on the grid path, chunk by chunk."""
        x = logits if logits.dtype in (torch.float32, torch.float64) else logits.to(_F64)
        n = x.numel()
        grid = _Grid(edges, n, x.dtype)
        bucket = torch.empty(n, dtype=torch.int32, device=x.device)
        size = _chunk(n, x.device)
        buf = torch.empty(size, dtype=grid.work, device=x.device)
        x64 = buf if grid.work == _F64 else torch.empty(size, dtype=_F64, device=x.device)
        starts = range(0, n, size)
        if len(starts) > 1:  # the unread entries of each chunk
            bounds = torch.arange(0, n + size, size, device=x.device)
            cuts = torch.searchsorted(unread, bounds).tolist()
        else:
            cuts = [0, unread.numel()]
        counts = sums = None
        for k, c0 in enumerate(starts):
            xc, out = x[c0 : c0 + size], bucket[c0 : c0 + size]
            k_n = xc.numel()
            grid.fill(xc, out, buf[:k_n])
            if cuts[k + 1] > cuts[k]:
                out[unread[cuts[k] : cuts[k + 1]] - c0] = nb - 1
            c = torch.bincount(out, minlength=nb)
            s = torch.bincount(out, weights=x64[:k_n].copy_(xc), minlength=nb)
            counts, sums = (c, s) if counts is None else (counts.add_(c), sums.add_(s))
        return bucket, counts[: nb - 1].to(_F64), sums[: nb - 1]

    def spread(self, w: torch.Tensor) -> torch.Tensor:
        """``g_k = sum_i w_i H(s_k - s_i)`` for every negative ``k`` (0 elsewhere).

        Within a bucket ``g`` is ``A + B s_k``; each edge changes the slope and intercept: a
        window opening at ``lo_i`` adds ``(u_i, -u_i lo_i)`` with ``u_i = w_i / (2 delta)``, its
        end at ``hi_i`` adds ``(-u_i, u_i hi_i)`` (the ramp leaves at height ``w_i``); so
        ``slope = cat(u, -u)`` and ``intercept = -slope * edges`` per edge, prefix-summed in
        edge order. With ``delta = 0`` the step at ``s_i`` adds ``w_i`` to the intercept.
        One gather of ``(A, B)`` pairs per chunk, written straight into the output."""
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
        if self.x.dtype not in (torch.float32, torch.float64):
            ab = ab.T.contiguous()
            a, b = ab[0].index_select(0, self.bucket), ab[1].index_select(0, self.bucket)
            return torch.addcmul(a, b, self.x)
        pairs_of = torch.view_as_complex(ab)
        n = self.x.numel()
        size = _chunk(n, self.x.device)
        if size == n:
            pairs = torch.view_as_real(pairs_of.index_select(0, self.bucket))
            return torch.addcmul(pairs[:, 0], pairs[:, 1], self.x)
        out = torch.empty_like(self.x)
        buf = torch.empty(size, dtype=pairs_of.dtype, device=self.x.device)
        for c0 in range(0, n, size):
            b = self.bucket[c0 : c0 + size]
            pairs = torch.view_as_real(torch.index_select(pairs_of, 0, b, out=buf[: b.numel()]))
            torch.addcmul(pairs[:, 0], pairs[:, 1], self.x[c0 : c0 + size], out=out[c0 : c0 + size])
        return out


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


def _edges(sp: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Window of each positive among the sorted positives: ``[t_lo, t_hi)`` and ``lo``."""
    lo = sp - delta
    return torch.searchsorted(sp, lo), torch.searchsorted(sp, sp + delta), lo
