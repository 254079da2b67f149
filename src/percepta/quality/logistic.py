"""Monotonic logistic mappings from objective scores to the MOS scale (VQEG / LIVE protocol).

Before PLCC and RMSE are reported, IQA papers map the predictions ``x`` onto the subjective scale
``y`` with a fitted logistic, because a good metric need only be *monotonically* related to the
MOS:

- 4-parameter logistic (VQEG FR-TV Phase II)::

      f4(x) = (b1 - b2) / (1 + exp(-(x - b3) / b4)) + b2

- 5-parameter logistic (Sheikh, Sabir & Bovik 2006, the LIVE evaluation; DBCNN's
  ``verify_performance.m``)::

      f5(x) = b1 * (0.5 - 1 / (1 + exp(b2 * (x - b3)))) + b4 * x + b5

Both are fitted by non-linear least squares of ``f(x)`` to ``y`` on the evaluation set itself.

Why our own fitting loop (``scipy.optimize.leastsq`` -- MINPACK's Levenberg-Marquardt, the engine
of ``curve_fit`` -- does the work): a one-shot ``curve_fit`` from a single default start (as in
pyiqa) fails or stops early on ordinary data -- decreasing relations, near-linear relations whose
optimum lies at huge asymptotes, ties -- because the parameters are badly scaled and strongly
coupled. We therefore

1. standardise ``x`` and ``y`` (zero mean, unit variance), so one set of starting points and
   tolerances fits every scale (SSIM in [0, 1], PIPAL Elo ~1500, DMOS 0-100);
2. start from the **customary starting points** of the evaluation scripts and of the reference
   vectors (4-parameter: pyiqa ``[max y, min y, mean x, std x / 4]``, VIDEVAL's ``b4 = 0.5``,
   ``b4 = +-std x``, the median of ``x``; 5-parameter: DBCNN's MATLAB ``[10, 0, mean x, 0.1, 0.1]``,
   pyiqa's variant with ``b3 = mean y``, and data-driven starts), and from each run two local
   Levenberg-Marquardt searches with analytic Jacobians and tight tolerances:

   - the plain fit of all parameters (what ``curve_fit`` does);
   - a *variable projection* fit (separable least squares, Golub & Pereyra 1973): both models are
     linear in all parameters but the logistic's centre ``c`` and steepness ``k`` (``b3``;
     ``1/b4`` or ``b2``), so for fixed ``(c, k)`` the linear parameters are solved exactly and the
     search runs on the 2-D surface ``(c, log k)``. Degenerate optima "at infinity" (almost-linear
     or exponential-tail fits with huge asymptotes) become flat valleys that it walks along
     quickly, where the plain fit crawls for thousands of evaluations or overflows;

3. keep the lowest SSE; if that came from a plain fit that ran out of its (small) budget,
   continue it with a large one.

This is a multi-start *local* search, not a global one. The 5-parameter objective in particular
has further step-like minima (a very steep logistic between two neighbouring predictions that fits
a handful of points); a global search would find those and inflate PLCC. The result is therefore
what the customary evaluation scripts report when they converge, or better where they stop early
or fail.

A search *fails* when the optimiser raises or ends with a non-finite SSE. If every one fails the
result has ``ok=False`` (the evaluator then reports the raw values and warns). Parameters are
returned in the original units and in the ``b1..b5`` form above; they are not unique (for
instance ``(b1, b2, b3, b4)`` and ``(b2, b1, b3, -b4)`` are the same 4-parameter curve). The
mapping is monotone for the 4-parameter model, so it never changes SROCC or KROCC.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import leastsq
from scipy.special import expit
from scipy.stats import pearsonr

__all__ = [
    "FitResult",
    "FIT_KINDS",
    "logistic4",
    "logistic5",
    "fit_logistic",
    "curve",
]

FitKind = Literal["logistic4", "logistic5"]
FIT_KINDS: tuple[str, ...] = ("logistic4", "logistic5")
N_PARAMS = {"logistic4": 4, "logistic5": 5}

TOL = 1e-15  # ftol = xtol = gtol: stop on the budget or a true stationary point
PROJECTED_MAX_NFEV = 2000  # per start, 2-D projected problem (cheap evaluations)
FULL_MAX_NFEV = 400  # per start, plain fit of all parameters
POLISH_MAX_NFEV = 10000  # continuing the best plain fit when it ran out of budget
LOGK_LIMIT = 40.0  # |log k| beyond this the logistic is a step or a line over standardised x


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """``(b1 - b2) / (1 + exp(-(x - b3) / b4)) + b2`` (overflow-safe via ``expit``)."""
    x = np.asarray(x, dtype=np.float64)
    return (b1 - b2) * expit((x - b3) / b4) + b2


def logistic5(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    """``b1 * (0.5 - 1 / (1 + exp(b2 * (x - b3)))) + b4 * x + b5`` (overflow-safe)."""
    x = np.asarray(x, dtype=np.float64)
    return b1 * (0.5 - expit(-b2 * (x - b3))) + b4 * x + b5


def _jac4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    s = expit((x - b3) / b4)
    ds = (b1 - b2) * s * (1.0 - s)
    return np.stack([s, 1.0 - s, -ds / b4, -ds * (x - b3) / b4**2], axis=1)


def _jac5(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    s = expit(-b2 * (x - b3))
    ds = b1 * s * (1.0 - s)
    return np.stack([0.5 - s, ds * (x - b3), -ds * b2, x, np.ones_like(x)], axis=1)


_MODELS: dict[str, Callable[..., np.ndarray]] = {"logistic4": logistic4, "logistic5": logistic5}
_JACOBIANS: dict[str, Callable[..., np.ndarray]] = {"logistic4": _jac4, "logistic5": _jac5}


def curve(kind: str, params: list[float] | np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The fitted mapping ``x -> f(x)`` of ``kind`` with ``params`` (for plots and re-use)."""
    model = _MODELS[kind]
    p = [float(v) for v in params]
    return lambda x: model(np.asarray(x, dtype=np.float64), *p)


@dataclass
class FitResult:
    """Outcome of one logistic fit.

    Attributes:
        kind: ``"logistic4"`` or ``"logistic5"``.
        ok: False when the fit was impossible (too few points, constant input) or every start
            failed; the numbers are then NaN and ``message`` says why.
        params: ``[b1, b2, b3, b4(, b5)]`` in the original units (empty when not ``ok``).
        sse: sum of squared residuals ``sum((f(x) - y)^2)``.
        plcc: Pearson correlation of ``f(x)`` with ``y``.
        rmse: ``sqrt(mean((f(x) - y)^2))``.
        start: the starting point and search (``"<start>/full"`` or ``"<start>/projected"``) that
            gave the kept fit.
        n_starts: local searches run; ``n_failed``: those that failed.
        message: empty, or why the fit is not ``ok``.
    """

    kind: str
    ok: bool
    params: list[float] = field(default_factory=list)
    sse: float = math.nan
    plcc: float = math.nan
    rmse: float = math.nan
    start: str = ""
    n_starts: int = 0
    n_failed: int = 0
    message: str = ""

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Map ``x`` with the fitted curve (raises if the fit is not ``ok``)."""
        if not self.ok:
            raise ValueError(f"{self.kind} fit is not available: {self.message}")
        return curve(self.kind, self.params)(x)


# --- variable projection ----------------------------------------------------------------------


class _Projection:
    """Separable least squares on standardised data (``xs`` and ``ys``: mean 0, variance 1).

    For ``theta = (c, log k)`` the logistic column is ``s = expit(k (xs - c))``; the linear columns
    are ``[1]`` (4-parameter model) or ``[1, xs]`` (5-parameter model). Since ``1`` and ``xs`` are
    orthogonal, each evaluation is a few dot products. ``jac`` is the exact Golub-Pereyra
    derivative of the projected residual. The last ``theta`` is cached (the optimiser asks for the
    residual and the Jacobian at the same point).
    """

    def __init__(self, kind: str, xs: np.ndarray, ys: np.ndarray) -> None:
        self.xs, self.ys, self.n = xs, ys, xs.size
        self.with_x = kind == "logistic5"
        self.gamma = float(ys @ xs) / self.n if self.with_x else 0.0
        self._key: tuple[float, float] | None = None

    def _perp_lin(self, v: np.ndarray) -> np.ndarray:
        """``v`` minus its projection onto the linear columns ``1`` (and ``xs``)."""
        v = v - v.mean()
        if self.with_x:
            v = v - (float(v @ self.xs) / self.n) * self.xs
        return v

    def _solve(self, theta: np.ndarray) -> None:
        key = (float(theta[0]), float(theta[1]))
        if key == self._key:
            return
        c, k = key[0], math.exp(min(max(key[1], -LOGK_LIMIT), LOGK_LIMIT))
        s = expit(k * (self.xs - c))
        sp = self._perp_lin(s)
        nrm2 = float(sp @ sp)
        ok = nrm2 > 1e-24 * self.n  # a logistic that is flat (or linear) over the data is dropped
        a = float(sp @ self.ys) / nrm2 if ok else 0.0
        self._key, self.c, self.k, self.s, self.sp, self.nrm2, self.ok, self.a = (
            key,
            c,
            k,
            s,
            sp,
            nrm2,
            ok,
            a,
        )
        self.res = self.gamma * self.xs + a * sp - self.ys

    def residual(self, theta: np.ndarray) -> np.ndarray:
        self._solve(theta)
        return self.res

    def jac(self, theta: np.ndarray) -> np.ndarray:
        self._solve(theta)
        if not self.ok:
            return np.zeros((self.n, 2))
        ds_base = self.s * (1.0 - self.s)
        cols = []
        for ds in (-self.k * ds_base, self.k * (self.xs - self.c) * ds_base):  # d/dc, d/dlog k
            perp = self._perp_lin(ds)
            perp = perp - (float(perp @ self.sp) / self.nrm2) * self.sp
            cols.append(self.a * perp - (float(ds @ self.res) / self.nrm2) * self.sp)
        return np.stack(cols, axis=1)

    def params(self, theta: np.ndarray) -> np.ndarray:
        """The full ``b1..`` parameters (standardised units) at ``theta``."""
        self._solve(theta)
        a, sbar, c, k = self.a, float(self.s.mean()), self.c, self.k
        if not self.with_x:  # ys = a0 + a * s with a0 = -a * sbar (ys has mean 0)
            a0 = -a * sbar
            return np.array([a0 + a, a0, c, 1.0 / k])
        beta = float(self.s @ self.xs) / self.n  # ys = a*(s - 0.5) + a1 * xs + a0
        return np.array([a, k, c, self.gamma - a * beta, a * (0.5 - sbar)])


# --- starts and the fitting loop --------------------------------------------------------------


def _raw5(p: list[float], mx: float, sx: float, my: float, sy: float) -> list[float]:
    """A 5-parameter start given in original units -> standardised units."""
    return [p[0] / sy, p[1] * sx, (p[2] - mx) / sx, p[3] * sx / sy, (p[3] * mx + p[4] - my) / sy]


def _starts(
    kind: str, xs: np.ndarray, ys: np.ndarray, mx: float, sx: float, my: float, sy: float
) -> list[tuple[str, np.ndarray]]:
    """The standard starting points, in standardised units (x and y: mean 0, std 1).

    A raw slope scale ``b4`` becomes ``b4 / sx``; so pyiqa's ``b4 = std x / 4`` is ``0.25`` and
    VIDEVAL's ``b4 = 0.5`` is ``0.5 / sx``. The 5-parameter starts that are given in original
    units (MATLAB, pyiqa) are converted exactly.
    """
    hi, lo = float(ys.max()), float(ys.min())
    med = float(np.median(xs))
    r = float(np.mean(xs * ys))  # Pearson r of the standardised data
    sign = 1.0 if r >= 0 else -1.0
    span = hi - lo
    if kind == "logistic4":
        starts = [
            ("pyiqa", [hi, lo, 0.0, 0.25]),
            ("videval", [hi, lo, 0.0, 0.5 / sx]),
            ("std", [hi, lo, 0.0, 1.0]),
            ("neg_std", [hi, lo, 0.0, -1.0]),
            ("median", [hi, lo, med, 0.25]),
        ]
    else:
        starts = [
            # DBCNN verify_performance.m: raw [10, 0, mean x, 0.1, 0.1]; pyiqa: b3 = mean y.
            ("matlab", _raw5([10.0, 0.0, mx, 0.1, 0.1], mx, sx, my, sy)),
            ("pyiqa", _raw5([10.0, 0.0, my, 0.1, 0.1], mx, sx, my, sy)),
            ("data", [sign * span, 1.0, 0.0, 0.0, 0.0]),
            ("data_slope", [sign * span / 2, 1.0, 0.0, r, 0.0]),
            ("data_steep", [sign * span, 4.0, 0.0, 0.0, 0.0]),
            ("median", [sign * span, 1.0, med, 0.0, 0.0]),
        ]
    return [(name, np.asarray(p, dtype=np.float64)) for name, p in starts]


def _projected_start(kind: str, p0: np.ndarray) -> np.ndarray:
    """``(c, log k)`` of a full start; ``k = 0`` (MATLAB's ``b2 = 0``) becomes a gentle 0.1."""
    k = abs(1.0 / p0[3]) if kind == "logistic4" else abs(p0[1])
    return np.array([p0[2], math.log(k if k > 0 else 0.1)])


def _to_original(
    kind: str, p: np.ndarray, mx: float, sx: float, my: float, sy: float
) -> list[float]:
    """Standardised ``b1..`` -> original units."""
    if kind == "logistic4":
        return [my + sy * p[0], my + sy * p[1], mx + sx * p[2], sx * p[3]]
    return [sy * p[0], p[1] / sx, mx + sx * p[2], sy * p[3] / sx, my + sy * (p[4] - p[3] * mx / sx)]


def _run(
    fun: Callable, jac: Callable, x0: np.ndarray, max_nfev: int
) -> tuple[float, np.ndarray, int]:
    """One Levenberg-Marquardt search (MINPACK ``lmder`` through ``scipy.optimize.leastsq``, the
    engine of ``curve_fit``, which has less per-call overhead than ``least_squares``).

    Returns ``(SSE, params, status)`` with status 0 = converged, 1 = evaluation budget used up;
    raises on failure.
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, _, info, msg, ier = leastsq(
            fun, x0, Dfun=jac, full_output=True, maxfev=max_nfev, ftol=TOL, xtol=TOL, gtol=TOL
        )
    if ier not in range(1, 9):  # 1-4 converged, 5 budget used up, 6-8 "tolerance too small":
        raise RuntimeError(msg)  # no further reduction possible at machine precision (converged)
    sse = float(np.sum(info["fvec"] ** 2))
    if not math.isfinite(sse) or not np.all(np.isfinite(p)):
        raise FloatingPointError("non-finite result")
    return sse, np.atleast_1d(p), int(ier == 5)


def fit_logistic(x: np.ndarray, y: np.ndarray, kind: FitKind = "logistic4") -> FitResult:
    """Fit the 4- or 5-parameter logistic mapping ``x -> y`` (multi-start, keep the lowest SSE).

    Args:
        x: objective scores (predictions), shape ``[n]``.
        y: subjective scores (MOS or DMOS), shape ``[n]``.
        kind: ``"logistic4"`` or ``"logistic5"``.

    Returns:
        A :class:`FitResult`; ``ok=False`` with NaN numbers when ``n`` is smaller than the number
        of parameters, ``x`` or ``y`` is constant or not finite, or every start failed.
    """
    if kind not in N_PARAMS:
        raise ValueError(f"unknown fit {kind!r}; expected one of {', '.join(FIT_KINDS)}")
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    n = x.size
    if n < N_PARAMS[kind]:
        return FitResult(kind, False, message=f"needs at least {N_PARAMS[kind]} points, got {n}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return FitResult(kind, False, message="inputs contain NaN or infinite values")
    mx, sx, my, sy = float(x.mean()), float(x.std()), float(y.mean()), float(y.std())
    if not sx > 0 or not sy > 0:
        which = "predictions are" if not sx > 0 else "MOS values are"
        return FitResult(kind, False, message=f"{which} constant")
    xs, ys = (x - mx) / sx, (y - my) / sy

    model, jacobian = _MODELS[kind], _JACOBIANS[kind]

    def full_res(p: np.ndarray) -> np.ndarray:
        return model(xs, *p) - ys

    def full_jac(p: np.ndarray) -> np.ndarray:
        return jacobian(xs, *p)

    proj = _Projection(kind, xs, ys)
    # candidates: (sse, name, standardised full params, plain-fit status or None)
    found: list[tuple[float, str, np.ndarray, int | None]] = []
    n_runs = n_failed = 0
    errors = (ValueError, ArithmeticError, np.linalg.LinAlgError, RuntimeError)
    for name, p0 in _starts(kind, xs, ys, mx, sx, my, sy):
        for search in ("projected", "full"):
            n_runs += 1
            try:
                if search == "projected":
                    _, theta, _ = _run(
                        proj.residual, proj.jac, _projected_start(kind, p0), PROJECTED_MAX_NFEV
                    )
                    p = proj.params(theta)
                    sse, status = float(np.sum(full_res(p) ** 2)), None
                else:
                    sse, p, status = _run(full_res, full_jac, p0, FULL_MAX_NFEV)
                if not math.isfinite(sse) or not np.all(np.isfinite(p)):
                    raise FloatingPointError("non-finite result")
            except errors:
                n_failed += 1
                continue
            found.append((sse, f"{name}/{search}", p, status))
    if not found:
        return FitResult(
            kind,
            False,
            n_starts=n_runs,
            n_failed=n_failed,
            message=f"all {n_runs} local searches from the standard starts failed",
        )
    sse, name, p, status = min(found, key=lambda t: t[0])
    if status == 1:  # the best one is a plain fit that ran out of its budget: let it finish
        try:
            sse2, p2, _ = _run(full_res, full_jac, p, POLISH_MAX_NFEV)
            if sse2 < sse:
                sse, name, p = sse2, name + "+polish", p2
        except errors:
            pass
    params = _to_original(kind, p, mx, sx, my, sy)
    with np.errstate(all="ignore"):
        fitted = curve(kind, params)(x)
    resid = fitted - y
    sse = float(np.sum(resid**2))
    if not math.isfinite(sse):
        return FitResult(
            kind,
            False,
            n_starts=n_runs,
            n_failed=n_failed,
            message="the best fit does not evaluate to finite values",
        )
    plcc = math.nan
    if np.std(fitted) > 0:
        plcc = float(pearsonr(fitted, y).statistic)
    return FitResult(
        kind,
        True,
        params=params,
        sse=sse,
        plcc=plcc,
        rmse=math.sqrt(sse / n),
        start=name,
        n_starts=n_runs,
        n_failed=n_failed,
    )
