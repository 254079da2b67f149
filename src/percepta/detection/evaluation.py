"""Detection evaluation: COCO AP family (faster-coco-eval) + optimal LRP, per-class tables.

* COCO AP/AR (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l) come from
  ``faster_coco_eval.COCOeval_faster`` (the C++ port of pycocotools; its numbers are identical
  to pycocotools 2.0.x, which ``tests/detection/test_evaluation.py`` checks on the reference
  vectors and on a random case). Per-class AP is AP@[.5:.95], area all, maxDets 100.
* Optimal LRP (oLRP and its Loc / FP / FN components, per-class oLRP and LRP-optimal
  thresholds, oLRP for small / medium / large objects) comes from :mod:`percepta.detection.olrp`
  (our numpy port of the official LRP-Error code, IoU 0.5, maxDets 100).

Ignore regions: ground truths with ``iscrowd=1`` (COCO crowds, and Pascal VOC "difficult"
objects, which :mod:`percepta.data.convert` writes as ``iscrowd=1``) are ignored by both metric
families, as in the COCO and VOC protocols: a detection matched to one (overlap = intersection /
detection area, any number of detections per region, ordinary objects matched first) is neither
a true nor a false positive, and the region is never a miss. ``iscrowd`` is the only flag read
(an ``"ignore"`` field is overwritten by pycocotools and faster-coco-eval, and so here too).
``tests/detection/test_ignore_regions.py`` pins hand-computed AP and oLRP on such a case and
agreement with pycocotools run on the same json.

Undefined values (COCO's ``-1`` for "no GT in this area range", LRP's ``NaN`` for "no true
positive", an empty mean) are ``NaN`` in the returned dicts, ``null`` in JSON and ``-`` in tables.

Entry points: :func:`evaluate_results` (plain function on a GT and a results list),
:class:`DetectionEvaluator` (a :class:`percepta.evaluator.Evaluator`, i.e. a torchmetrics
``Metric``, for training loops and DDP; builder ``coco``), :func:`format_table`, and
:func:`cli_score` behind ``percepta score detection``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.utilities.data import dim_zero_cat

from percepta.data.facts import dataset_meta
from percepta.detection.coco_results import (
    GroundTruth,
    array_to_records,
    load_ground_truth,
    load_results,
    results_to_array,
)
from percepta.detection.olrp import optimal_lrp
from percepta.errors import DataError, NotAvailableError
from percepta.evaluator import Evaluator
from percepta.jsonable import to_jsonable
from percepta.registry import EVALUATORS

__all__ = [
    "AP_KEYS",
    "LRP_KEYS",
    "DetectionEvaluator",
    "CocoEvaluatorOptions",
    "build_coco_evaluator",
    "evaluate_results",
    "format_table",
    "metrics_to_json",
    "cli_score",
]

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
LRP_KEYS = ("oLRP", "oLRP_loc", "oLRP_fp", "oLRP_fn", "oLRP_s", "oLRP_m", "oLRP_l")
CLI_JSON_KEYS = AP_KEYS + ("oLRP", "oLRP_loc", "oLRP_fp", "oLRP_fn", "per_class")
_NAN = float("nan")


def _nan_if_negative(x: float) -> float:
    return _NAN if x is None or x < 0 or math.isnan(x) else float(x)


def _coco_ap(
    gt: GroundTruth, rows: np.ndarray, img_ids: list[int], cat_ids: list[int]
) -> tuple[list[float], dict[int, float], dict[int, float]]:
    """The 12 COCO stats and per-class AP / AP50 via faster-coco-eval (NaN where COCO has -1)."""
    if not img_ids or not cat_ids:
        return [_NAN] * 12, {c: _NAN for c in cat_ids}, {c: _NAN for c in cat_ids}
    from faster_coco_eval import COCOeval_faster

    coco_gt = gt.coco()
    coco_dt = coco_gt.loadRes(array_to_records(rows))
    ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
    ev.params.imgIds = list(img_ids)
    ev.params.catIds = list(cat_ids)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    stats = [_nan_if_negative(float(s)) for s in ev.stats[:12]]
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    ap, ap50 = {}, {}
    for k, cid in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        ap[int(cid)] = float(p[p > -1].mean()) if (p > -1).any() else _NAN
        p50 = p[0]
        ap50[int(cid)] = float(p50[p50 > -1].mean()) if (p50 > -1).any() else _NAN
    return stats, ap, ap50


def evaluate_results(
    gt: dict | str | Path | GroundTruth,
    results: list | str | Path | np.ndarray,
    *,
    img_ids: list[int] | np.ndarray | None = None,
    cat_ids: list[int] | None = None,
    olrp: bool = True,
    class_names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Evaluate COCO results against a COCO ground truth.

    Args:
        gt: COCO annotation dict, json path or a loaded :class:`GroundTruth`.
        results: COCO results list (or json path), or ``[N, 7]`` rows
            ``[image_id, x, y, w, h, score, category_id]``.
        img_ids: images to evaluate (default: every GT image). Images without detections count.
        cat_ids: categories to evaluate (default: every GT category).
        olrp: also compute optimal LRP.
        class_names: category id -> display name (default: the GT's names).

    Returns:
        ``{AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl,
        [oLRP, oLRP_loc, oLRP_fp, oLRP_fn, oLRP_s, oLRP_m, oLRP_l,] per_class}`` where
        ``per_class`` is a list of ``{category_id, name, AP, AP50[, oLRP, oLRP_loc, oLRP_fp,
        oLRP_fn, threshold]}`` sorted by category id.
    """
    gt = load_ground_truth(gt)
    if isinstance(results, np.ndarray):
        rows = np.asarray(results, dtype=np.float64).reshape(-1, 7)
    elif isinstance(results, (str, Path)):
        rows = load_results(results, gt)
    else:
        rows = results_to_array(results, gt)
    imgs = gt.image_ids if img_ids is None else np.unique(np.asarray(img_ids, dtype=np.int64))
    cats = gt.cat_ids if cat_ids is None else sorted({int(c) for c in cat_ids})
    unknown = sorted(set(cats) - set(gt.cat_ids))
    if unknown:
        raise DataError(f"{gt.source}: category ids {unknown[:10]} are not in the ground truth")
    img_list = [int(i) for i in imgs]
    missing = [i for i in img_list if i not in gt.known_images()]
    if missing:
        raise DataError(f"{gt.source}: image ids {missing[:10]} are not images of the ground truth")
    if rows.size:
        in_eval = np.isin(rows[:, 0].astype(np.int64), imgs)
        rows = rows[in_eval]

    stats, ap, ap50 = _coco_ap(gt, rows, img_list, cats)
    metrics: dict[str, Any] = dict(zip(AP_KEYS, stats))
    names = {**gt.cat_names, **(class_names or {})}
    per_class = [
        {"category_id": c, "name": names.get(c, str(c)), "AP": ap[c], "AP50": ap50[c]} for c in cats
    ]
    if olrp:
        res = optimal_lrp(
            gt.ann_image_ids,
            gt.ann_cat_ids,
            gt.ann_boxes,
            gt.ann_areas,
            gt.ann_crowd,
            rows[:, 0].astype(np.int64),
            rows[:, 6].astype(np.int64),
            rows[:, 1:5],
            rows[:, 5],
            img_ids=imgs,
            cat_ids=cats,
        )
        summary = res.summary("all")
        metrics.update(summary)
        for key, area in (("oLRP_s", "small"), ("oLRP_m", "medium"), ("oLRP_l", "large")):
            metrics[key] = res.summary(area)["oLRP"]
        for row, lrp in zip(per_class, res.per_class("all")):
            row.update({k: lrp[k] for k in ("oLRP", "oLRP_loc", "oLRP_fp", "oLRP_fn", "threshold")})
    metrics["per_class"] = per_class
    return metrics


# ------------------------------------------------------------------------------------------------
# presentation


def _fmt(x: Any, width: int = 7) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-".rjust(width)
    return f"{x:.3f}".rjust(width)


def format_table(metrics: Mapping[str, Any], per_class: bool = True) -> str:
    """A readable summary (and, if ``per_class``, one line per category) of ``metrics``.

    Values are fractions with 3 decimals, as pycocotools prints them; ``-`` marks undefined
    values (no GT in that area range, no true positive).
    """
    lines = ["COCO bbox AP/AR (IoU .50:.95 unless named)"]
    for group in (AP_KEYS[:6], AP_KEYS[6:]):
        lines.append("  " + "".join(k.rjust(7) for k in group))
        lines.append("  " + "".join(_fmt(metrics.get(k)) for k in group))
    if "oLRP" in metrics:
        lines.append("Optimal LRP (IoU .50, maxDets 100; lower is better)")
        keys = ("oLRP", "oLRP_loc", "oLRP_fp", "oLRP_fn", "oLRP_s", "oLRP_m", "oLRP_l")
        heads = ("oLRP", "Loc", "FP", "FN", "oLRP_s", "oLRP_m", "oLRP_l")
        lines.append("  " + "".join(h.rjust(7) for h in heads))
        lines.append("  " + "".join(_fmt(metrics.get(k)) for k in keys))
    rows = metrics.get("per_class") or []
    if per_class and rows:
        has_lrp = "oLRP" in rows[0]
        name_w = max(8, min(28, max(len(str(r["name"])) for r in rows)))
        cols = ("AP", "AP50") + (
            ("oLRP", "oLRP_loc", "oLRP_fp", "oLRP_fn", "threshold") if has_lrp else ()
        )
        heads = ("AP", "AP50") + (("oLRP", "Loc", "FP", "FN", "thr") if has_lrp else ())
        lines.append("Per class (area all, maxDets 100)")
        lines.append(
            "  " + "category".ljust(name_w) + "     id" + "".join(h.rjust(7) for h in heads)
        )
        for r in rows:
            no_gt = all(isinstance(r.get(c), float) and math.isnan(r[c]) for c in ("AP", "AP50"))
            line = "  " + str(r["name"])[:name_w].ljust(name_w) + str(r["category_id"]).rjust(7)
            line += "".join(_fmt(r.get(c)) for c in cols)
            lines.append(line + ("  (no GT)" if no_gt else ""))
    return "\n".join(lines)


def metrics_to_json(metrics: dict[str, Any], keys: tuple[str, ...] | None = None) -> str:
    """One JSON object (NaN -> null), optionally restricted to ``keys`` in that order."""
    if keys is not None:
        metrics = {k: metrics[k] for k in keys if k in metrics}
    return json.dumps(to_jsonable(metrics), allow_nan=False)


def cli_score(args: argparse.Namespace) -> int:
    """``percepta score detection --gt GT.json --pred RESULTS.json [--json] [--per-class]``."""
    gt = load_ground_truth(args.gt)
    rows = load_results(args.pred, gt)
    metrics = evaluate_results(gt, rows, olrp=True)
    if args.json:
        print(metrics_to_json(metrics, CLI_JSON_KEYS))
    else:
        print(format_table(metrics, per_class=args.per_class))
    return 0


# ------------------------------------------------------------------------------------------------
# torchmetrics wrapper


class DetectionEvaluator(Evaluator):
    """COCO AP family + optimal LRP as a :class:`percepta.evaluator.Evaluator` (primary metric
    ``AP``, higher is better; ``format_table(metrics)`` prints the summary and per-class table).

    ``update(preds, targets)`` stores the detections (rows ``[image_id, x, y, w, h, score,
    category_id]`` in a "cat"-reduced list state, so DDP gathers them) and the ids of every image
    seen (also "cat"-reduced: images without detections still count). ``compute()`` evaluates
    exactly those images with :func:`evaluate_results`. The ground truth is a plain attribute,
    loaded and validated once.

    Args:
        coco_gt: COCO ground truth (dict or json path).
        cat_ids: contiguous label -> COCO category id (default: sorted GT category ids). Only
            these categories are evaluated.
        iou_type: only ``"bbox"``.
        olrp: also compute optimal LRP.
        class_names: display names aligned with ``cat_ids`` (default: the GT's names).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False
    primary_metric = "AP"

    def __init__(
        self,
        coco_gt: dict | str | Path,
        cat_ids: list[int] | None = None,
        iou_type: str = "bbox",
        olrp: bool = True,
        class_names: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if iou_type != "bbox":
            raise NotAvailableError(f"iou_type {iou_type!r}: only 'bbox' evaluation is available")
        self.gt = load_ground_truth(coco_gt)
        self.cat_ids = [int(c) for c in (cat_ids if cat_ids is not None else self.gt.cat_ids)]
        unknown = sorted(set(self.cat_ids) - set(self.gt.cat_ids))
        if unknown:
            raise DataError(
                f"{self.gt.source}: cat_ids {unknown[:10]} are not categories of the ground truth"
            )
        if class_names is not None and len(class_names) != len(self.cat_ids):
            raise DataError(
                f"class_names has {len(class_names)} entries but cat_ids has {len(self.cat_ids)}"
            )
        self.class_names = (
            {c: str(n) for c, n in zip(self.cat_ids, class_names)} if class_names else None
        )
        self.iou_type = iou_type
        self.olrp = olrp
        self._label_to_cat = torch.tensor(self.cat_ids, dtype=torch.float64)
        self.add_state("detections", default=[], dist_reduce_fx="cat")
        self.add_state("image_ids", default=[], dist_reduce_fx="cat")

    def update(self, preds: list[dict[str, torch.Tensor]], targets: list[dict[str, Any]]) -> None:
        """Add one batch: prediction dicts (``boxes`` XYXY original pixels, ``scores``, ``labels``)
        and the matching target dicts (only ``image_id`` is used)."""
        if len(preds) != len(targets):
            raise ValueError(f"got {len(preds)} predictions for {len(targets)} targets")
        known = self.gt.known_images()
        rows, ids = [], []
        for pred, target in zip(preds, targets):
            image_id = int(torch.as_tensor(target["image_id"]).reshape(-1)[0].item())
            if image_id not in known:
                raise DataError(
                    f"target image_id {image_id} is not an image of the ground truth "
                    f"({self.gt.source})"
                )
            ids.append(image_id)
            boxes = torch.as_tensor(pred["boxes"]).detach().reshape(-1, 4).to("cpu", torch.float64)
            scores = torch.as_tensor(pred["scores"]).detach().reshape(-1).to("cpu", torch.float64)
            labels = torch.as_tensor(pred["labels"]).detach().reshape(-1).to("cpu", torch.int64)
            if not (len(boxes) == len(scores) == len(labels)):
                raise DataError(
                    f"image_id {image_id}: prediction has {len(boxes)} boxes, "
                    f"{len(scores)} scores and {len(labels)} labels"
                )
            if len(labels) and (labels.min() < 0 or labels.max() >= len(self.cat_ids)):
                raise DataError(
                    f"image_id {image_id}: predicted label outside 0..{len(self.cat_ids) - 1}"
                )
            if not (torch.isfinite(boxes).all() and torch.isfinite(scores).all()):
                raise DataError(f"image_id {image_id}: prediction has NaN or infinite boxes/scores")
            wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
            rows.append(
                torch.cat(
                    [
                        torch.full((len(boxes), 1), float(image_id), dtype=torch.float64),
                        boxes[:, :2],
                        wh,
                        scores[:, None],
                        self._label_to_cat[labels][:, None],
                    ],
                    dim=1,
                )
            )
        if rows:
            self.detections.append(torch.cat(rows).to(self.device))
        self.image_ids.append(torch.tensor(ids, dtype=torch.int64, device=self.device))

    @staticmethod
    def _cat(state: Any, width: int | None, dtype: torch.dtype) -> np.ndarray:
        if isinstance(state, list) and not state:
            return np.zeros((0, width) if width else (0,), dtype=np.float64 if width else np.int64)
        return dim_zero_cat(state).to(dtype).cpu().numpy()

    def compute(self) -> dict[str, Any]:
        rows = self._cat(self.detections, 7, torch.float64).reshape(-1, 7)
        img_ids = np.unique(self._cat(self.image_ids, None, torch.int64))
        return evaluate_results(
            self.gt,
            rows,
            img_ids=img_ids,
            cat_ids=self.cat_ids,
            olrp=self.olrp,
            class_names=self.class_names,
        )

    def format_table(self, metrics: Mapping[str, Any]) -> str:
        """The AP / oLRP summary and the per-class table of a :meth:`compute` result."""
        return format_table(metrics, per_class=True)


@dataclass
class CocoEvaluatorOptions:
    """Options of the ``coco`` evaluator."""

    name: str = "coco"
    olrp: bool = True  # also compute optimal LRP (oLRP, Loc, FP, FN)


@EVALUATORS.register("coco", options=CocoEvaluatorOptions)
def build_coco_evaluator(options: CocoEvaluatorOptions | None, dataset: Any) -> DetectionEvaluator:
    """COCO AP/AR (faster-coco-eval) + optimal LRP, per-class tables.

    ``options=None`` means the defaults. The ground truth is ``dataset.coco_gt``; the label ->
    category id map and the display names come from ``dataset.meta`` (``category_ids``,
    ``class_names``; without them, the ground truth's sorted categories and names).
    """
    options = options if options is not None else CocoEvaluatorOptions()
    coco_gt = getattr(dataset, "coco_gt", None)
    if coco_gt is None:
        what = "no dataset" if dataset is None else f"dataset {type(dataset).__name__}"
        raise DataError(
            f"evaluator 'coco' needs a COCO-format validation dataset (one with "
            f"'coco_gt'), got {what}; set data.val to a coco dataset"
        )
    meta = dataset_meta(dataset)
    cat_ids = meta.get("category_ids") or None
    names = meta.get("class_names") or None
    return DetectionEvaluator(
        coco_gt,
        cat_ids=list(cat_ids) if cat_ids else None,
        olrp=options.olrp,
        class_names=list(names) if names else None,
    )
