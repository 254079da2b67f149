"""Metrics and fits against independent computations: by hand, numpy formulas, torchmetrics,
and ``scipy.optimize.curve_fit`` from the customary starts on the full (non-projected) models."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import curve_fit
from torchmetrics.functional.regression import kendall_rank_corrcoef, spearman_corrcoef

from percepta.quality.evaluation import correlations, quality_metrics
from percepta.quality.logistic import fit_logistic, logistic4, logistic5


def test_tiny_example_by_hand():
    # x = [1,2,2,3], y = [1,2,3,3]: 4 concordant, 0 discordant pairs, one tie in x, one in y:
    # tau-b = 4 / sqrt((6-1)(6-1)) = 0.8 (tau-a would be 4/6).
    # Average ranks x = [1,2.5,2.5,4], y = [1,2,3.5,3.5]: rho = 3.75 / 4.5 = 5/6.
    r = correlations(np.array([1.0, 2, 2, 3]), np.array([1.0, 2, 3, 3]))
    assert r["krocc"] == pytest.approx(0.8, abs=1e-12)
    assert r["srocc"] == pytest.approx(5 / 6, abs=1e-12)
    # x = [1,2,3], y = [1,3,2]: Pearson 1/2, RMSE sqrt(2/3).
    r = correlations(np.array([1.0, 2, 3]), np.array([1.0, 3, 2]))
    assert r["plcc"] == pytest.approx(0.5, abs=1e-12)
    assert r["rmse"] == pytest.approx(math.sqrt(2 / 3), abs=1e-12)


def _avg_ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _tau_b(x: np.ndarray, y: np.ndarray) -> float:
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), 1)
    s = float(np.sum(dx[iu] * dy[iu]))
    n0 = len(iu[0])
    n1 = int(np.sum(dx[iu] == 0))
    n2 = int(np.sum(dy[iu] == 0))
    return s / math.sqrt((n0 - n1) * (n0 - n2))


def test_numpy_formulas_and_torchmetrics_on_tied_data():
    rng = np.random.default_rng(7)
    y = rng.integers(1, 6, size=60).astype(float)
    x = np.round(0.6 * y + rng.normal(0, 0.8, size=60))  # heavy ties in both
    r = correlations(x, y)
    assert r["srocc"] == pytest.approx(
        float(np.corrcoef(_avg_ranks(x), _avg_ranks(y))[0, 1]), abs=1e-12
    )
    assert r["krocc"] == pytest.approx(_tau_b(x, y), abs=1e-12)
    assert r["plcc"] == pytest.approx(float(np.corrcoef(x, y)[0, 1]), abs=1e-12)
    assert r["rmse"] == pytest.approx(float(np.sqrt(np.mean((x - y) ** 2))), abs=1e-12)
    xt, yt = torch.tensor(x), torch.tensor(y)
    assert r["srocc"] == pytest.approx(float(spearman_corrcoef(xt, yt)), abs=1e-6)
    assert r["krocc"] == pytest.approx(float(kendall_rank_corrcoef(xt, yt, variant="b")), abs=1e-6)


@pytest.mark.parametrize(
    "kind,params,x_range",
    [
        ("logistic4", [80.0, 10.0, 0.4, 0.12], (0.0, 1.0)),  # increasing, SSIM-like x, MOS 0-100
        ("logistic4", [1.0, 5.0, 1500.0, 90.0], (1100.0, 1850.0)),  # decreasing, Elo-like x
        ("logistic5", [3.0, 12.0, 0.5, 1.5, 2.0], (0.0, 1.0)),
    ],
)
def test_recovers_noise_free_curve(kind, params, x_range):
    x = np.linspace(*x_range, 40)
    y = (logistic4 if kind == "logistic4" else logistic5)(x, *params)
    res = fit_logistic(x, y, kind)
    assert res.ok
    assert res.sse <= 1e-16 * float(np.sum((y - y.mean()) ** 2)) + 1e-20
    assert res.plcc == pytest.approx(1.0, abs=1e-12)
    # The curve is recovered (parameters are identifiable for a well-sampled sigmoid).
    assert np.allclose(res.predict(x), y, rtol=0, atol=1e-7 * np.ptp(y))


def _customary_starts(kind, x, y):
    """Starting points of the usual evaluation scripts, in original units (see the notes)."""
    mx, sx, my = x.mean(), x.std(), y.mean()
    if kind == "logistic4":  # pyiqa, VIDEVAL, +-std, median
        return [
            [y.max(), y.min(), mx, sx / 4],
            [y.max(), y.min(), mx, 0.5],
            [y.max(), y.min(), mx, sx],
            [y.max(), y.min(), mx, -sx],
            [y.max(), y.min(), np.median(x), sx / 4],
        ]
    return [
        [10, 0, mx, 0.1, 0.1],
        [10, 0, my, 0.1, 0.1],  # DBCNN MATLAB, pyiqa
        [np.ptp(y), 1 / sx, mx, 0, my],
        [np.ptp(y), 4 / sx, mx, 0, my],
    ]


@pytest.mark.parametrize("kind", ["logistic4", "logistic5"])
@pytest.mark.parametrize("data", ["sigmoid", "dmos_elo"])
def test_at_least_as_good_as_curve_fit_from_customary_starts(kind, data):
    """Plain ``curve_fit`` (large maxfev) from the customary starts never beats our fit, and the
    reported parameters are a local minimum of the full (non-projected) problem."""
    rng = np.random.default_rng(3)
    if data == "sigmoid":
        x = rng.uniform(0, 1, 80)
        y = 1 + 4 / (1 + np.exp(-(x - 0.6) / 0.1)) + rng.normal(0, 0.35, 80)
    else:  # Elo-like predictions, DMOS-like decreasing targets, saturating at the top
        x = rng.uniform(900, 1800, 120)
        y = 100 - 90 / (1 + np.exp(-(x - 1500) / 80)) + rng.normal(0, 6, 120)
    ours = fit_logistic(x, y, kind)
    f = logistic4 if kind == "logistic4" else logistic5
    best = math.inf
    for p0 in _customary_starts(kind, x, y):
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                p, _ = curve_fit(f, x, y, p0=p0, maxfev=20000)
        except RuntimeError:
            continue
        sse = float(np.sum((f(x, *p) - y) ** 2))
        if math.isfinite(sse):
            best = min(best, sse)
    assert math.isfinite(best)
    assert ours.sse <= best * (1 + 1e-6)
    for i in range(len(ours.params)):
        for step in (1e-4, -1e-4):
            q = list(ours.params)
            q[i] += step * max(abs(q[i]), 1e-3)
            assert float(np.sum((f(x, *q) - y) ** 2)) >= ours.sse * (1 - 1e-9)


def test_fitted_plcc_equals_sqrt_explained_variance():
    # For a least-squares fit with free offset and scale, PLCC(f(x), y)^2 = 1 - SSE / SST.
    rng = np.random.default_rng(11)
    x = rng.normal(size=120)
    y = np.tanh(x) + rng.normal(0, 0.2, 120)
    out = quality_metrics(x, y)
    sst = float(np.sum((y - y.mean()) ** 2))
    for kind in ("logistic4", "logistic5"):
        assert out[f"plcc_{kind}"] ** 2 == pytest.approx(1 - out[f"{kind}_sse"] / sst, abs=1e-6)
        assert out[f"rmse_{kind}"] == pytest.approx(math.sqrt(out[f"{kind}_sse"] / 120), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Small cases computed by hand / in pure Python (no scipy, no numpy), independent of the
# scipy calls that produced tests/fixtures/iqa/. Tolerance 1e-12 absolute: float64 sums of a
# handful of terms, evaluated in another order.


def _ranks_no_ties(v: list[float]) -> list[int]:
    assert len(set(v)) == len(v)
    order = sorted(v)
    return [order.index(a) + 1 for a in v]


def _spearman_rank_difference(x: list[float], y: list[float]) -> float:
    """rho = 1 - 6 sum d^2 / (n (n^2 - 1)), valid without ties."""
    n = len(x)
    d2 = sum((a - b) ** 2 for a, b in zip(_ranks_no_ties(x), _ranks_no_ties(y)))
    return 1 - 6 * d2 / (n * (n * n - 1))


def _kendall_by_counting(x: list[float], y: list[float]) -> float:
    """tau-b = (C - D) / sqrt((n0 - n1)(n0 - n2)) from counted pairs; n1 / n2: pairs tied in
    x / in y (a pair tied in both counts in each), n0 = n(n-1)/2."""
    n = len(x)
    c = d = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            sx, sy = (x[j] > x[i]) - (x[j] < x[i]), (y[j] > y[i]) - (y[j] < y[i])
            tx += sx == 0
            ty += sy == 0
            if sx * sy > 0:
                c += 1
            elif sx * sy < 0:
                d += 1
    n0 = n * (n - 1) // 2
    return (c - d) / math.sqrt((n0 - tx) * (n0 - ty))


def _pearson_textbook(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


def _rmse(x: list[float], y: list[float]) -> float:
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(x, y)) / len(x))


# (x, y, srocc, krocc, plcc, rmse) worked out by hand; see the comments.
HAND_CASES = {
    # ranks x = [3,4,2,6,5,1], y = [2,4,3,6,5,1]: d = [1,0,-1,0,0,0], sum d^2 = 2,
    # rho = 1 - 12/210 = 33/35. Only the pair (0,2) is discordant: tau = (14-1)/15.
    # means 2.8 / 2.2; Sxy = 13.34, Sxx = 17.98, Syy = 11.5; x - y = [1.1,.9,-.8,1.1,1,.3]: 4.96
    "n6": (
        [2.1, 3.4, 1.2, 5.6, 4.0, 0.5],
        [1.0, 2.5, 2.0, 4.5, 3.0, 0.2],
        33 / 35,
        13 / 15,
        13.34 / math.sqrt(17.98 * 11.5),
        math.sqrt(4.96 / 6),
    ),
    # y ranks [5,3,4,1,2]: d = [-4,-1,-1,3,3], sum d^2 = 36, rho = 1 - 216/120 = -0.8;
    # pairs of y = 5,3,4,1,2: 2 concordant (3<4, 1<2), 8 discordant: tau = -6/10;
    # dx = [-2,-1,0,1,2], dy = [2,0,1,-2,-1]: Sxy = -8, Sxx = Syy = 10; sum (x-y)^2 = 36
    "n5_reversed": (
        [1.0, 2.0, 3.0, 4.0, 5.0],
        [5.0, 3.0, 4.0, 1.0, 2.0],
        -0.8,
        -0.6,
        -0.8,
        math.sqrt(36 / 5),
    ),
}


@pytest.mark.parametrize("case", sorted(HAND_CASES))
def test_hand_worked_cases_without_ties(case):
    x, y, srocc, krocc, plcc, rmse = HAND_CASES[case]
    r = correlations(np.array(x), np.array(y))
    assert r["srocc"] == pytest.approx(srocc, abs=1e-12)
    assert r["krocc"] == pytest.approx(krocc, abs=1e-12)
    assert r["plcc"] == pytest.approx(plcc, abs=1e-12)
    assert r["rmse"] == pytest.approx(rmse, abs=1e-12)
    # the pure-Python helpers reproduce the hand values (they are used on the cases below)
    assert _spearman_rank_difference(x, y) == pytest.approx(srocc, abs=1e-12)
    assert _kendall_by_counting(x, y) == pytest.approx(krocc, abs=1e-12)
    assert _pearson_textbook(x, y) == pytest.approx(plcc, abs=1e-12)
    assert _rmse(x, y) == pytest.approx(rmse, abs=1e-12)


@pytest.mark.parametrize("n,seed", [(5, 0), (6, 1), (7, 2), (8, 3), (8, 4)])
def test_pure_python_formulas_on_small_untied_draws(n, seed):
    import random

    rnd = random.Random(seed)
    x = rnd.sample(range(1, 100), n)  # distinct integers: no ties
    y = [v + rnd.choice([-40, -15, 5, 30]) + rnd.random() for v in x]
    assert len(set(y)) == n
    x = [float(v) for v in x]
    r = correlations(np.array(x), np.array(y))
    assert r["srocc"] == pytest.approx(_spearman_rank_difference(x, y), abs=1e-12)
    assert r["krocc"] == pytest.approx(_kendall_by_counting(x, y), abs=1e-12)
    assert r["plcc"] == pytest.approx(_pearson_textbook(x, y), abs=1e-12)
    assert r["rmse"] == pytest.approx(_rmse(x, y), abs=1e-12)


def test_ties_follow_the_documented_convention_by_hand():
    """Average ranks for SROCC (Pearson of the average ranks) and tau-b for KROCC.

    x = [1,2,2,3,4,4] -> ranks [1,2.5,2.5,4,5.5,5.5]; y = [1,3,2,2,5,4] -> [1,4,2.5,2.5,6,5].
    Rank deviations from 3.5: Sxy = 14.25, Sxx = 16.5, Syy = 17 -> rho = 14.25/sqrt(280.5).
    Pairs: 11 concordant, 1 discordant (x 2->3, y 3->2), tied in x: 2, tied in y: 1, so
    tau-b = (11 - 1) / sqrt((15 - 2)(15 - 1)) = 10/sqrt(182) (tau-a would be 10/15).
    """
    x, y = [1.0, 2, 2, 3, 4, 4], [1.0, 3, 2, 2, 5, 4]
    r = correlations(np.array(x), np.array(y))
    assert r["srocc"] == pytest.approx(14.25 / math.sqrt(16.5 * 17), abs=1e-12)
    assert r["krocc"] == pytest.approx(10 / math.sqrt(182), abs=1e-12)
    assert _kendall_by_counting(x, y) == pytest.approx(10 / math.sqrt(182), abs=1e-12)
    assert r["plcc"] == pytest.approx(_pearson_textbook(x, y), abs=1e-12)


def test_lower_is_better_targets_flip_only_the_correlations():
    x, y, srocc, krocc, plcc, rmse = HAND_CASES["n6"]
    out = quality_metrics(x, y, fit="raw", higher_is_better=False)
    assert out["srocc"] == pytest.approx(-srocc, abs=1e-12)
    assert out["krocc"] == pytest.approx(-krocc, abs=1e-12)
    assert out["plcc"] == pytest.approx(-plcc, abs=1e-12)
    assert out["rmse"] == pytest.approx(rmse, abs=1e-12)  # never flipped
    assert not any(k.startswith(("plcc_", "rmse_")) for k in out)  # fit="raw": no fits


def test_constant_input_gives_nan_correlations_and_a_finite_rmse():
    from percepta.quality.evaluation import QualityMetricWarning

    with pytest.warns(QualityMetricWarning, match="constant"):
        r = correlations(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]))
    assert all(math.isnan(r[k]) for k in ("srocc", "krocc", "plcc"))
    assert r["rmse"] == pytest.approx(math.sqrt(2 / 3), abs=1e-12)  # (1 + 0 + 1) / 3
