"""The Visual Relationship Detection evaluation protocol (Lu et al., ECCV 2016), and its evaluator.

The numbers are those of the authors' MATLAB functions ``top_recall_Relationship.m``,
``top_recall_Phrase.m`` and their ``zeroShot_`` variants
(Prof-Lu-Cewu/Visual-Relationship-Detection @ 3f4f51b0). This is a re-implementation from their
semantics; no code is copied. It reproduces the authors' own numbers on their released
predictions for the first 200 test images exactly: per-image hit counts, totals and recalls
(``tests/fixtures/vrd_eval``). The rules:

1. **Per-image top-K.** Each image's predictions are sorted by confidence, descending, with a
   *stable* sort (tied confidences keep their input order, as MATLAB's ``sort(..., 'descend')``
   does), and the first K are kept (all of them if there are fewer). The cut is per image. There
   is no per-pair limit: every row given competes.
2. **Greedy one-to-one matching in that order.** For each kept prediction the image's GT rows are
   scanned in GT order. A row can match only when its triplet (subject, predicate, object) is
   exactly the prediction's and it is not matched yet.
3. **Inclusive-pixel IoU** (``box_convention="vrd"``): width = ``x2 - x1 + 1``, and a GT row is
   a candidate only if the intersection width and height are both > 0. Relationship (and
   predicate) detection use ``min(IoU_subject, IoU_object)``; phrase detection uses the IoU of
   the union boxes ``[min x1, min y1, max x2, max y2]`` of subject and object.
4. **The match** is the candidate with the largest IoU, given IoU >= 0.5. Ties go to the lowest
   GT index (the official ``ov > ovmax`` is strict). A prediction whose best row is taken can
   still fall back to a lower-IoU unmatched one. Without a candidate it is a false positive.
5. **Recall** = sum of true positives over images / sum of GT rows over images (not a mean of
   per-image recalls). Images without GT count 0 in both sums. Duplicate GT rows each count and
   each need their own prediction.
6. **Zero-shot** restricts only the GT, to the zero-shot rows. All top-K predictions still
   compete: one matching a seen triplet is just a false positive.
7. **Predicate detection** is relationship matching on predictions made on the GT boxes (one
   per GT pair, in the authors' files).

Where this differs from running the official code, on purpose:

* An image with no prediction, or no prediction at all in the whole set, gives 0 hits; the
  official code crashes in the second case (``recall(end)`` of an empty vector). With no GT row
  anywhere the recall is NaN (0 / 0).
* **The denominator** (``gt_count``). The official code sums ``length(gt_tuple_label{i})``
  over images, and MATLAB's ``length`` of an ``n x 3`` matrix is ``max(n, 3)``: an image with
  1 or 2 GT rows (after the zero-shot filter, for zero-shot) counts 3. ``gt_count="rows"``
  (default) counts the rows, which is what the reference values in ``tests/fixtures/vrd_eval``
  use (723 / 1525 on 200 images); ``gt_count="matlab_length"`` keeps the official quirk, which
  is what reproduces the paper's table from the authors' released result files on all 1,000
  test images (predicate 47.87, phrase 16.17 / 17.03, relationship 13.86 / 14.70; zero-shot
  8.45, 3.36 / 3.75, 3.13 / 3.52 at R@50 / R@100). The hits are the same under both rules.
* ``box_convention="xyxy"`` (continuous coordinates, width = ``x2 - x1``) is offered for boxes
  that are not integer pixels; the official code has only the inclusive rule.

IoU is computed here by hand, in float64 (MATLAB's double), with the official operation order,
rather than with ``torchvision.ops.box_iou`` (no +1 rule, float32) or
:func:`percepta.scene_graph.matching.box_iou` (float32): exact ties and the 0.5 threshold must
be decided as in MATLAB. The greedy matching stays a loop over the predictions that have at
least one candidate (it is sequential by definition); everything else is vectorised.

**The evaluator.** :class:`VRDEvaluator` is a :class:`percepta.evaluator.Evaluator` (a
``torchmetrics.Metric``) for ``SceneGraphEvaluator``'s inputs: percepta's scene-graph dicts.
Each ``rel_pairs`` row becomes ``predicates_per_pair`` triplets (its best non-background
predicates), scored ``subject score x object score x predicate score`` (the relation heads'
triplet score; PredCls uses the GT boxes and labels with object scores 1, so the score is the
predicate score). Tasks by mode: PredCls -> ``predicate``; SGCls and SGDet -> ``phrase`` and
``relationship``. Result keys (``compute()``):

* ``"<task>_R@<K>"`` and, with zero-shot triplets, ``"<task>_zeroshot_R@<K>"``: floats;
* ``"tp"``: ``{"<task>[_zeroshot]": {K: int}}``; ``"num_gt"``, ``"num_gt_zeroshot"``: GT rows;
  ``"denominators"``: ``{"all", "zeroshot"}``, the recall denominators (``gt_count``);
* ``"per_image"``: ``{"image_ids", "num_gt", "num_gt_zeroshot", "tp": {"<task>...": {K: array}}}``
  (numpy arrays, update order);
* ``"images"``: ``{"seen", "without_gt", "without_prediction"}``.

**Primary metric**: ``"R@K"`` names the mode's main task (``predicate_R@K`` in PredCls,
``relationship_R@K`` otherwise); the default ``"R@100"`` is therefore relationship detection
R@100, the VRD paper's headline number (and predicate R@100 in PredCls). Any result key may be
given instead.

**Labels.** Only consistency matters: triplets are compared exactly. In the dict path, objects
are percepta's labels and predicates 1..P (the ``rel_scores`` columns); the zero-shot triplets
are given as for ``SceneGraphEvaluator``, in *(subject, object, predicate)* order. The
functions of this module and the triplet files (:mod:`percepta.scene_graph.triplet_io`) use
VRD's *(subject, predicate, object)* order.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from percepta.errors import DataError
from percepta.evaluator import Evaluator
from percepta.scene_graph.matching import MODES, ImageData, ZeroShotSet, as_array, check_boxes
from percepta.scene_graph.results_io import image_from_dicts, load_zero_shot_triplets

__all__ = [
    "TASKS",
    "BOX_CONVENTIONS",
    "GT_COUNTS",
    "gt_denominator",
    "TripletImage",
    "as_triplet_image",
    "image_true_positives",
    "vrd_recall",
    "task_keys",
    "format_vrd_table",
    "VRDEvaluator",
]

TASKS = ("predicate", "phrase", "relationship")
BOX_CONVENTIONS = ("vrd", "vg", "xyxy")  # "vg" = "vrd": the same inclusive-pixel rule
GT_COUNTS = ("rows", "matlab_length")  # the recall denominator, see the module docstring
MODE_TASKS = {
    "predcls": ("predicate",),
    "sgcls": ("phrase", "relationship"),
    "sgdet": ("phrase", "relationship"),
}


@dataclass
class TripletImage:
    """One image's triplets as validated numpy arrays (VRD order).

    ``labels`` ``[n, 3]`` int64 (subject, predicate, object); ``sub_boxes``/``obj_boxes``
    ``[n, 4]`` float64 ``[x1, y1, x2, y2]``; ``confs`` ``[n]`` float64 (predictions; ``None`` for
    GT); ``zeroshot`` ``[n]`` bool (GT rows of the zero-shot set; ``None``: not given).
    """

    labels: np.ndarray
    sub_boxes: np.ndarray
    obj_boxes: np.ndarray
    confs: np.ndarray | None = None
    zeroshot: np.ndarray | None = None
    image_id: Any = None

    def __len__(self) -> int:
        return len(self.labels)


def _check_convention(box_convention: str) -> bool:
    """``True`` for the inclusive-pixel (+1) rule; raises ``ValueError`` on an unknown name."""
    if box_convention not in BOX_CONVENTIONS:
        raise ValueError(
            f"box_convention must be one of {', '.join(BOX_CONVENTIONS)}, got {box_convention!r}"
        )
    return box_convention != "xyxy"


def as_triplet_image(
    x: Mapping[str, Any] | TripletImage, *, image_id: Any = None, prediction: bool = False
) -> TripletImage:
    """Validate one image (a :class:`TripletImage` or a mapping with ``labels``, ``sub_boxes``,
    ``obj_boxes``, ``confs`` for predictions and an optional ``zeroshot``, as in
    ``tests/fixtures/vrd_eval/first200.json``). Raises :class:`DataError` naming the image."""
    if isinstance(x, TripletImage):
        values: Mapping[str, Any] = vars(x)
        image_id = x.image_id if image_id is None else image_id
    elif isinstance(x, Mapping):
        values = x
    else:
        raise DataError(f"image {image_id!r}: expected a mapping of arrays, got {type(x).__name__}")

    def get(name: str, dtype: Any, cols: int | None) -> np.ndarray:
        v = values.get(name)
        if v is None:
            raise DataError(f"image {image_id!r}: missing {name!r}")
        return as_array(v, dtype, cols, image_id, name)

    labels = get("labels", np.int64, 3)
    sub, obj = get("sub_boxes", np.float64, 4), get("obj_boxes", np.float64, 4)
    check_boxes(sub, image_id, "sub_boxes")
    check_boxes(obj, image_id, "obj_boxes")
    for name, arr in (("sub_boxes", sub), ("obj_boxes", obj)):
        if len(arr) != len(labels):
            raise DataError(
                f"image {image_id!r}: {name!r} has {len(arr)} rows but 'labels' has {len(labels)}"
            )
    confs = zeroshot = None
    if prediction:
        confs = get("confs", np.float64, None)
        if len(confs) != len(labels):
            raise DataError(
                f"image {image_id!r}: 'confs' has {len(confs)} entries but 'labels' has "
                f"{len(labels)}"
            )
        if not np.isfinite(confs).all():
            raise DataError(f"image {image_id!r}: 'confs' contains NaN or infinite values")
    elif values.get("zeroshot") is not None:
        zeroshot = as_array(values["zeroshot"], np.bool_, None, image_id, "zeroshot")
        if len(zeroshot) != len(labels):
            raise DataError(
                f"image {image_id!r}: 'zeroshot' has {len(zeroshot)} entries but 'labels' has "
                f"{len(labels)}"
            )
    return TripletImage(labels, sub, obj, confs, zeroshot, image_id)


def gt_denominator(per_image_num_gt: Any, gt_count: str = "rows") -> int:
    """The recall denominator from per-image GT row counts: their sum (``"rows"``) or the
    official ``sum(length(...))`` (``"matlab_length"``: 1 or 2 rows count 3, 0 counts 0)."""
    n = np.asarray(per_image_num_gt, dtype=np.int64)
    if gt_count == "rows":
        return int(n.sum())
    if gt_count == "matlab_length":
        return int(np.where(n > 0, np.maximum(n, 3), 0).sum())
    raise ValueError(f"gt_count must be one of {', '.join(GT_COUNTS)}, got {gt_count!r}")


def _union(sub: np.ndarray, obj: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [np.minimum(sub[:, :2], obj[:, :2]), np.maximum(sub[:, 2:], obj[:, 2:])], 1
    )


def _overlap(a: np.ndarray, b: np.ndarray, plus_one: bool) -> np.ndarray:
    """``[len(a), len(b)]`` float64 IoU, -inf where the intersection is empty (width or height
    <= 0, the official candidate test), in the official operation order."""
    one = 1.0 if plus_one else 0.0
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + one
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + one
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    with np.errstate(invalid="ignore", divide="ignore"):
        ov = inter / (area_a[:, None] + area_b[None, :] - inter)
    return np.where((iw > 0) & (ih > 0), ov, -np.inf)


def image_true_positives(
    gt: TripletImage,
    pred: TripletImage | None,
    *,
    task: str = "relationship",
    max_k: int = 100,
    iou_threshold: float = 0.5,
    plus_one: bool = True,
    gt_rows: np.ndarray | None = None,
) -> np.ndarray:
    """Rules 1-4 for one image: ``[min(len(pred), max_k)]`` booleans, whether each kept
    prediction, in ranked order, is a true positive. Because the top-K of a stable sort are a
    prefix of the top-``max_k`` and the matching is sequential, the hits at any K <= ``max_k``
    are ``result[:K].sum()``.

    ``gt_rows``: a boolean mask restricting the GT (zero-shot: ``gt.zeroshot``); ``None``: all.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if pred is None or not len(pred):
        return np.zeros(0, dtype=bool)
    assert pred.confs is not None
    order = np.argsort(-pred.confs, kind="stable")[:max_k]
    tp = np.zeros(len(order), dtype=bool)
    keep = np.ones(len(gt), dtype=bool) if gt_rows is None else np.asarray(gt_rows, dtype=bool)
    g_lab, g_sub, g_obj = gt.labels[keep], gt.sub_boxes[keep], gt.obj_boxes[keep]
    if not len(g_lab):
        return tp
    p_lab, p_sub, p_obj = pred.labels[order], pred.sub_boxes[order], pred.obj_boxes[order]
    same = (p_lab[:, None, :] == g_lab[None, :, :]).all(2)
    if task == "phrase":
        ov = _overlap(_union(p_sub, p_obj), _union(g_sub, g_obj), plus_one)
    else:
        ov = np.minimum(_overlap(p_sub, g_sub, plus_one), _overlap(p_obj, g_obj, plus_one))
    score = np.where(same & (ov >= iou_threshold), ov, -np.inf)
    detected = np.zeros(len(g_lab), dtype=bool)
    for j in np.flatnonzero((score > -np.inf).any(1)):  # rows without any candidate are fps
        row = np.where(detected, -np.inf, score[j])
        g = int(row.argmax())  # first maximum: the lowest GT index wins a tie
        if row[g] > -np.inf:
            tp[j] = detected[g] = True
            if detected.all():
                break
    return tp


def _zero_shot_rows(gt: TripletImage, zs_set: ZeroShotSet | None) -> np.ndarray:
    """The GT rows of the zero-shot set: members of ``zs_set``, else the GT's own flags."""
    if zs_set is not None:
        return zs_set.contains(gt.labels)
    if gt.zeroshot is None and not len(gt):
        return np.zeros(0, dtype=bool)
    if gt.zeroshot is None:
        raise DataError(
            f"image {gt.image_id!r}: zero_shot=True needs the GT 'zeroshot' flags (or pass the "
            "zero-shot triplets)"
        )
    return gt.zeroshot


def vrd_recall(
    gt_images: Sequence[Mapping[str, Any] | TripletImage],
    pred_images: Sequence[Mapping[str, Any] | TripletImage | None],
    ks: Sequence[int] = (50, 100),
    task: str = "relationship",
    zero_shot: Any = False,
    *,
    box_convention: str = "vrd",
    iou_threshold: float = 0.5,
    gt_count: str = "rows",
) -> dict[str, Any]:
    """Recall@K of one VRD task over a set of images (rules 1-7 of the module docstring).

    Args:
        gt_images: per image, the GT rows (see :func:`as_triplet_image`; ``zeroshot`` flags
            needed for ``zero_shot=True``).
        pred_images: per image (aligned with ``gt_images``), the predictions with ``confs``;
            ``None`` or empty lists: no prediction (0 hits).
        ks: the K values.
        task: ``"relationship"``, ``"phrase"`` or ``"predicate"`` (relationship matching, on
            predicate-detection predictions).
        zero_shot: ``False``; ``True`` (restrict the GT to its ``zeroshot`` rows); or an array of
            ``[Z, 3]`` (subject, predicate, object) triplets (restrict to the GT rows whose
            triplet is in it).
        box_convention: ``"vrd"`` (inclusive pixels, official; ``"vg"`` is the same rule) or
            ``"xyxy"`` (continuous, width = x2 - x1).
        iou_threshold: official 0.5 (inclusive).
        gt_count: the recall denominator: ``"rows"`` (GT rows, the reference values) or
            ``"matlab_length"`` (the official code's count; see the module docstring).

    Returns:
        ``{"task", "zero_shot", "ks", "recall": {K: float}, "tp": {K: int}, "num_gt": int (GT
        rows), "denominator": int, "per_image_tp": {K: int array}, "per_image_num_gt": int
        array}``; recall = tp / denominator, NaN when the denominator is 0.
    """
    if len(gt_images) != len(pred_images):
        raise DataError(
            f"vrd_recall: {len(gt_images)} GT images but {len(pred_images)} prediction images"
        )
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    plus_one = _check_convention(box_convention)
    gt_denominator([], gt_count)  # checks the name
    kk = [int(k) for k in ks]
    if not kk or min(kk) < 1:
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    use_zs = zero_shot is not False and zero_shot is not None
    zs_set = None
    if use_zs and zero_shot is not True:
        zs_set = ZeroShotSet(as_array(zero_shot, np.int64, 3, None, "zero_shot"))
    max_k = max(kk)
    tps = np.zeros((len(gt_images), len(kk)), dtype=np.int64)
    num_gt = np.zeros(len(gt_images), dtype=np.int64)
    for i, (g, p) in enumerate(zip(gt_images, pred_images)):
        gt = as_triplet_image(g, image_id=i)
        pred = None
        if p is not None:
            pred = as_triplet_image(p, image_id=i, prediction=True)
        rows = _zero_shot_rows(gt, zs_set) if use_zs else None
        num_gt[i] = len(gt) if rows is None else int(rows.sum())
        hit = image_true_positives(
            gt,
            pred,
            task=task,
            max_k=max_k,
            iou_threshold=iou_threshold,
            plus_one=plus_one,
            gt_rows=rows,
        )
        cum = np.concatenate([[0], np.cumsum(hit)])
        tps[i] = cum[np.minimum(kk, len(hit))]
    total = gt_denominator(num_gt, gt_count)
    tp_total = tps.sum(0)
    return {
        "task": task,
        "zero_shot": use_zs,
        "ks": kk,
        "recall": {k: (int(t) / total if total else float("nan")) for k, t in zip(kk, tp_total)},
        "tp": {k: int(t) for k, t in zip(kk, tp_total)},
        "num_gt": int(num_gt.sum()),
        "denominator": total,
        "per_image_tp": {k: tps[:, j].copy() for j, k in enumerate(kk)},
        "per_image_num_gt": num_gt,
    }


def task_keys(tasks: Sequence[str], zero_shot: bool) -> list[str]:
    """The result names of ``tasks``: ``"relationship"``, then ``"relationship_zeroshot"``..."""
    return [f"{t}{s}" for t in tasks for s in (("", "_zeroshot") if zero_shot else ("",))]


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.2f}"


def format_vrd_table(result: Mapping[str, Any], *, tasks: Sequence[str], ks: Sequence[int]) -> str:
    """A ``compute()``-style result as a table: one row per task (zero-shot rows when present),
    R@K in percent with 2 decimals (the official scripts print ``%0.2f`` of 100 x recall)."""
    zs = f"{tasks[0]}_zeroshot_R@{ks[0]}" in result
    n_img = result.get("images", {}).get("seen", 0)
    head = f"VRD evaluation (Lu et al., ECCV 2016): {n_img} images, {result['num_gt']} GT relationships"
    if zs:
        head += f" ({result['num_gt_zeroshot']} zero-shot)"
    den = result.get("denominators", {})
    if den and (
        den.get("all") != result["num_gt"]
        or zs
        and den.get("zeroshot") != result["num_gt_zeroshot"]
    ):
        head += "; recall denominators " + " / ".join(str(v) for v in den.values())
        head += " (official MATLAB length() count)"
    lines = [head, f"{'task':<24}" + "".join(f"{f'R@{k}':>9}" for k in ks)]
    for key in task_keys(tasks, zs):
        name = key.replace("_zeroshot", " zero-shot")
        lines.append(f"{name:<24}" + "".join(f"{_pct(result[f'{key}_R@{k}']):>9}" for k in ks))
    return "\n".join(lines) + "\n"


class VRDEvaluator(Evaluator):
    """Predicate / phrase / relationship detection R@K with the official VRD semantics.

    Args:
        mode: ``"predcls"`` (task ``predicate``; GT boxes, labels and object scores 1 replace the
            predicted ones), ``"sgcls"`` or ``"sgdet"`` (tasks ``phrase`` and ``relationship``).
        k: the K values (official 50 and 100).
        num_predicates: P; ``rel_scores`` has P + 1 columns, column 0 the background.
        zero_shot_triplets: ``[Z, 3]`` (subject class, object class, predicate), or a file, as
            for ``SceneGraphEvaluator``; adds the ``<task>_zeroshot_R@K`` results.
        zero_shot: compute the zero-shot results (default: when ``zero_shot_triplets`` is given;
            ``True`` without triplets uses the ``zeroshot`` flags of the GT in
            :meth:`update_triplets`).
        iou_threshold: official 0.5.
        box_convention: ``"vrd"`` (inclusive pixels, official; ``"vg"`` is the same rule) or
            ``"xyxy"``.
        predicates_per_pair: triplets made from each ``rel_pairs`` row (its best non-background
            predicates; 1 = one predicate per pair).
        gt_count: the recall denominator, ``"rows"`` or ``"matlab_length"`` (module docstring).
        primary_metric: a result key, or ``"R@K"`` for the mode's main task (module docstring).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        mode: str = "sgdet",
        k: Sequence[int] = (50, 100),
        num_predicates: int = 70,
        zero_shot_triplets: Any = None,
        zero_shot: bool | None = None,
        iou_threshold: float = 0.5,
        box_convention: str = "vrd",
        predicates_per_pair: int = 1,
        gt_count: str = "rows",
        primary_metric: str = "R@100",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.plus_one = _check_convention(box_convention)
        gt_denominator([], gt_count)  # checks the name
        self.gt_count = gt_count
        ks = tuple(int(x) for x in k)
        if not ks or min(ks) < 1 or int(num_predicates) < 1 or int(predicates_per_pair) < 1:
            raise ValueError(
                "k must be positive integers and num_predicates, predicates_per_pair >= 1 "
                f"(got {list(k)}, {num_predicates}, {predicates_per_pair})"
            )
        self.mode, self.ks, self.num_predicates = mode, ks, int(num_predicates)
        self.predicates_per_pair = min(int(predicates_per_pair), self.num_predicates)
        self.iou_threshold, self.box_convention = float(iou_threshold), box_convention
        self.tasks = MODE_TASKS[mode]
        zs = load_zero_shot_triplets(zero_shot_triplets)
        self.zero_shot_set = ZeroShotSet(zs) if zs is not None else None
        self.zero_shot = zs is not None if zero_shot is None else bool(zero_shot)
        self.keys = task_keys(self.tasks, self.zero_shot)
        metric_keys = [f"{key}_R@{kk}" for key in self.keys for kk in ks]
        main = f"{self.tasks[-1]}_{primary_metric}" if primary_metric.startswith("R@") else None
        primary = main if main in metric_keys else primary_metric
        if primary not in metric_keys:
            raise ValueError(
                f"primary_metric {primary_metric!r} is not computed in mode {mode!r} with "
                f"k={list(ks)}; choose R@K or one of {', '.join(metric_keys)}"
            )
        self.primary_metric = primary  # type: ignore[misc]  # per instance: an option
        # per image: id, #GT, #zero-shot GT, #predictions, then hits per (task key, K)
        self._row_width = 4 + len(self.keys) * len(ks)
        self.add_state("image_rows", default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)
        self._seen: set[int] = set()

    # -- conversion -----------------------------------------------------------------------------
    def _triplets(self, img: ImageData) -> tuple[TripletImage, TripletImage | None]:
        """GT and predicted triplets (VRD order) of one validated percepta image."""
        gl, rels = img.gt_labels, img.gt_rels
        gt = TripletImage(
            np.stack([gl[rels[:, 0]], rels[:, 2], gl[rels[:, 1]]], 1).astype(np.int64),
            img.gt_boxes[rels[:, 0]].astype(np.float64),
            img.gt_boxes[rels[:, 1]].astype(np.float64),
            image_id=img.image_id,
        )
        if self.zero_shot_set is not None:
            gt.zeroshot = self.zero_shot_set.contains(gt.labels[:, [0, 2, 1]])
        if img.rel_pairs is None or img.rel_scores is None:
            return gt, None
        if self.mode == "predcls":
            boxes, labels = img.gt_boxes, img.gt_labels
            obj_scores = np.ones(len(labels))
        else:
            assert img.pred_boxes is not None and img.pred_labels is not None
            boxes, labels = img.pred_boxes, img.pred_labels
            obj_scores = np.asarray(img.pred_scores, dtype=np.float64)
        pairs, scores = img.rel_pairs, img.rel_scores[:, 1:].astype(np.float64)
        n = self.predicates_per_pair
        # best n predicates per row, best first; ties: lower predicate first (stable)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        rows = np.repeat(np.arange(len(pairs)), n)
        pred_col = top.reshape(-1)
        s, o = pairs[rows, 0], pairs[rows, 1]
        confs = obj_scores[s] * obj_scores[o] * scores[rows, pred_col]
        pred = TripletImage(
            np.stack([labels[s], pred_col + 1, labels[o]], 1).astype(np.int64),
            boxes[s].astype(np.float64),
            boxes[o].astype(np.float64),
            confs=confs,
            image_id=img.image_id,
        )
        return gt, pred

    # -- accumulation ---------------------------------------------------------------------------
    def update(
        self,
        preds: Any = None,
        targets: Any = None,
        *,
        image_ids: Sequence[int] | None = None,
        gt_triplets: Sequence[TripletImage | Mapping[str, Any]] | None = None,
        pred_triplets: Sequence[TripletImage | Mapping[str, Any] | None] | None = None,
    ) -> None:
        """One batch of percepta scene-graph dicts (as ``SceneGraphEvaluator.update``; a pred of
        ``None`` means the image has no prediction), or of triplet images given by keyword (see
        :meth:`update_triplets`)."""
        if gt_triplets is None:
            if isinstance(targets, Mapping):
                preds, targets = [preds], [targets]
            if targets is None or preds is None or len(preds) != len(targets):
                raise DataError("update(preds, targets) needs two lists of the same length")
            images = [
                image_from_dicts(p, t, mode=self.mode, num_predicates=self.num_predicates)
                for p, t in zip(preds, targets)
            ]
            pairs = [self._triplets(img) for img in images]
            image_ids = [img.image_id for img in images]
            gt_triplets, pred_triplets = [g for g, _ in pairs], [p for _, p in pairs]
        if image_ids is None or pred_triplets is None:
            raise DataError("update(gt_triplets=...) also needs image_ids and pred_triplets")
        self._add(image_ids, gt_triplets, pred_triplets)

    def update_triplets(
        self,
        image_ids: Sequence[int],
        gt_images: Sequence[TripletImage | Mapping[str, Any]],
        pred_images: Sequence[TripletImage | Mapping[str, Any] | None],
    ) -> None:
        """Add images given as triplets (VRD order; see :func:`as_triplet_image`; integer ids);
        with zero-shot results on, each GT needs its ``zeroshot`` flags or the evaluator's
        triplets. Goes through :meth:`update` (torchmetrics' bookkeeping)."""
        self.update(image_ids=image_ids, gt_triplets=gt_images, pred_triplets=pred_images)

    def _add(
        self,
        image_ids: Sequence[int],
        gt_images: Sequence[TripletImage | Mapping[str, Any]],
        pred_images: Sequence[TripletImage | Mapping[str, Any] | None],
    ) -> None:
        if not len(image_ids) == len(gt_images) == len(pred_images):
            raise DataError("update needs as many image ids, GT and prediction images")
        try:
            ids = [int(i) for i in image_ids]
        except (TypeError, ValueError):
            raise DataError("image ids must be integers") from None
        batch: set[int] = set()
        for iid in ids:  # checked first, so that a failed update changes nothing
            if iid in self._seen or iid in batch:
                raise DataError(f"image id {iid} was given twice")
            batch.add(iid)
        max_k = max(self.ks)
        out = np.zeros((len(ids), self._row_width))
        for r, (iid, g, p) in enumerate(zip(ids, gt_images, pred_images)):
            gt = as_triplet_image(g, image_id=iid)
            pred = None if p is None else as_triplet_image(p, image_id=iid, prediction=True)
            zs_rows = None
            if self.zero_shot:
                if gt.zeroshot is None and self.zero_shot_set is not None:
                    gt.zeroshot = self.zero_shot_set.contains(gt.labels[:, [0, 2, 1]])
                zs_rows = _zero_shot_rows(gt, None)
            out[r, :4] = iid, len(gt), 0 if zs_rows is None else zs_rows.sum(), len(pred or ())
            col = 4
            for key in self.keys:
                task = key.removesuffix("_zeroshot")
                hit = image_true_positives(
                    gt,
                    pred,
                    task=task,
                    max_k=max_k,
                    iou_threshold=self.iou_threshold,
                    plus_one=self.plus_one,
                    gt_rows=zs_rows if key.endswith("_zeroshot") else None,
                )
                cum = np.concatenate([[0], np.cumsum(hit)])
                out[r, col : col + len(self.ks)] = cum[np.minimum(self.ks, len(hit))]
                col += len(self.ks)
        self.image_rows.append(torch.from_numpy(out.reshape(-1)).to(self.device))
        self._seen |= batch

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Same as :meth:`update` (a per-batch recall is not meaningful)."""
        self.update(*args, **kwargs)

    def reset(self) -> None:
        super().reset()
        self._seen = set()

    # -- results --------------------------------------------------------------------------------
    def compute(self) -> dict[str, Any]:
        """All results (keys in the module docstring)."""
        state = self.image_rows
        if isinstance(state, torch.Tensor):
            flat = state.reshape(-1)
        elif state:
            flat = torch.cat([t.reshape(-1) for t in state])
        else:
            flat = torch.zeros(0, dtype=torch.float64)
        rows = flat.cpu().numpy().reshape(-1, self._row_width)
        ids = rows[:, 0].astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            warnings.warn(
                "some images were evaluated more than once (several processes? a padding "
                "DistributedSampler?); they are counted each time",
                stacklevel=2,
            )
        num_gt = rows[:, 1].astype(np.int64)
        num_zs = rows[:, 2].astype(np.int64)
        result: dict[str, Any] = {}
        tp: dict[str, dict[int, int]] = {}
        per_tp: dict[str, dict[int, np.ndarray]] = {}
        col = 4
        for key in self.keys:
            denom = gt_denominator(num_zs if key.endswith("_zeroshot") else num_gt, self.gt_count)
            tp[key], per_tp[key] = {}, {}
            for k in self.ks:
                hits = rows[:, col].astype(np.int64)
                total = int(hits.sum())
                result[f"{key}_R@{k}"] = total / denom if denom else float("nan")
                tp[key][k], per_tp[key][k] = total, hits
                col += 1
        result["tp"] = tp
        result["num_gt"] = int(num_gt.sum())
        result["denominators"] = {"all": gt_denominator(num_gt, self.gt_count)}
        if self.zero_shot:
            result["num_gt_zeroshot"] = int(num_zs.sum())
            result["denominators"]["zeroshot"] = gt_denominator(num_zs, self.gt_count)
        result["per_image"] = {
            "image_ids": ids,
            "num_gt": num_gt,
            "num_gt_zeroshot": num_zs,
            "tp": per_tp,
        }
        result["images"] = {
            "seen": len(ids),
            "without_gt": int((num_gt == 0).sum()),
            "without_prediction": int((rows[:, 3] == 0).sum()),
        }
        return result

    def format_table(self, metrics: Mapping[str, Any]) -> str:
        """The results as a table of percentages (rows: tasks; columns: R@K)."""
        return format_vrd_table(metrics, tasks=self.tasks, ks=self.ks)
