"""Bar charts of per-class / per-predicate values (e.g. per-predicate R@K of a scene-graph model).

Uses matplotlib's object API with the Agg canvas (no global backend switch, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["per_predicate_bars"]


def per_predicate_bars(
    values: Sequence[float],
    names: Sequence[str],
    counts: Sequence[int] | None = None,
    out_path: str | Path | None = None,
    title: str = "",
    ylabel: str = "recall",
    dpi: int = 120,
) -> Figure:
    """One bar per predicate, most frequent predicate first when ``counts`` are given.

    Args:
        values: one value per predicate (e.g. ``result["per_predicate"]["mR"][100]``).
        names: the predicate names, same order.
        counts: GT occurrences per predicate (e.g. ``result["predicate_counts"]``); bars are
            sorted by it, descending (ties keep the given order), and it is drawn as a line on a
            log-scaled right axis. ``None``: the given order.
        out_path: write a PNG there (folders created).
        title, ylabel: labels; dpi: PNG resolution.

    Returns:
        The matplotlib figure.
    """
    vals = np.asarray(values, dtype=np.float64)
    if len(vals) != len(names) or counts is not None and len(counts) != len(vals):
        raise ValueError("values, names and counts must have the same length")
    order = (
        np.argsort(-np.asarray(counts), kind="stable")
        if counts is not None
        else np.arange(len(vals))
    )
    fig = Figure(figsize=(max(6.0, 0.22 * len(vals) + 1.5), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(vals))
    ax.bar(x, np.nan_to_num(vals[order]), color="#4C72B0", width=0.8, label=ylabel)
    ax.set_xticks(x, [str(names[i]) for i in order], rotation=90, fontsize=7)
    ax.set_xlim(-0.6, len(vals) - 0.4)
    ax.set_ylim(0, max(1.0, float(np.nanmax(vals)) if len(vals) else 1.0))
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if counts is not None and len(vals):
        ax2 = ax.twinx()
        c = np.asarray(counts, dtype=np.float64)[order]
        ax2.plot(x, np.where(c > 0, c, np.nan), color="#DD8452", marker=".", lw=1, label="GT count")
        if (c > 0).any():
            ax2.set_yscale("log")
        ax2.set_ylabel("GT relations (log)", color="#DD8452")
    if title:
        ax.set_title(title, fontsize=10)
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_path, dpi=dpi)
    return fig
