"""Ranking losses: parity with the official vectors, an independent positive loop, properties.

The reference loops below are written from the paper / notes (one positive at a time, float64),
independently of ``percepta.losses.ranking`` (which never forms them). Tolerances: official
vectors float64 1e-9 absolute, float32 rtol 1e-5 / atol 1e-6; fast vs loop 1e-9 absolute.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from percepta.errors import DataError, PerceptaError
from percepta.losses import ranking, ranking_sums
from percepta.losses.ranking import alrp_loc_loss, alrp_loss, ap_loss, rank_sort_loss

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "rs_loss"
CASES = sorted(p.name for p in FIX.glob("*.json"))


@pytest.fixture(params=["small-input paths", "large-input paths"])
def paths(request, monkeypatch):
    """Run a test through both code paths: binary search + dense P x P sorting terms (what small
    inputs take), and the uniform-grid bucketing in chunks + dominance tree (what 1e5+ logits /
    256+ positives take), forced on the small test inputs by lowering the thresholds."""
    if request.param == "large-input paths":
        monkeypatch.setattr(ranking_sums, "_GRID_MIN_N", 0)
        monkeypatch.setattr(ranking_sums, "_CHUNK", 97)  # many chunks, a ragged last one
        monkeypatch.setattr(ranking, "_DENSE_MAX_P", 0)
    return request.param


def _h(x: torch.Tensor, delta: float) -> torch.Tensor:
    if delta == 0:
        return (x >= 0).double()
    return torch.clamp(x / (2 * delta) + 0.5, 0, 1)


def ref_rank_sort(s, y, delta, eps=1e-10):
    """Loop reference of RS (ranking, sorting, grad) in float64."""
    s, y = s.double(), y.double()
    pos = [i for i in range(len(s)) if y[i] > 0]
    neg = [k for k in range(len(s)) if y[k] == 0]
    g = torch.zeros(len(s), dtype=torch.float64)
    if not pos:
        return 0.0, 0.0, g
    sp, yp, sn = s[pos], y[pos], s[neg]
    lr, ls = [], []
    for i in pos:
        aa = _h(sp - s[i], delta)
        bb = _h(sn - s[i], delta)
        rp, fp = aa.sum(), bb.sum()
        lr.append(fp / (rp + fp))
        tgt = aa * (yp >= y[i])
        e = (aa * (1 - yp)).sum() / rp - (tgt * (1 - yp)).sum() / tgt.sum()
        ls.append(e)
        if fp > eps:
            g[i] -= lr[-1]
            for b, k in enumerate(neg):
                g[k] += lr[-1] * bb[b] / fp
        mis = aa * (yp < y[i])
        if mis.sum() > eps:
            g[i] -= e
            for b, j in enumerate(pos):
                g[j] += e * mis[b] / mis.sum()
    return float(sum(lr) / len(pos)), float(sum(ls) / len(pos)), g / len(pos)


def ref_ap(s, y, delta):
    """Loop reference of the interpolated AP loss with its error-driven update."""
    s, y = s.double(), y.double()
    pos = sorted((i for i in range(len(s)) if y[i] == 1), key=lambda i: float(s[i]))
    neg = [k for k in range(len(s)) if y[k] == 0]
    g = torch.zeros(len(s), dtype=torch.float64)
    best, precs = 0.0, []
    for i in pos:
        aa = sum(float(_h(s[j] - s[i], delta)) for j in pos if j != i)
        bb = _h(s[neg] - s[i], delta)
        rank = 1 + aa + float(bb.sum())
        p = (1 + aa) / rank
        factor = 1.0 if best <= p else (1 - max(best, p)) / (1 - p)
        best = max(best, p)
        g[neg] += bb * factor / rank
        g[i] = -(1 - best)
        precs.append(best)
    return 1 - sum(precs) / len(pos), g / len(pos)


def ref_alrp(s, y, e, delta, eps=1e-5):
    """Loop reference of aLRP's classification part: (loss, ranks, grad)."""
    s, y, e = s.double(), y.double(), e.double()
    pos = [i for i in range(len(s)) if y[i] == 1]
    neg = [k for k in range(len(s)) if y[k] == 0]
    g = torch.zeros(len(s), dtype=torch.float64)
    ranks, prec = [], []
    for i in pos:
        aa = torch.tensor(
            [float(_h(s[j] - s[i], delta)) if j != i else 0.0 for j in pos], dtype=torch.float64
        )
        bb = _h(s[neg] - s[i], delta)
        fp = float(bb.sum())
        rank = 1 + float(aa.sum()) + fp
        ranks.append(rank)
        prec.append((1 + float(aa.sum())) / rank)
        if fp > eps:
            amount = (float((aa * e).sum()) + fp) / rank
            g[i] = -amount
            g[neg] += bb * amount / fp
    return 1 - sum(prec) / len(pos), torch.tensor(ranks, dtype=torch.float64), g / len(pos)


def _load(name):
    return json.loads((FIX / name).read_text())


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_with_official_vectors(name, dtype, paths):
    d = _load(name)
    inp = d["inputs"]
    exp = d["expected"] if dtype == torch.float64 else d["expected"]["float32_run"]
    tol = dict(rtol=0, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    x = torch.tensor(inp["logits"], dtype=dtype, requires_grad=True)
    t = torch.tensor(inp["targets"], dtype=dtype)

    def close(a, b):
        torch.testing.assert_close(
            torch.as_tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype), **tol
        )

    if d["kind"] == "RankSort":
        r, srt = rank_sort_loss(x, t, inp["delta_RS"])
        (r + srt).backward()
        close(r.detach(), exp["ranking_loss"])
        close(srt.detach(), exp["sorting_loss"])
    elif d["kind"] == "APLoss":
        loss = ap_loss(x, t, inp["delta"])
        loss.backward()
        close(loss.detach(), exp["loss"])
    else:
        e = torch.tensor(inp["regression_losses"], dtype=dtype)
        loss, rank, order = alrp_loss(x, t, e, inp["delta"])
        loss.backward()
        close(loss.detach(), exp["cls_loss"])
        close(rank, exp["rank"])
        loc = alrp_loc_loss(x.detach()[t == 1], e, rank)
        close(loc, exp["loc_component_head_formula"])
        if "order" in exp:
            assert order.tolist() == exp["order"]
    close(x.grad, exp["grad_logits"])


def _random_case(seed, n=300, p=25, ties=False, ignore=0.0, binary=False):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, generator=g, dtype=torch.float64) * 1.5 - 1.0
    y = torch.zeros(n, dtype=torch.float64)
    idx = torch.randperm(n, generator=g)
    s[idx[:p]] = torch.randn(p, generator=g, dtype=torch.float64) + 0.3
    if binary:
        y[idx[:p]] = 1.0
    else:
        y[idx[:p]] = torch.rand(p, generator=g, dtype=torch.float64) * 0.9 + 0.1
    if ties:  # coarse grids: tied logits (pos-pos, pos-neg) and tied IoUs
        s = torch.round(s * 4) / 4
        if not binary:
            y[idx[:p]] = torch.round(y[idx[:p]] * 5).clamp(min=1) / 5
    m = int(ignore * n)
    y[idx[p : p + m]] = -1.0
    return s, y


@pytest.mark.parametrize("delta", [0.5, 0.0, 1.0, 0.1])
@pytest.mark.parametrize("ties,ignore", [(False, 0.0), (True, 0.0), (True, 0.2), (False, 0.3)])
def test_rank_sort_matches_loop(delta, ties, ignore, paths):
    for seed in range(2):
        s, y = _random_case(seed, ties=ties, ignore=ignore)
        x = s.clone().requires_grad_(True)
        r, srt = rank_sort_loss(x, y, delta)
        (r + srt).backward()
        rr, rs, rg = ref_rank_sort(s, y, delta)
        assert abs(r.item() - rr) < 1e-9 and abs(srt.item() - rs) < 1e-9
        torch.testing.assert_close(x.grad, rg, rtol=0, atol=1e-9)


@pytest.mark.parametrize("delta", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("ties,ignore", [(False, 0.0), (True, 0.2)])
def test_ap_and_alrp_match_loop(delta, ties, ignore, paths):
    s, y = _random_case(3, ties=ties, ignore=ignore, binary=True)
    x = s.clone().requires_grad_(True)
    ap_loss(x, y, delta).backward()
    ref, g = ref_ap(s, y, delta)
    assert abs(ap_loss(s, y, delta).item() - ref) < 1e-9
    torch.testing.assert_close(x.grad, g, rtol=0, atol=1e-9)
    e = torch.rand(int((y == 1).sum()), generator=torch.Generator().manual_seed(1)).double() * 2
    x = s.clone().requires_grad_(True)
    loss, rank, _ = alrp_loss(x, y, e, delta)
    loss.backward()
    rl, rrank, rg = ref_alrp(s, y, e, delta)
    assert abs(loss.item() - rl) < 1e-9
    torch.testing.assert_close(rank, rrank, rtol=0, atol=1e-9)
    torch.testing.assert_close(x.grad, rg, rtol=0, atol=1e-9)


def test_order_invariance(paths):
    s, y = _random_case(5, ties=True, ignore=0.1)
    perm = torch.randperm(len(s), generator=torch.Generator().manual_seed(0))
    out = []
    for ss, yy in ((s, y), (s[perm], y[perm])):
        x = ss.clone().requires_grad_(True)
        r, srt = rank_sort_loss(x, yy)
        (r + srt).backward()
        out.append((r.item(), srt.item(), x.grad))
    assert abs(out[0][0] - out[1][0]) < 1e-12 and abs(out[0][1] - out[1][1]) < 1e-12
    torch.testing.assert_close(out[0][2][perm], out[1][2], rtol=0, atol=1e-12)


def test_zero_loss_when_positives_outrank_negatives_by_more_than_delta():
    neg = torch.linspace(-3, 0, 50, dtype=torch.float64)
    pos = torch.tensor([0.6, 1.4, 2.2], dtype=torch.float64)  # gaps > 2 * 0.5 apart too
    s = torch.cat([neg, pos])
    iou = torch.cat([torch.zeros(50), torch.tensor([0.5, 0.7, 0.9])]).double()
    x = s.clone().requires_grad_(True)
    r, srt = rank_sort_loss(x, iou, 0.5)
    (r + srt).backward()
    assert r.item() == 0 and srt.item() == 0 and not x.grad.any()
    binary = (iou > 0).double()
    assert ap_loss(s, binary, 0.5).item() == pytest.approx(0, abs=1e-15)
    assert alrp_loss(s, binary, torch.ones(3), 0.5)[0].item() == pytest.approx(0, abs=1e-15)


def test_identity_update_is_balanced(paths):
    s, y = _random_case(7, ties=True, ignore=0.1)
    x = s.clone().requires_grad_(True)
    r, srt = rank_sort_loss(x, y)
    (r + srt).backward()
    pos, neg = y > 0, y == 0
    # ranking: negatives receive exactly what positives lose; sorting: zero-sum among positives
    assert abs(x.grad[neg].sum().item() - r.item()) < 1e-12
    assert abs(x.grad.sum().item()) < 1e-12
    assert x.grad[pos].sum().item() < 0
    sb, yb = _random_case(8, ignore=0.1, binary=True)
    for fn in (lambda z: ap_loss(z, yb), lambda z: alrp_loss(z, yb, torch.rand(25).double())[0]):
        x = sb.clone().requires_grad_(True)
        fn(x).backward()
        assert abs(x.grad.sum().item()) < 1e-12 and x.grad[yb == 0].min() >= 0


def test_no_positive_and_all_ignored_give_zero_loss_and_grad(paths):
    for y in (torch.zeros(20), -torch.ones(20)):
        x = torch.randn(20, requires_grad=True)
        r, srt = rank_sort_loss(x, y)
        (r + srt).backward()
        assert r.item() == 0 and srt.item() == 0 and not x.grad.any()
        x.grad = None
        ap_loss(x, y).backward()
        assert not x.grad.any()
        x.grad = None
        loss, rank, order = alrp_loss(x, y, torch.zeros(0))
        loss.backward()
        assert loss.item() == 0 and rank.numel() == 0 and not x.grad.any()


@pytest.mark.parametrize(
    "logits,targets,match",
    [
        (torch.zeros(5), torch.zeros(4), "shape"),
        (torch.tensor([0.0, float("nan"), 1.0]), torch.tensor([1.0, 0.0, 0.0]), "NaN"),
        (torch.zeros(3), torch.tensor([1.5, 0.0, 0.0]), "targets"),
        (torch.zeros(3), torch.tensor([-0.5, 1.0, 0.0]), "targets"),
        (torch.zeros(3), torch.tensor([float("nan"), 1.0, 0.0]), "found nan"),
        (torch.zeros(3), torch.tensor([-2.0, 1.0, 0.0]), "found -2.0"),
        (torch.zeros(3000), torch.zeros(3000).index_fill_(0, torch.tensor([7, 2999]), 2.0), "2.0"),
    ],
)
def test_bad_input_is_a_one_line_data_error(logits, targets, match):
    with pytest.raises(DataError, match=match) as err:
        rank_sort_loss(logits, targets)
    assert isinstance(err.value, PerceptaError) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="1, 0 or -1"):
        ap_loss(torch.zeros(2), torch.tensor([0.5, 0.0]))
    with pytest.raises(DataError, match="regression_losses"):
        alrp_loss(torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]), torch.zeros(1))


def test_negative_zero_targets_are_negatives():
    # -0.0 compares equal to 0: a negative, not an ignored entry or a positive
    g = torch.Generator().manual_seed(5)
    x = torch.randn(50, generator=g)
    t = torch.zeros(50)
    t[:5] = 0.7
    neg0 = t.clone()
    neg0[5:] = -0.0
    for a, b in zip(rank_sort_loss(x, t), rank_sort_loss(x, neg0)):
        assert abs(a.item() - b.item()) < 1e-7  # float32 losses: the same sums either way
    binary = (t > 0).float()
    signed = torch.where(binary > 0, 1.0, -0.0)
    assert abs(ap_loss(x, binary).item() - ap_loss(x, signed).item()) < 1e-7
    # the comparison can fail: the loss does depend on which entries are positives
    assert abs(ap_loss(x, binary).item() - ap_loss(x, torch.ones(50)).item()) > 1e-3


def test_losses_are_registered():
    from percepta.registry import LOSSES

    for name in ("rank_sort", "ap_loss", "alrp", "smooth_ap"):
        assert name in LOSSES
    # one positive at 0 below one negative at 1: FP = H(1) = 1, R+ = H(0) = 1/2 -> 1 / 1.5
    r, srt = LOSSES.build("rank_sort")(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert r.item() == pytest.approx(2 / 3, abs=1e-7) and srt.item() == 0


def _true_ap(scores, rel):
    order = torch.argsort(scores, descending=True)
    hits = rel[order].double()
    prec = torch.cumsum(hits, 0) / torch.arange(1, len(hits) + 1)
    return float((prec * hits).sum() / hits.sum())


def test_smooth_ap_value_and_retrieval_gradient():
    from percepta.losses.ranking import smooth_ap_loss

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 40, generator=g, dtype=torch.float64)
    rel = (torch.rand(2, 40, generator=g) < 0.2).double()
    rel[:, 0] = 1.0
    tau = 0.1
    # independent double loop of the paper's eq. (Brown et al. 2020, eq. 7)
    ref = []
    for q in range(2):
        pos = [i for i in range(40) if rel[q, i] == 1]
        terms = []
        for i in pos:
            sig = [torch.sigmoid((scores[q, j] - scores[q, i]) / tau) for j in range(40) if j != i]
            sp = [torch.sigmoid((scores[q, j] - scores[q, i]) / tau) for j in pos if j != i]
            terms.append((1 + sum(sp)) / (1 + sum(sig)))
        ref.append(sum(terms) / len(terms))
    x = scores.clone().requires_grad_(True)
    loss = smooth_ap_loss(x, rel, temperature=tau)
    assert abs(loss.item() - (1 - float(sum(ref)) / 2)) < 1e-12
    loss.backward()
    assert (x.grad[rel == 1] <= 0).all() and x.grad[rel == 1].sum() < 0  # raise positives
    before = [_true_ap(scores[q], rel[q]) for q in range(2)]
    for _ in range(30):
        x.grad = None
        smooth_ap_loss(x, rel, temperature=tau).backward()
        with torch.no_grad():
            x -= 5.0 * x.grad
    after = [_true_ap(x.detach()[q], rel[q]) for q in range(2)]
    assert all(a > b for a, b in zip(after, before)), (before, after)
    assert smooth_ap_loss(torch.randn(5), torch.zeros(5)).item() == 0


def _grid_buckets(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """``_Grid``'s buckets of all of ``x`` (what the losses' grid path computes chunk by chunk)."""
    out = torch.empty(x.shape, dtype=torch.int32)
    return ranking_sums._Grid(edges, x.numel(), x.dtype).fill(x, out).long()


def test_grid_bucketing_equals_binary_search():
    g = torch.Generator().manual_seed(3)
    edges = torch.sort(torch.randn(40, generator=g, dtype=torch.float64)).values
    x = torch.cat([torch.randn(5000, generator=g, dtype=torch.float64) * 2, edges, edges + 1e-15])
    assert torch.equal(_grid_buckets(x, edges), torch.searchsorted(edges, x, right=True))
    x32 = x.float()  # float32 logits compare with the edges rounded to float32
    expected32 = torch.searchsorted(edges.float(), x32, right=True)
    assert torch.equal(_grid_buckets(x32, edges), expected32)
    for tied in (torch.zeros(10, dtype=torch.float64), torch.tensor([0.0] * 5 + [1.0] * 3)):
        tied = tied.double()  # many edges in one cell, or all edges equal (zero range)
        assert torch.equal(_grid_buckets(x, tied), torch.searchsorted(tied, x, right=True))


@pytest.mark.parametrize("seed", range(6))
def test_grid_bucketing_near_cell_bounds(seed):
    # clustered edges; elements on the edges, one ulp either side of them, a quarter cell either
    # side, and on (and one ulp either side of) the grid's cell bounds: every one must land where
    # the binary search puts it, in float64 and in float32
    g = torch.Generator().manual_seed(seed)
    n_edges = int(torch.randint(2, 300, (1,), generator=g))
    centres = torch.randn(max(1, n_edges // 4), generator=g, dtype=torch.float64)
    pick = torch.randint(0, len(centres), (n_edges,), generator=g)
    edges = torch.sort(centres[pick] + 1e-3 * torch.randn(n_edges, generator=g).double()).values
    n = 20000 + 7 * n_edges + 3 * 500
    for dtype in (torch.float64, torch.float32):
        grid = ranking_sums._Grid(edges, n, dtype)  # the grid _grid_buckets builds for n logits
        k = torch.linspace(0, grid.m + 1, 500, dtype=torch.float64).round()
        bounds = ((k + grid.shift) / grid.scale).to(dtype)  # where cell(x) steps
        e = edges.to(dtype)
        up, down = torch.tensor(float("inf"), dtype=dtype), torch.tensor(-float("inf"), dtype=dtype)
        quarter = (0.25 / grid.scale) * torch.tensor([-1.0, 1.0], dtype=torch.float64)
        x = torch.cat(
            [
                (torch.randn(20000, generator=g, dtype=torch.float64) * 2).to(dtype),
                e,
                torch.nextafter(e, up),
                torch.nextafter(e, down),
                (edges[:, None] + quarter).flatten().to(dtype),
                torch.nextafter(e + 1e-9, up),
                torch.nextafter(e - 1e-9, down),
                bounds,
                torch.nextafter(bounds, up),
                torch.nextafter(bounds, down),
            ]
        )
        assert x.numel() == n
        expected = torch.searchsorted(e, x, right=True)
        assert torch.equal(_grid_buckets(x, edges), expected)


@pytest.mark.parametrize("offset", [0.0, 300.0, -5000.0])
def test_grid_bucketing_is_exact_far_from_zero_in_float32(offset):
    # logits far from 0 with a narrow spread: float32 cannot resolve a grid cell by itself
    g = torch.Generator().manual_seed(4)
    x32 = (torch.randn(20000, generator=g) * 0.5 + offset).float()
    pos = torch.randperm(20000, generator=g)[:50]
    edges = torch.sort(torch.cat([x32[pos].double() - 0.5, x32[pos].double() + 0.5])).values
    expected = torch.searchsorted(edges.float(), x32, right=True)
    assert torch.equal(_grid_buckets(x32, edges), expected)


@pytest.mark.parametrize("grid", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_logits_match_their_float32_values(monkeypatch, grid, dtype):
    # bf16 / fp16 logits (a head under autocast): the loss must treat them as the numbers they
    # hold; compare with the same values in float32 (bf16 output rounding: rtol 1e-2)
    monkeypatch.setattr(ranking_sums, "_GRID_MIN_N", 0 if grid else 10**9)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, generator=g) * 1.5 - 1.5
    t = torch.zeros(3000)
    t[:40] = torch.rand(40, generator=g) * 0.7 + 0.3
    x[:40] += 2.0
    low = x.to(dtype).requires_grad_(True)
    ref = low.detach().float().requires_grad_(True)
    r, s = rank_sort_loss(low, t.to(dtype), 0.5)
    (r + s).backward()
    r32, s32 = rank_sort_loss(ref, t.to(dtype).float(), 0.5)
    (r32 + s32).backward()
    assert low.grad.dtype == dtype
    assert abs(r.item() - r32.item()) < 1e-2 and abs(s.item() - s32.item()) < 1e-2
    scale = ref.grad.abs().max().item()
    assert (low.grad.float() - ref.grad).abs().max().item() < 1e-2 * scale
