"""One matching pass per image for scene-graph evaluation (R@K, ngR@K, mR@K, zR@K, A@K).

Semantics follow the official Scene-Graph-Benchmark.pytorch evaluator (``sgg_eval.py`` /
``vg_eval.py``, KaihuaTang/Scene-Graph-Benchmark.pytorch @ 6f75881a), restated in the project
notes ``sgg.md`` §1; no code is copied. What this module computes, per image:

* a box-compatibility matrix ``C[a, g]`` = (pred label a == GT label g) and IoU(a, g) >= tau,
  IoU in float32 with the VG "+1 pixel" convention (``box_convention="vg"``: width = x2-x1+1) or
  plain xyxy (``"xyxy"``), threshold inclusive. IoU decides matches in *every* mode, also
  PredCls/SGCls (near-duplicate GT boxes can therefore hit each other, as in the official code);
* the graph-constrained ranking: rows of ``rel_pairs`` in the order given (the evaluator never
  sorts them; the relation head's post-processor does), predicate ``1 + argmax(scores[1:])``
  (the background column 0 is ignored even when it is the overall arg-max);
* the no-graph-constraint ranking: every (pair, predicate >= 1) entry scored
  ``s_subj * s_obj * P(predicate)`` in float32, the first 100 kept;
* the pair-accuracy ranking (PredCls/SGCls): the rows whose (subject, object) is a GT pair.

A predicted triplet hits GT relation ``i`` when subject and object are both compatible and the
predicates are equal. Instead of the official per-K set unions, every ranking is reduced to the
*rank of the first prediction hitting each GT relation* (``first_hit*``); then
``Hit@K = {i : first_hit[i] < K}`` for every K at once. That K-independent vector (plus each GT
relation's predicate and zero-shot flag) is all the metrics need (see :class:`ImageMatch`).

Speed, without a Python loop over pairs: only the first ``max(K)`` rows can count for R@K, so
only those are arg-maxed and matched; for ngR the top-100 entries are found exactly without a
full sort (a bound from the first 100 rows discards rows whose best possible score is lower, and
only the surviving entries are sorted).

Deliberate differences from the official code (none changes a result on the reference vectors):
exact score ties in the ngR ranking are broken by (row, predicate) order (official: numpy's
unstable argsort, i.e. implementation-defined); GT pairs for A@K are compared exactly (official
encodes ``subject*1024 + object``, which collides beyond 1024 boxes); scores and boxes are
compared in float32 whatever dtype is passed (the official pipeline receives float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from percepta.errors import DataError

__all__ = [
    "NG_TOP_N",
    "NO_HIT",
    "MODES",
    "ImageData",
    "ImageMatch",
    "ZeroShotSet",
    "box_iou",
    "as_array",
    "check_boxes",
    "match_image",
]

NG_TOP_N = 100  # the official no-graph-constraint ranking keeps this many (pair, predicate) entries
NO_HIT = np.int64(2**62)  # "no prediction within the cut hits this GT relation"
MODES = ("predcls", "sgcls", "sgdet")


def as_array(x: Any, dtype: Any, cols: int | None, image_id: Any, name: str) -> np.ndarray:
    """``x`` (tensor, array or nested list) as a numpy array of ``dtype`` and shape [N, cols]/[N].

    Empty inputs (``[]``) become ``[0, cols]``. Integer fields given as floats must be whole.
    Raises :class:`DataError` naming the image (``image_id``; ``None``: none) and the field on a
    wrong shape or value.
    """
    where = f"image {image_id!r}: " if image_id is not None else ""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().as_subclass(torch.Tensor)
        x = x.float().numpy() if x.dtype == torch.bfloat16 else x.numpy()
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise DataError(f"{where}field {name!r} is not a rectangular array ({e})") from None
    if a.size == 0:
        return np.zeros((0, cols) if cols else (0,), dtype=dtype)
    if cols is None and a.ndim != 1 or cols is not None and (a.ndim != 2 or a.shape[1] != cols):
        want = "[N]" if cols is None else f"[N, {cols}]"
        raise DataError(f"{where}field {name!r} has shape {list(a.shape)}, expected {want}")
    kind = a.dtype.kind
    if kind not in "biuf":
        raise DataError(f"{where}field {name!r} must hold numbers")
    if (
        dtype is np.int64
        and kind == "f"
        and (not np.all(np.isfinite(a)) or np.any(a != np.round(a)))
    ):
        raise DataError(f"{where}field {name!r} must hold whole numbers")
    return np.ascontiguousarray(a, dtype=dtype)


def check_boxes(boxes: np.ndarray, image_id: Any, name: str) -> None:
    """Boxes must be finite with x2 >= x1 and y2 >= y1 (raises :class:`DataError`)."""
    if not boxes.size:
        return
    if not np.isfinite(boxes).all():
        raise DataError(f"image {image_id!r}: {name!r} contains NaN or infinite coordinates")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"image {image_id!r}: {name!r} row {i} = {boxes[i].tolist()} has x2 < x1 or "
            "y2 < y1 (boxes must be [x1, y1, x2, y2] in pixels)"
        )


def box_iou(a: np.ndarray, b: np.ndarray, plus_one: bool = True) -> np.ndarray:
    """IoU matrix ``[len(a), len(b)]`` in float32, ``inter / (area_a + area_b - inter)``.

    ``plus_one`` uses inclusive pixel widths (``x2 - x1 + 1``), the Visual Genome / maskrcnn
    convention of the official evaluator. Written by hand (not ``torchvision.ops.box_iou``)
    because that op has no +1 convention and the float32 operation order must match the
    official one exactly for threshold ties.
    """
    one = np.float32(1.0 if plus_one else 0.0)
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.maximum(rb - lt + one, np.float32(0.0))
    inter = wh[..., 0] * wh[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


class ZeroShotSet:
    """A set of (subject class, object class, predicate) triplets with vectorised membership."""

    def __init__(self, triplets: Any = None) -> None:
        t = as_array([] if triplets is None else triplets, np.int64, 3, None, "zero_shot_triplets")
        self.size = len(t)
        if self.size:
            self._lo = t.min(0)
            self._span = t.max(0) - self._lo + 1
            if float(np.prod(self._span.astype(np.float64))) >= 2.0**62:
                raise DataError("zero_shot_triplets: label values span too wide a range")
            self._keys = np.unique(self._encode(t))

    def _encode(self, t: np.ndarray) -> np.ndarray:
        d = t - self._lo
        return (d[:, 0] * self._span[1] + d[:, 1]) * self._span[2] + d[:, 2]

    def contains(self, triplets: np.ndarray) -> np.ndarray:
        """Boolean mask over rows of an ``[m, 3]`` int array."""
        if not self.size or not len(triplets):
            return np.zeros(len(triplets), dtype=bool)
        d = triplets - self._lo
        inside = ((d >= 0) & (d < self._span)).all(1)
        out = np.zeros(len(triplets), dtype=bool)
        if inside.any():
            q = self._encode(triplets[inside])
            pos = np.minimum(np.searchsorted(self._keys, q), len(self._keys) - 1)
            out[inside] = self._keys[pos] == q
        return out


@dataclass
class ImageData:
    """One image's ground truth and prediction as validated numpy arrays.

    ``gt_rels`` rows are (subject index, object index, predicate 1..P); ``rel_scores`` is
    ``[R, P+1]`` with column 0 the background. Prediction fields are ``None`` when the image has no
    prediction at all.
    """

    image_id: Any
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_rels: np.ndarray
    pred_boxes: np.ndarray | None = None
    pred_labels: np.ndarray | None = None
    pred_scores: np.ndarray | None = None
    rel_pairs: np.ndarray | None = None
    rel_scores: np.ndarray | None = None
    rel_score_max: float | None = None  # max of rel_scores (found by validation, reused by ngR)


@dataclass
class ImageMatch:
    """The shared per-image match result every metric receives.

    Attributes:
        image_id: the image's id.
        gt_predicates: ``[m]`` predicate (1..P) of each GT relation, duplicates kept.
        zero_shot: ``[m]`` whether the GT triplet (subject class, object class, predicate) is in
            the zero-shot list.
        first_hit: ``[m]`` 0-based rank of the first graph-constrained row hitting the GT
            relation (``NO_HIT`` if none of the first ``max(K)`` rows does).
        first_hit_ng: same for the no-graph-constraint ranking (top 100 entries).
        first_hit_pair: same within the rows whose pair is a GT pair (A@K); ``None`` in SGDet.
    """

    image_id: Any
    gt_predicates: np.ndarray
    zero_shot: np.ndarray
    first_hit: np.ndarray
    first_hit_ng: np.ndarray
    first_hit_pair: np.ndarray | None

    @property
    def num_gt(self) -> int:
        return len(self.gt_predicates)


def _first_hits(
    compat: np.ndarray, subj: np.ndarray, obj: np.ndarray, pred: np.ndarray, gt_rels: np.ndarray
) -> np.ndarray:
    """For each GT relation, the first index e with (subj[e], obj[e], pred[e]) matching it."""
    if not len(subj):
        return np.full(len(gt_rels), NO_HIT, dtype=np.int64)
    hit = compat[subj[:, None], gt_rels[None, :, 0]]
    hit &= compat[obj[:, None], gt_rels[None, :, 1]]
    hit &= pred[:, None] == gt_rels[None, :, 2]
    first = hit.argmax(0).astype(np.int64)
    first[~hit.any(0)] = NO_HIT
    return first


def _ng_top(
    pair_scores: np.ndarray, scores: np.ndarray, score_max: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and predicates (1..P) of the ``NG_TOP_N`` best entries of ``pair_scores[:,None] *
    scores[:, 1:]`` (float32), best first, ties by (row, predicate) order: exactly what a full
    stable sort of the ``R x P`` matrix would keep, computed from a small candidate set."""
    r = len(scores)
    npred = scores.shape[1] - 1
    rows = np.arange(r)
    if r > NG_TOP_N and pair_scores.min() >= 0:
        # Each of the first 100 rows has an entry >= its row best, so the 100th best entry is
        # >= t0 = the lowest of those row bests; rows whose best possible score (pair score x
        # the largest probability anywhere; float products are monotone) is below t0 drop out.
        head = pair_scores[:NG_TOP_N] * scores[:NG_TOP_N, 1:].max(1)
        t0 = head.min()
        hi = np.float32(scores.max() if score_max is None else score_max)
        rows = np.flatnonzero(pair_scores * hi >= t0)
        best = pair_scores[rows] * scores[rows, 1:].max(1)
        if len(rows) > NG_TOP_N:  # the 100th best row best is a tighter bound
            t = np.partition(best, len(rows) - NG_TOP_N)[len(rows) - NG_TOP_N]
            rows = rows[best >= t]
        else:
            t = t0
        sig = pair_scores[rows, None] * scores[rows, 1:]
        keep = sig >= t
        flat = (rows[:, None] * npred + np.arange(npred))[keep]
        vals = sig[keep]
    else:
        vals = (pair_scores[:, None] * scores[:, 1:]).ravel()
        flat = np.arange(vals.size)
    order = np.argsort(-vals, kind="stable")[:NG_TOP_N]  # candidates are in flat-index order
    sel = flat[order]
    return sel // npred, sel % npred + 1


def match_image(
    img: ImageData,
    *,
    mode: str,
    max_k: int,
    iou_threshold: float = 0.5,
    plus_one: bool = True,
    zero_shot: ZeroShotSet | None = None,
) -> ImageMatch | str:
    """Match one image's predictions to its GT relations (the one pass every metric uses).

    Args:
        img: arrays validated by :func:`percepta.scene_graph.results_io.build_image`; in
            ``"predcls"`` the predicted boxes, labels and scores are replaced by the GT boxes,
            labels and 1 (as the official code).
        mode: ``"predcls"``, ``"sgcls"`` or ``"sgdet"`` (A@K ranks only outside SGDet).
        max_k: the largest K; later graph-constrained rows cannot count.
        iou_threshold: box match threshold (inclusive).
        plus_one: VG inclusive-pixel IoU.
        zero_shot: the zero-shot triplet set (``None``: none).

    Returns:
        The :class:`ImageMatch`, or the skip reason ``"no_gt_relations"``,
        ``"no_prediction"`` or ``"no_predicted_pairs"`` (skipped images are not scored, as in
        the official evaluator).
    """
    gt_rels = img.gt_rels
    if not len(gt_rels):
        return "no_gt_relations"
    if img.rel_pairs is None or img.rel_scores is None:
        return "no_prediction"
    pairs, scores = img.rel_pairs, img.rel_scores
    if not len(pairs):
        return "no_predicted_pairs"
    if mode == "predcls":
        boxes, labels = img.gt_boxes, img.gt_labels
        obj_scores = np.ones(len(labels), dtype=np.float32)
    else:
        boxes, labels, obj_scores = img.pred_boxes, img.pred_labels, img.pred_scores

    compat = (labels[:, None] == img.gt_labels[None, :]) & (
        box_iou(boxes, img.gt_boxes, plus_one) >= np.float32(iou_threshold)
    )

    kg = min(len(pairs), max_k)  # graph constraint: first K rows as given, best non-bg predicate
    first = _first_hits(
        compat, pairs[:kg, 0], pairs[:kg, 1], scores[:kg, 1:].argmax(1) + 1, gt_rels
    )

    pair_scores = obj_scores[pairs[:, 0]] * obj_scores[pairs[:, 1]]
    ng_rows, ng_pred = _ng_top(pair_scores, scores, img.rel_score_max)
    first_ng = _first_hits(compat, pairs[ng_rows, 0], pairs[ng_rows, 1], ng_pred, gt_rels)

    first_pair = None
    if mode != "sgdet":
        base = max(len(labels), len(img.gt_labels), 1)
        codes = pairs[:, 0] * base + pairs[:, 1]
        in_gt = (codes[:, None] == (gt_rels[:, 0] * base + gt_rels[:, 1])[None, :]).any(1)
        qrows = np.flatnonzero(in_gt)[:max_k]
        first_pair = _first_hits(
            compat, pairs[qrows, 0], pairs[qrows, 1], scores[qrows, 1:].argmax(1) + 1, gt_rels
        )

    gl = img.gt_labels
    zs = (
        zero_shot.contains(np.stack([gl[gt_rels[:, 0]], gl[gt_rels[:, 1]], gt_rels[:, 2]], 1))
        if zero_shot is not None
        else np.zeros(len(gt_rels), dtype=bool)
    )
    return ImageMatch(img.image_id, gt_rels[:, 2].copy(), zs, first, first_ng, first_pair)
