"""benchmarks/bench_ranking_losses.py: its baseline is the official positive loop (checked here
against an independent per-positive loop of the paper's formulas, not against percepta's code),
its data follow the issue's recipe, and a tiny run prints one JSON row per grid point in which
ours and the baseline agree (float32 gradients within 1e-6)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_ranking_losses.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_ranking_losses", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _loop_rank_sort(s: torch.Tensor, y: torch.Tensor, delta: float = 0.5):
    """RS ranking and sorting errors, one positive at a time (float64, notes section 3.1)."""
    h = lambda x: torch.clamp(x / (2 * delta) + 0.5, 0, 1)  # noqa: E731
    pos = (y > 0).nonzero().squeeze(1)
    neg = y == 0
    rank, sort = [], []
    for i in pos:
        a = h(s[pos] - s[i])
        fp = h(s[neg] - s[i]).sum()
        rank.append(fp / (a.sum() + fp))
        t = a * (y[pos] >= y[i])
        cur = (a * (1 - y[pos])).sum() / a.sum()
        sort.append(cur - (t * (1 - y[pos])).sum() / t.sum())
    return torch.stack(rank).mean(), torch.stack(sort).mean()


def test_baseline_is_the_positive_loop_and_data_follow_the_recipe(bench):
    logits, targets = bench.make_data(3000, 40, "cpu")
    assert int((targets > 0).sum()) == 40
    assert targets.unique().tolist() == pytest.approx([0.0, 0.8])
    neg = logits[targets == 0]
    assert abs(neg.mean().item() + 1.5) < 0.1 and abs(neg.std().item() - 1.5) < 0.1
    r, s = bench._Baseline.apply(logits.clone().double(), targets.double(), 0.5)
    rr, rs = _loop_rank_sort(logits.double(), targets.double())
    assert abs(r.item() - rr.item()) < 1e-9 and abs(s.item() - rs.item()) < 1e-9


def test_tiny_run_prints_a_row_per_grid_point(bench, capsys):
    threads = torch.get_num_threads()  # main() sets it: keep this process's setting
    try:
        bench.main(["--tiny", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["bench"] for r in rows] == ["rank_sort_N2000_P10", "rank_sort_N2000_P100"]
    for r in rows:
        assert list(r)[:4] == ["bench", "ours", "baseline", "ratio"]
        assert r["ours"] > 0 and r["baseline"] > 0 and r["peak_mb_ours"] > 0
        assert r["ratio"] == pytest.approx(r["baseline"] / r["ours"], rel=1e-9)
        assert r["max_abs_grad_diff"] < 1e-6


def test_timing_interleaves_ours_and_the_baseline(bench):
    # both see the same stretch of a drifting machine: a baseline step, then a share of ours,
    # each side after an untimed warm-up step of its own
    calls: list[str] = []

    def fake(name):
        def fn(x, t):
            calls.append(name)
            return x.sum(), x.sum()

        return fn

    logits, targets = bench.make_data(100, 5, "cpu")
    t_ours, t_base = bench.timed_pair(fake("o"), fake("b"), logits, targets, 7, 3, "cpu")
    assert "".join(calls) == "bboooobboooobboo"
    assert t_ours > 0 and t_base > 0
