"""Quality-model figures: predicted against true scores on held-out images, with the fit.

A thin layer over :func:`percepta.viz.scatter.scatter_with_fit` (matplotlib's object API on an
Agg canvas, no display needed) that takes what the quality evaluator returns: the fitted
4-parameter logistic's parameters (``logistic4_params``) become the drawn curve, SROCC and PLCC
the text box. Used by the quality part of ``percepta demo``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["quality_scatter"]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def quality_scatter(
    pred: Sequence[float] | np.ndarray,
    mos: Sequence[float] | np.ndarray,
    path: str | os.PathLike,
    *,
    logistic4: Sequence[float] = (),
    srocc: float | None = None,
    plcc: float | None = None,
    title: str = "predicted vs. true quality",
    ylabel: str = "true score (MOS)",
) -> Path:
    """Write a PNG scatter plot of ``pred`` (x) against ``mos`` (y).

    Args:
        pred: predicted scores.
        mos: true scores, same length.
        path: output PNG (folders created).
        logistic4: ``b1..b4`` of the fitted 4-parameter logistic (the evaluator's
            ``logistic4_params``); drawn over the prediction range when given.
        srocc, plcc: shown in the text box when given.
        title, ylabel: labels.

    Returns:
        The written path.
    """
    from percepta.quality.logistic import curve
    from percepta.viz.scatter import scatter_with_fit

    curves = {"4-parameter logistic fit": curve("logistic4", list(logistic4))} if logistic4 else {}
    text = f"SROCC {_fmt(srocc)}   PLCC {_fmt(plcc)}" if srocc is not None or plcc else None
    return scatter_with_fit(
        pred, mos, path, curves, title=title, xlabel="predicted score", ylabel=ylabel, text=text
    )
