"""Training-curve plots: they draw what the rows hold and say when there is nothing to draw."""

from __future__ import annotations

from PIL import Image

from percepta.viz.plots import plot_compare, plot_eval, plot_losses


def _rows(scale: float) -> list[dict]:
    rows = [
        {"iteration": i, "loss_heatmap": scale / i, "total_loss": 2 * scale / i} for i in (1, 2, 3)
    ]
    rows += [{"iteration": i, "eval": {"AP50": 0.1 * i}} for i in (2, 3)]
    return rows


def test_compare_overlays_runs_for_train_and_eval_metrics(tmp_path):
    runs = {"plain": _rows(1.0), "balanced": _rows(3.0)}
    png = plot_compare(runs, "loss_heatmap", tmp_path / "loss.png", log=True)
    assert png is not None and Image.open(png).size[0] > 100
    assert plot_compare(runs, "AP50", tmp_path / "ap.png", from_eval=True) is not None
    assert plot_compare(runs, "missing", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_single_run_plots(tmp_path):
    assert plot_losses(_rows(1.0), tmp_path / "l.png") is not None
    assert plot_eval(_rows(1.0), ["AP50"], tmp_path / "e.png") is not None
    assert plot_eval(_rows(1.0)[:4], ["AP50"], tmp_path / "e1.png") is None  # one point only
