"""Rank & Sort loss, forward + backward: percepta's bucketed O(N log P) vs the positive loop.

The baseline is the official algorithm (kemaloksuz/RankSortLoss ``RankSort``: one Python
iteration per positive, O(P (P + N'))) written out below, device-agnostic. Data recipe of
issue 13: float32, logits ~ N(-1.5, 1.5); positives (IoU targets 0.8) ~ N(0.3, 1); 2 threads;
median of warm repeats, ours and the baseline interleaved. One JSON line per grid point N x P
(``ratio = baseline / ours``), with the peak memory of ours (CUDA: ``max_memory_allocated``; CPU: live tensor bytes tracked by a
dispatch mode in an extra, untimed run) and the largest gradient difference to the baseline.

Usage: ``python benchmarks/bench_ranking_losses.py [--quick | --tiny] [--device cpu|cuda]
[--threads 2]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import weakref

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/, from any cwd
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from _common import emit, machine  # noqa: E402
from percepta.losses.ranking import rank_sort_loss  # noqa: E402


class _Baseline(torch.autograd.Function):
    """The official positive loop (identity update stored in forward)."""

    @staticmethod
    def forward(ctx, logits, targets, delta=0.5, eps=1e-10):  # type: ignore[override]
        dev = logits.device
        grads = torch.zeros(logits.shape, device=dev)
        fg = targets > 0.0
        fl, ft = logits[fg], targets[fg]
        n = len(fl)
        rel = (targets == 0) & (logits >= torch.min(fl) - delta)
        bl = logits[rel]
        bg_grad = torch.zeros(len(bl), device=dev)
        sort_err, rank_err, fg_grad = (torch.zeros(n, device=dev) for _ in range(3))
        for ii in torch.argsort(fl):
            fr = torch.clamp((fl - fl[ii]) / (2 * delta) + 0.5, min=0, max=1)
            br = torch.clamp((bl - fl[ii]) / (2 * delta) + 0.5, min=0, max=1)
            rank_pos, fp = torch.sum(fr), torch.sum(br)
            rank_err[ii] = fp / (rank_pos + fp)
            cur = torch.sum(fr * (1 - ft)) / rank_pos
            iou_rel = ft >= ft[ii]
            tgt = iou_rel * fr
            sort_err[ii] = cur - torch.sum(tgt * (1 - ft)) / torch.sum(tgt)
            if fp > eps:
                fg_grad[ii] -= rank_err[ii]
                bg_grad += br * (rank_err[ii] / fp)
            mis = (~iou_rel) * fr
            denom = torch.sum(mis)
            if denom > eps:
                fg_grad[ii] -= sort_err[ii]
                fg_grad += mis * (sort_err[ii] / denom)
        grads[fg] = fg_grad / n
        grads[rel] = bg_grad / n
        ctx.save_for_backward(grads)
        return rank_err.mean(), sort_err.mean()

    @staticmethod
    def backward(ctx, g1, g2):  # type: ignore[override]
        (g,) = ctx.saved_tensors
        return g * g1, None, None, None


class _PeakBytes(TorchDispatchMode):
    """Peak of live tensor storage bytes created inside the mode (CPU peak-memory proxy)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.cur = self.peak = 0

    def _drop(self, ptr: int) -> None:
        self.cur -= self.live.pop(ptr, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                ptr = st.data_ptr()
                if ptr and ptr not in self.live:
                    self.live[ptr] = st.nbytes()
                    self.cur += st.nbytes()
                    self.peak = max(self.peak, self.cur)
                    weakref.finalize(st, self._drop, ptr)
        return out


def make_data(n: int, p: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=g) * 1.5 - 1.5
    targets = torch.zeros(n)
    idx = torch.randperm(n, generator=g)[:p]
    logits[idx] = torch.randn(p, generator=g) + 0.3
    targets[idx] = 0.8
    return logits.to(device), targets.to(device)


def step(fn, logits, targets):
    x = logits.clone().requires_grad_(True)
    r, s = fn(x, targets)
    (r + s).backward()
    return x.grad


def _once(fn, logits, targets, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step(fn, logits, targets)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def timed_pair(ours, base, logits, targets, reps_ours: int, reps_base: int, device: str):
    """Medians of ``reps_ours`` and ``reps_base`` warm steps, interleaved: round after round, one
    baseline step, then a share of ours, each side after one untimed step of its own (so both
    are timed warm, as in back-to-back repeats). On a shared VM whose speed drifts, both then see
    the same machine and the ratio does not depend on which ran first."""
    t_ours, t_base = [], []
    per_round = -(-reps_ours // reps_base)
    for _ in range(reps_base):
        step(base, logits, targets)
        t_base.append(_once(base, logits, targets, device))
        step(ours, logits, targets)
        for _ in range(min(per_round, reps_ours - len(t_ours))):
            t_ours.append(_once(ours, logits, targets, device))
    return statistics.median(t_ours), statistics.median(t_base)


def peak_mb(fn, logits, targets, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(fn, logits, targets)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with _PeakBytes() as mode:
        step(fn, logits, targets)
    return mode.peak / 2**20


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="N in {1e4, 1e5} x P in {10, 100, 1000}")
    ap.add_argument("--tiny", action="store_true", help="N = 2000, P in {10, 100} (a smoke test)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ns = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    ps = [10, 100, 1000] if args.quick else [10, 100, 1000, 5000]
    if args.tiny:
        ns, ps = [2000], [10, 100]
    ours = lambda x, t: rank_sort_loss(x, t, 0.5)  # noqa: E731
    base = lambda x, t: _Baseline.apply(x, t, 0.5)  # noqa: E731
    info = machine("torch", device=args.device)
    for n in ns:
        for p in ps:
            logits, targets = make_data(n, p, args.device)
            g_ours, g_base = step(ours, logits, targets), step(base, logits, targets)  # warm-up
            diff = (g_ours - g_base).abs().max().item()
            t_ours, t_base = timed_pair(
                ours,
                base,
                logits,
                targets,
                15 if p <= 1000 else 7,
                5 if p <= 100 else 3,
                args.device,
            )
            emit(
                f"rank_sort_N{n}_P{p}",
                t_ours,
                t_base,
                n=n,
                p=p,
                peak_mb_ours=round(peak_mb(ours, logits, targets, args.device), 2),
                max_abs_grad_diff=diff,
                machine=info,
            )


if __name__ == "__main__":
    main()
