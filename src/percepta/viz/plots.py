"""Training curves from a run's ``metrics.jsonl`` (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_metrics", "plot_losses", "plot_eval", "plot_compare"]


def read_metrics(path: str | Path) -> list[dict]:
    """Read a ``metrics.jsonl`` file; unreadable lines (a run killed mid-write) are skipped."""
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, ax, title: str, out: str | Path) -> Path:
    """Common finish of the iteration plots: labels, grid, legend, write, close."""
    ax.set_xlabel("iteration")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def plot_losses(rows: list[dict], out: str | Path, title: str = "training losses") -> Path | None:
    """Plot every ``loss*`` series (and the total) against the iteration; ``None`` if no data."""
    train = [r for r in rows if "eval" not in r and "iteration" in r]
    keys = sorted(
        {
            k
            for r in train
            for k, v in r.items()
            if (k.startswith("loss") or k == "total_loss") and isinstance(v, (int, float))
        }
    )
    if not train or not keys:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    for k in keys:
        pts = [(r["iteration"], r[k]) for r in train if isinstance(r.get(k), (int, float))]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=k, lw=1.8 if k == "total_loss" else 1.0)
    ax.set_yscale("log")
    return _save(plt, fig, ax, title, out)


def plot_eval(
    rows: list[dict], keys: list[str], out: str | Path, title: str = "evaluation"
) -> Path | None:
    """Plot evaluation metrics (``keys``) against the iteration; ``None`` if fewer than 2 points."""
    evals = [r for r in rows if isinstance(r.get("eval"), dict)]
    if len(evals) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=110)
    for k in keys:
        pts = [
            (r["iteration"], r["eval"][k])
            for r in evals
            if isinstance(r["eval"].get(k), (int, float))
        ]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", label=k)
    return _save(plt, fig, ax, title, out)


def plot_compare(
    runs: dict[str, list[dict]],
    key: str,
    out: str | Path,
    title: str = "",
    from_eval: bool = False,
    log: bool = False,
) -> Path | None:
    """One metric of several runs on one axis: ``runs`` maps a label to its ``metrics.jsonl``
    rows; ``key`` is a training scalar (e.g. ``total_loss``) or, with ``from_eval``, an
    evaluation metric (e.g. ``AP50``). ``None`` when no run has the metric."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=110)
    drawn = 0
    for label, rows in runs.items():
        if from_eval:
            pts = [
                (r["iteration"], r["eval"][key])
                for r in rows
                if isinstance(r.get("eval"), dict) and isinstance(r["eval"].get(key), (int, float))
            ]
        else:
            pts = [
                (r["iteration"], r[key])
                for r in rows
                if "eval" not in r and isinstance(r.get(key), (int, float))
            ]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if from_eval else None, label=label, lw=1.2)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_ylabel(key)
    if log:
        ax.set_yscale("log")
    return _save(plt, fig, ax, title or key, out)
