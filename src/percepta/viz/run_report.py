"""The detection run report (``runs/<name>/report.html``): metrics, curves and example images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from percepta.viz.plots import plot_eval, plot_losses, read_metrics
from percepta.viz.report import Report

__all__ = ["detection_report"]

_SUMMARY_KEYS = [
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "oLRP",
    "oLRP_loc",
    "oLRP_fp",
    "oLRP_fn",
]


def detection_report(
    run_dir: str | Path, result: dict[str, Any], examples: Sequence[tuple[str | Path, str]] = ()
) -> Path:
    """Write ``<run_dir>/report.html`` from a demo/eval ``result`` dict and example images."""
    run_dir = Path(run_dir)
    cfg = result.get("config", {})
    model = cfg.get("model", {})
    rep = Report(
        title=f"percepta run report: {cfg.get('name', run_dir.name)}",
        subtitle=(
            f"{model.get('name', '?')} / {model.get('backbone', '?')}, input {model.get('input_size', '?')} px, "
            f"{cfg.get('train', {}).get('max_iters', '?')} iterations; "
            f"training {result.get('train_seconds', '?')} s, total {result.get('total_seconds', '?')} s"
        ),
    )
    metrics = result.get("metrics", {})
    rep.heading("Validation metrics (COCO AP family and optimal LRP)")
    rep.table(["metric", "value"], [(k, metrics[k]) for k in _SUMMARY_KEYS if k in metrics])
    rep.paragraph(
        "AP: higher is better. oLRP: lower is better (1 = nothing found); its Loc/FP/FN parts "
        "show whether errors come from localisation, false positives or misses.",
        "note",
    )

    per_class = result.get("per_class") or []
    if per_class:
        rep.heading("Per class")
        cols = [
            c
            for c in (
                "name",
                "category_id",
                "AP",
                "AP50",
                "oLRP",
                "oLRP_loc",
                "oLRP_fp",
                "oLRP_fn",
                "threshold",
            )
            if c in per_class[0]
        ]
        rep.table(cols, [[row.get(c) for c in cols] for row in per_class])

    rows = read_metrics(run_dir / "metrics.jsonl")
    rep.heading("Training curves")
    rep.image(plot_losses(rows, run_dir / "plots" / "losses.png"), "loss terms (log scale)")
    rep.image(
        plot_eval(rows, ["AP", "AP50"], run_dir / "plots" / "eval.png"),
        "validation AP over training",
    )

    onnx = result.get("onnx") or {}
    if onnx.get("path"):
        rep.heading("ONNX export")
        rep.key_values({k: v for k, v in onnx.items() if not isinstance(v, (dict, list))})
        parity = onnx.get("parity")
        if isinstance(parity, dict):
            rep.key_values(parity)

    if examples:
        rep.heading("Predictions on held-out images (score >= 0.3)")
        rep.gallery(examples)
    return rep.write(run_dir / "report.html")
