"""Scatter plot of predicted quality against human scores, with fitted mapping curves.

The standard figure of IQA papers: one point per image (objective score on x, MOS/DMOS on y) and
the fitted logistic mapping(s) drawn over the prediction range. Drawn with matplotlib's
object-oriented API on an Agg canvas (no pyplot, no global backend switch, no display needed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["scatter_with_fit"]


def scatter_with_fit(
    pred: Sequence[float] | np.ndarray,
    mos: Sequence[float] | np.ndarray,
    path: str | os.PathLike,
    curves: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    *,
    title: str | None = None,
    xlabel: str = "predicted score",
    ylabel: str = "MOS",
    text: str | None = None,
    dpi: int = 120,
) -> Path:
    """Write a PNG scatter plot of ``pred`` vs. ``mos`` with the given fitted curves.

    Args:
        pred: objective scores (x axis).
        mos: subjective scores (y axis).
        path: output image path (format from the suffix, PNG recommended); parent folders are
            created.
        curves: legend label -> mapping ``x -> f(x)`` (e.g. the fitted 4-/5-parameter logistic),
            drawn over the range of ``pred``.
        title: figure title.
        xlabel, ylabel: axis labels.
        text: optional text box (e.g. "SROCC 0.91  PLCC 0.93") in the upper-left corner.
        dpi: resolution.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.asarray(pred, dtype=np.float64).ravel()
    y = np.asarray(mos, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"pred and mos differ in length: {x.size} vs {y.size}")
    fig = Figure(figsize=(5.5, 4.5), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    alpha = 0.8 if x.size <= 200 else max(0.15, 0.8 * (200 / x.size) ** 0.5)
    ax.scatter(
        x, y, s=14, alpha=alpha, color="tab:blue", edgecolors="none", label=f"images (n={x.size})"
    )
    if curves and x.size:
        lo, hi = float(np.min(x)), float(np.max(x))
        grid = np.linspace(lo, hi, 300) if hi > lo else np.array([lo])
        styles = ["-", "--", ":", "-."]
        colors = ["tab:red", "tab:green", "tab:purple", "tab:orange"]
        for i, (label, fn) in enumerate(curves.items()):
            with np.errstate(all="ignore"):
                ax.plot(grid, fn(grid), styles[i % 4], color=colors[i % 4], lw=1.8, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if text:
        ax.text(
            0.02,
            0.98,
            text,
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"},
        )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
