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
    run_dir: str | Path,
    result: dict[str, Any],
    examples: Sequence[tuple[str | Path, str]] = (),
    scene_graph: dict[str, Any] | None = None,
    quality: dict[str, Any] | None = None,
) -> Path:
    """Write ``<run_dir>/report.html`` from a demo/eval ``result`` dict and example images
    (and the demo's scene-graph part: :func:`percepta.demo_scene_graph.scene_graph_part`, and
    its image-quality part: :func:`percepta.demo_quality.quality_part`)."""
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
    if scene_graph:
        _scene_graph_section(rep, scene_graph)
    if quality:
        _quality_section(rep, quality)
    return rep.write(run_dir / "report.html")


_SGG_KEYS = ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100", "zR@50", "zR@100")


def _scene_graph_section(rep: Report, sgg: dict[str, Any]) -> None:
    rep.heading("Scene graphs (built-in relation data, test split; the detector above, frozen)")
    rows = [
        [name, r["mode"], r["predictor"], *[r["metrics"].get(k) for k in _SGG_KEYS], r["seconds"]]
        for name, r in sgg.get("runs", {}).items()
    ]
    rep.table(["run", "mode", "predictor", *_SGG_KEYS, "train s"], rows)
    rep.paragraph(
        "R@K: share of ground-truth relations among the top K triplets (graph constraint); "
        "mR@K: its mean over predicates (the long tail counts as much as the head); zR@K: "
        "recall of triplets never seen in training. FREQ predicts from the class pair alone.",
        "note",
    )
    rep.image(sgg.get("plot"), "MOTIFS PredCls: recall per predicate")
    if sgg.get("examples"):
        rep.gallery(sgg["examples"])


_QUALITY_KEYS = ("srocc", "krocc", "plcc", "rmse", "plcc_logistic4", "rmse_logistic4")


def _quality_section(rep: Report, quality: dict[str, Any]) -> None:
    data = quality.get("data", {})
    rep.heading("Image quality (built-in full-reference distortion data, held-out references)")
    rows = [
        [
            name,
            f"{r.get('model', '?')} / {r.get('backbone', '?')}",
            r.get("iterations"),
            *[r["metrics"].get(k) for k in _QUALITY_KEYS],
            r["metrics"].get("n"),
            r.get("seconds"),
        ]
        for name, r in quality.get("runs", {}).items()
    ]
    labels = ["SROCC", "KROCC", "PLCC", "RMSE", "PLCC (logistic4)", "RMSE (logistic4)"]
    rep.table(["run", "model", "iterations", *labels, "images", "train + eval s"], rows)
    rep.paragraph(
        f"{data.get('references', '?')} reference scenes x 10 distortions x 5 levels "
        f"({data.get('images', '?')} images, {data.get('image_size', '?')} px); scored on the "
        f"{data.get('held_out_images', '?')} images of the held-out references (fold "
        f"{data.get('fold', '?')} of {data.get('num_folds', '?')}: "
        f"{', '.join(data.get('held_out_references', []))}), which training never saw. "
        "SROCC / KROCC: rank agreement with the true scores; PLCC / RMSE: of the raw "
        "predictions, and after the fitted 4-parameter logistic. Higher is better except RMSE.",
        "note",
    )
    rep.image(quality.get("plot"), "predicted vs. true score on the held-out images")
    if quality.get("examples"):
        rep.paragraph(
            "The quality token's attention (IQT decoder cross-attention, averaged over heads and "
            "test crops) below each distorted image.",
            "note",
        )
        rep.gallery(quality["examples"])
