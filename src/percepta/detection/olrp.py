"""Optimal LRP (oLRP) for object detection, written with numpy.

Follows the official LRP-Error code (kemaloksuz/LRP-Error, ``pycocotools/cocoeval.py`` at commit
ec408f3c; Oksuz et al., "Localization Recall Precision (LRP): A New Performance Metric for Object
Detection", ECCV 2018, and "One Metric to Measure them All", TPAMI 2022) and reproduces its
per-class ``[K, A, M]`` arrays and summary numbers to floating-point round-off
(``tests/detection/test_olrp.py`` checks 1e-9 on the reference case). No installed library computes
oLRP (faster-coco-eval and pycocotools stop at AP/AR), hence this module.

Matching (COCO semantics, IoU threshold tau = 0.5 only)
    Per image and category, detections are sorted by descending score (stable, file order breaks
    ties) and cut to ``maxDets = 100``; each detection in turn takes the free ground truth (GT)
    with the highest IoU >= tau, preferring non-ignored GTs over ignored ones; among equal IoUs
    the later GT in file order wins (exactly pycocotools' scan). A GT is *ignored* in area range
    ``a`` when it is a crowd region (``iscrowd=1``: COCO crowds and Pascal VOC "difficult"
    objects, see :mod:`percepta.data.convert`) or its ``area`` lies outside the range;
    crowd GTs stay free and absorb any number of detections (IoU with a crowd region is
    intersection / detection area), count in no ``G`` (never a miss). A detection matched to an ignored GT is ignored; an unmatched
    detection whose own area (``w * h``) lies outside the range is ignored; other unmatched
    detections are false positives (FP). Matched IoUs are kept for the localisation error.
    Area ranges are COCO's: all [0, 1e10], small [0, 32^2], medium [32^2, 96^2], large
    [96^2, 1e10] (bounds inclusive on both sides, as in pycocotools).

    faster-coco-eval does this matching in C++ but does not expose the per-detection result
    (its per-image records are opaque and its ``matched`` dict covers only the area "all"), and
    pycocotools' Python ``evaluateImg`` costs minutes on COCO-sized sets, so the matching is
    re-done here, vectorised: IoUs are computed for every (detection, GT) pair of the same image
    and category with the maskApi ``bbIou`` formula, and the greedy assignment runs as one numpy
    step per detection rank across all (image, category, area range) groups at once.

LRP and oLRP
    Per category, all images pooled, detections sorted by descending score (ties: image order,
    then per-image rank) and each detection's score used as a threshold. With TP, FP the
    cumulative counts above the threshold, G the number of non-ignored GTs and FN = G - TP::

        LRP = ( sum_TP (1 - IoU) / (1 - tau) + FP + FN ) / (TP + FP + FN)

    oLRP is the minimum over thresholds (first index of the minimum); the LRP-optimal threshold
    is that detection's score. The components at the optimum are
    ``Loc = sum_TP (1 - IoU) / TP`` (mean 1 - IoU, *not* divided by 1 - tau, range [0, 0.5]),
    ``FP = FP / (TP + FP)`` (1 - precision) and ``FN = FN / G`` (1 - recall).
    Ignored detections change no count. No precision interpolation is involved.

Special cases
    * category with non-ignored GT but no detection, or no TP at any threshold: oLRP = 1,
      FN = 1, Loc = FP = threshold = NaN;
    * category without non-ignored GT (in that area range): -1 in every array, excluded.
    * maxDets ``m`` keeps the top ``m`` detections per image *and category* (COCO's rule); the
      matching itself always uses the top 100.

Summary
    Arithmetic mean over categories, skipping -1 and NaN entries *per component*: the oLRP and
    FN means cover every category with GT, the Loc and FP means only those with at least one
    TP, so oLRP is not a function of the averaged components. Where no category qualifies the
    official tool prints -1; :meth:`LRPResult.summary` returns NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["COCO_AREA_RANGES", "COCO_MAX_DETS", "LRPResult", "optimal_lrp", "coco_box_iou"]

COCO_AREA_RANGES: tuple[tuple[str, float, float], ...] = (
    ("all", 0.0, 1e5**2),
    ("small", 0.0, 32.0**2),
    ("medium", 32.0**2, 96.0**2),
    ("large", 96.0**2, 1e5**2),
)
COCO_MAX_DETS: tuple[int, ...] = (1, 10, 100)


@dataclass
class LRPResult:
    """Per-category oLRP arrays ``[K, A, M]`` (category, area range, maxDets).

    ``-1`` marks a category without non-ignored GT; ``NaN`` (Loc, FP, threshold) a category
    with GT but no true positive.
    """

    cat_ids: list[int]
    area_labels: tuple[str, ...]
    max_dets: tuple[int, ...]
    tau: float
    olrp: np.ndarray
    loc: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    threshold: np.ndarray

    def _index(self, area: str, max_dets: int) -> tuple[int, int]:
        return self.area_labels.index(area), self.max_dets.index(max_dets)

    def summary(self, area: str = "all", max_dets: int = 100) -> dict[str, float]:
        """Means over categories as in the official ``summarize()`` (NaN where it prints -1)."""
        a, m = self._index(area, max_dets)
        out = {}
        for key, arr in (
            ("oLRP", self.olrp),
            ("oLRP_loc", self.loc),
            ("oLRP_fp", self.fp),
            ("oLRP_fn", self.fn),
        ):
            s = arr[:, a, m]
            s = s[~np.isnan(s)]
            s = s[s > -1]
            out[key] = float(np.mean(s)) if s.size else float("nan")
        return out

    def per_class(self, area: str = "all", max_dets: int = 100) -> list[dict[str, float | int]]:
        """One dict per category (NaN for -1 and NaN entries)."""
        a, m = self._index(area, max_dets)
        rows = []
        for k, cid in enumerate(self.cat_ids):
            no_gt = self.olrp[k, a, m] == -1
            vals = {
                key: float("nan") if no_gt else float(arr[k, a, m])
                for key, arr in (
                    ("oLRP", self.olrp),
                    ("oLRP_loc", self.loc),
                    ("oLRP_fp", self.fp),
                    ("oLRP_fn", self.fn),
                    ("threshold", self.threshold),
                )
            }
            rows.append({"category_id": int(cid), **vals})
        return rows


def coco_box_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired ``xywh`` boxes ``d[i]``, ``g[i]``, with the operation order of pycocotools'
    ``maskApi.c::bbIou`` (so the values are bit-identical); a crowd GT uses the detection area
    as the union."""
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
        h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
        inter = w * h
        da = d[:, 2] * d[:, 3]
        union = np.where(crowd, da, da + g[:, 2] * g[:, 3] - inter)
        out = inter / union
    return np.where((w > 0) & (h > 0), out, 0.0)


def _lookup(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of each value in the sorted ``table``, or -1."""
    if table.size == 0:
        return np.full(values.shape, -1, dtype=np.int64)
    pos = np.clip(np.searchsorted(table, values), 0, table.size - 1)
    return np.where(table[pos] == values, pos, -1)


def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(c) for c in counts])`` without the Python loop."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - starts


def _greedy_match(
    iou_rows: np.ndarray,
    row_det: np.ndarray,
    row_start: np.ndarray,
    n_det: np.ndarray,
    ignore: np.ndarray,
    crowd: np.ndarray,
    tau: float,
    matched: np.ndarray,
    match_ig: np.ndarray,
    match_iou: np.ndarray,
) -> None:
    """COCO greedy matching for a bucket of (image, category) groups of equal padded GT width.

    ``iou_rows [R, W]``: one row per detection (groups contiguous, in rank order; padding -1),
    ``row_det [R]``: global detection index of each row, ``row_start [P]`` / ``n_det [P]``: rows
    of each group, sorted by ``n_det`` descending; ``ignore [A, P, W]``, ``crowd [P, W]``.
    Results are written into ``matched / match_ig / match_iou [A, D]``.
    """
    n_area, n_groups, width = ignore.shape
    free = np.ones((n_area, n_groups, width), dtype=bool)
    for r in range(int(n_det.max(initial=0))):
        n_act = int(np.count_nonzero(n_det > r))  # n_det is sorted descending: a prefix
        rows = row_start[:n_act] + r
        iou = iou_rows[rows]  # [n, W]
        ig = ignore[:, :n_act]
        ok = free[:, :n_act] & (iou >= tau)[None]
        reg = ok & ~ig
        cand = np.where(reg.any(-1, keepdims=True), reg, ok)  # regular GTs first, else ignored
        val = np.where(cand, iou[None], -np.inf)
        j = width - 1 - np.argmax(val[..., ::-1], axis=-1)  # last maximum = pycocotools' tie rule
        aa, pp = np.nonzero(cand.any(-1))
        if aa.size == 0:
            continue
        jj = j[aa, pp]
        det = row_det[rows[pp]]
        matched[aa, det] = True
        match_ig[aa, det] = ig[aa, pp, jj]
        match_iou[aa, det] = iou[pp, jj]
        keep_free = crowd[pp, jj]
        free[aa[~keep_free], pp[~keep_free], jj[~keep_free]] = False


def optimal_lrp(
    gt_image_ids: np.ndarray,
    gt_cat_ids: np.ndarray,
    gt_boxes: np.ndarray,
    gt_areas: np.ndarray,
    gt_crowd: np.ndarray,
    dt_image_ids: np.ndarray,
    dt_cat_ids: np.ndarray,
    dt_boxes: np.ndarray,
    dt_scores: np.ndarray,
    img_ids: Sequence[int] | np.ndarray,
    cat_ids: Sequence[int] | np.ndarray,
    tau: float = 0.5,
    max_dets: Sequence[int] = COCO_MAX_DETS,
    area_ranges: Sequence[tuple[str, float, float]] = COCO_AREA_RANGES,
) -> LRPResult:
    """Optimal LRP per category, area range and maxDets (see the module docstring).

    Args:
        gt_*: ground-truth annotations in file order: image id, category id, ``xywh`` box,
            ``area`` (the annotation's field, used for the area ranges) and crowd flag.
        dt_*: detections in results-file order: image id, category id, ``xywh`` box, score.
        img_ids, cat_ids: the images and categories evaluated (others are dropped).
        tau: IoU threshold of a true positive (0.5 in LRP-Error).
        max_dets: detections kept per image and category, one result column each.
        area_ranges: ``(label, lo, hi)`` triples.

    Returns:
        An :class:`LRPResult` with ``[K, A, M]`` arrays, K = sorted unique ``cat_ids``.
    """
    img_table = np.unique(np.asarray(img_ids, dtype=np.int64))
    cat_table = np.unique(np.asarray(cat_ids, dtype=np.int64))
    n_img, n_cat = img_table.size, cat_table.size
    n_area, n_m = len(area_ranges), len(max_dets)
    lo = np.array([r[1] for r in area_ranges], dtype=np.float64)[:, None]
    hi = np.array([r[2] for r in area_ranges], dtype=np.float64)[:, None]

    # ---- ground truth: keep evaluated images/categories, group by (category, image) ----------
    gi = _lookup(np.asarray(gt_image_ids, dtype=np.int64), img_table)
    gk = _lookup(np.asarray(gt_cat_ids, dtype=np.int64), cat_table)
    keep = (gi >= 0) & (gk >= 0)
    gkey = gk[keep] * n_img + gi[keep]
    g_order = np.argsort(gkey, kind="stable")  # stable: file order inside a group
    gkey = gkey[g_order]
    g_box = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)[keep][g_order]
    g_area = np.asarray(gt_areas, dtype=np.float64)[keep][g_order]
    g_crowd = np.asarray(gt_crowd, dtype=bool)[keep][g_order]
    g_ignore = g_crowd[None] | (g_area[None] < lo) | (g_area[None] > hi)  # [A, G]
    g_cat = gkey // max(n_img, 1)
    n_pos = np.zeros((n_cat, n_area), dtype=np.int64)  # non-ignored GTs per category and area
    for a in range(n_area):
        n_pos[:, a] = np.bincount(g_cat[~g_ignore[a]], minlength=n_cat)
    g_keys, g_start, g_count = np.unique(gkey, return_index=True, return_counts=True)

    # ---- detections: keep evaluated ones, sort per group by score, cut to max(max_dets) -------
    di = _lookup(np.asarray(dt_image_ids, dtype=np.int64), img_table)
    dk = _lookup(np.asarray(dt_cat_ids, dtype=np.int64), cat_table)
    keep = (di >= 0) & (dk >= 0)
    idx = np.flatnonzero(keep)
    score = np.asarray(dt_scores, dtype=np.float64)[idx]
    dkey = dk[idx] * n_img + di[idx]
    d_order = np.lexsort((idx, -score, dkey))  # group, then score desc, then file order
    d_box = np.asarray(dt_boxes, dtype=np.float64).reshape(-1, 4)[idx][d_order]
    dkey, score = dkey[d_order], score[d_order]
    d_keys, d_start, d_count = np.unique(dkey, return_index=True, return_counts=True)
    rank = np.arange(dkey.size) - np.repeat(d_start, d_count)
    top = rank < max(max_dets)
    dkey, score, d_box, rank = dkey[top], score[top], d_box[top], rank[top]
    d_keys, d_start, d_count = np.unique(dkey, return_index=True, return_counts=True)
    n_dt = dkey.size
    d_area = d_box[:, 2] * d_box[:, 3]
    d_out = (d_area[None] < lo) | (d_area[None] > hi)  # [A, D]

    # ---- greedy matching of the groups that have both GTs and detections ----------------------
    matched = np.zeros((n_area, n_dt), dtype=bool)
    match_ig = np.zeros((n_area, n_dt), dtype=bool)
    match_iou = np.zeros((n_area, n_dt), dtype=np.float64)
    gpos = _lookup(d_keys, g_keys)
    paired = np.flatnonzero(gpos >= 0)
    if paired.size:
        p_ng = g_count[gpos[paired]]
        p_gs = g_start[gpos[paired]]
        width = 1 << np.ceil(np.log2(np.maximum(p_ng, 1))).astype(np.int64)  # bucket by GT count
        for w in np.unique(width):
            sel = np.flatnonzero(width == w)
            sel = sel[np.argsort(-d_count[paired[sel]], kind="stable")]
            grp, ng, gs = paired[sel], p_ng[sel], p_gs[sel]
            nd = d_count[grp]
            row_start = np.cumsum(nd) - nd
            row_det = np.repeat(d_start[grp], nd) + _ragged_arange(nd)
            row_grp = np.repeat(np.arange(grp.size), nd)
            # every (detection row, GT column) pair of the same group
            row_ng = ng[row_grp]
            c_row = np.repeat(np.arange(row_det.size), row_ng)
            c_col = _ragged_arange(row_ng)
            c_gt = gs[row_grp][c_row] + c_col
            iou_rows = np.full((row_det.size, int(w)), -1.0)
            iou_rows[c_row, c_col] = coco_box_iou(d_box[row_det[c_row]], g_box[c_gt], g_crowd[c_gt])
            g_col = _ragged_arange(ng)
            g_idx = np.repeat(gs, ng) + g_col
            g_grp = np.repeat(np.arange(grp.size), ng)
            ignore = np.zeros((n_area, grp.size, int(w)), dtype=bool)
            ignore[:, g_grp, g_col] = g_ignore[:, g_idx]
            crowd = np.zeros((grp.size, int(w)), dtype=bool)
            crowd[g_grp, g_col] = g_crowd[g_idx]
            _greedy_match(
                iou_rows, row_det, row_start, nd, ignore, crowd, tau, matched, match_ig, match_iou
            )

    is_tp = matched & ~match_ig
    is_fp = ~matched & ~d_out
    tp_iou = np.where(is_tp, match_iou, 0.0)

    # ---- per category: pool images, sort by score, cumulative sums, argmin --------------------
    shape = (n_cat, n_area, n_m)
    olrp, loc, fp, fn, thr = (np.full(shape, -1.0) for _ in range(5))
    d_img = dkey % max(n_img, 1)
    d_cat = dkey // max(n_img, 1)
    acc = np.lexsort((rank, d_img, -score, d_cat))  # category, score desc, image, rank
    bounds = np.searchsorted(d_cat[acc], np.arange(n_cat + 1))
    for k in range(n_cat):
        seg = acc[bounds[k] : bounds[k + 1]]
        for m, max_det in enumerate(max_dets):
            s = seg[rank[seg] < max_det]
            for a in range(n_area):
                npig = int(n_pos[k, a])
                if npig == 0:
                    continue
                tp_num = np.cumsum(is_tp[a, s])
                if s.size == 0 or tp_num[-1] == 0:
                    olrp[k, a, m], fn[k, a, m] = 1.0, 1.0
                    loc[k, a, m] = fp[k, a, m] = thr[k, a, m] = np.nan
                    continue
                fp_num = np.cumsum(is_fp[a, s])
                fn_num = npig - tp_num
                total_loc = tp_num - np.cumsum(tp_iou[a, s])
                lrps = (total_loc / (1 - tau) + fp_num + fn_num) / (tp_num + fp_num + fn_num)
                i = int(np.argmin(lrps))
                olrp[k, a, m] = lrps[i]
                loc[k, a, m] = total_loc[i] / tp_num[i]
                fp[k, a, m] = fp_num[i] / (tp_num[i] + fp_num[i])
                fn[k, a, m] = fn_num[i] / npig
                thr[k, a, m] = score[s[i]]
    return LRPResult(
        cat_ids=[int(c) for c in cat_table],
        area_labels=tuple(r[0] for r in area_ranges),
        max_dets=tuple(int(m) for m in max_dets),
        tau=float(tau),
        olrp=olrp,
        loc=loc,
        fp=fp,
        fn=fn,
        threshold=thr,
    )
