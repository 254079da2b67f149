"""Scene-graph evaluation speed: percepta's evaluator vs a plain per-image baseline, VG scale.

Workloads (deterministic, regenerated from the recipe in the project notes
``sgg_eval_workload.md`` §3, whose SHA-256 fingerprints and official metric values are checked
on full runs):
  (a) ``sgg_eval_a``: predcls-like, 1,000 images x 12 GT objects, 6 GT relations, all 132
      ordered pairs x 51 float32 scores;
  (b) ``sgg_eval_b``: sgdet-like, 300 images x 80 detected boxes, all 6,320 ordered pairs,
      22 GT objects, 12 GT relations.

The baseline is a straightforward re-implementation of the official per-image algorithm
(Scene-Graph-Benchmark.pytorch ``sgg_eval.py``, as described in the notes, written here, not
copied): Python lists of per-prediction hit lists, ``reduce(np.union1d, ...)`` recomputed per K
and per metric, a full argsort of every (pair, predicate) score for ngR, row-equality
``intersect_2d`` tests. Both implementations must give identical results (checked every run).

Timed region (as in the notes §5): per-image relation metrics (R, ngR, zR, ng-zR, mR, ng-mR, and
A@K outside sgdet) plus the final aggregation; inputs held in memory (percepta: torch tensors
passed to ``update`` one image per call; baseline: numpy arrays). Prints one JSON line per
workload: ``{"bench", "ours", "baseline" (seconds per image), "ratio", ...}``.

Usage: ``python benchmarks/bench_sgg_eval.py [--quick] [--repeats N] [--only a|b]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from functools import reduce
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/, from any cwd
from _common import emit, machine  # noqa: E402
from percepta.scene_graph.evaluation import SceneGraphEvaluator

# VG150 priors (VG-SGG-dicts-with-attri.json counts, index order; notes appendix).
OBJECT_COUNT = np.array(
    [
        2633,
        3611,
        9951,
        7391,
        4566,
        2666,
        3693,
        3487,
        3296,
        5589,
        4884,
        4339,
        4649,
        6164,
        4297,
        2714,
        6246,
        5152,
        5467,
        8125,
        6161,
        31805,
        5118,
        4476,
        4130,
        17352,
        3720,
        11936,
        3799,
        4877,
        4285,
        4632,
        4531,
        4305,
        3241,
        2969,
        4651,
        13354,
        2612,
        12069,
        4870,
        2673,
        5619,
        8419,
        12027,
        3059,
        3238,
        8228,
        6057,
        2470,
        2366,
        4953,
        7543,
        10951,
        4169,
        2823,
        17422,
        17497,
        7996,
        8366,
        21376,
        6306,
        4457,
        5315,
        5006,
        10463,
        5535,
        2264,
        3706,
        3335,
        4054,
        3077,
        13984,
        22335,
        6630,
        14182,
        4606,
        54659,
        2037,
        4537,
        4894,
        3630,
        4545,
        6035,
        3294,
        2536,
        13147,
        4714,
        2595,
        14415,
        41278,
        2645,
        5499,
        3678,
        5058,
        6478,
        11632,
        5567,
        21205,
        6163,
        2726,
        2610,
        3049,
        7922,
        6453,
        2552,
        2498,
        4360,
        4117,
        5659,
        33920,
        12419,
        7807,
        9478,
        23499,
        3456,
        3898,
        3529,
        2567,
        2212,
        9437,
        3159,
        2934,
        10996,
        4117,
        19064,
        8821,
        2654,
        7619,
        6353,
        2702,
        3231,
        2957,
        7054,
        6411,
        49902,
        4624,
        5191,
        6389,
        2853,
        2264,
        3943,
        5938,
        9236,
        42466,
        3177,
        4455,
        4017,
        26910,
        4449,
    ],
    dtype=np.float64,
)
PREDICATE_COUNT = np.array(
    [
        47341,
        1996,
        3092,
        3624,
        3477,
        9903,
        10190,
        41356,
        3288,
        3411,
        5213,
        2312,
        3806,
        4688,
        1973,
        9145,
        2945,
        1853,
        9894,
        277936,
        42722,
        251756,
        13715,
        3739,
        3083,
        1869,
        2380,
        2253,
        96589,
        146339,
        712409,
        1914,
        9317,
        3095,
        2721,
        2065,
        3810,
        8856,
        2241,
        18643,
        14185,
        2517,
        22596,
        1925,
        1740,
        4613,
        3490,
        136099,
        15457,
        66425,
    ],
    dtype=np.float64,
)
OBJ_PRIOR = OBJECT_COUNT / OBJECT_COUNT.sum()
PRED_PRIOR = PREDICATE_COUNT / PREDICATE_COUNT.sum()
NUM_PRED = 50
KS = (20, 50, 100)
WORKLOADS = {  # name: (mode, seed, images, GT objects, GT relations, predicted boxes or None)
    "a": ("predcls", 101, 1000, 12, 6, None),
    "b": ("sgdet", 303, 300, 22, 12, 80),
}
FINGERPRINTS = {
    "a": (
        "f6401e3c4909ec12417e0b43346878c928358188f0173d275278c4caa939b24a",
        "f1a67ba97f7d1ce214585c4de1e0d213dd17387b1c092857b107516023dbea40",
    ),
    "b": (
        "5a660fab4b17d78e5cdfca01edefba64102efa8d0f10163e946a4549e16847d4",
        "868942b622e2c90c11b396e05e8312127bd68a6db1be551e642a7574a330a061",
    ),
}
OFFICIAL_VALUES = {  # notes §3.6, 4 decimals, full workloads
    "a": {
        "R": (0.5655, 0.6060, 0.6182),
        "ngR": (0.5790, 0.6595, 0.7215),
        "mR": (0.2649, 0.3045, 0.3123),
        "ng-mR": (0.2780, 0.3526, 0.4357),
        "zR": (0.5828, 0.6245, 0.6309),
        "A": (0.6187, 0.6187, 0.6187),
    },
    "b": {
        "R": (0.2258, 0.2628, 0.2844),
        "ngR": (0.2286, 0.2683, 0.2942),
        "mR": (0.0880, 0.1067, 0.1202),
        "ng-mR": (0.0899, 0.1087, 0.1266),
        "zR": (0.2340, 0.2694, 0.2968),
    },
}
ARRAY_KEYS = (
    "gt_boxes",
    "gt_labels",
    "gt_rels",
    "pred_boxes",
    "pred_labels",
    "pred_scores",
    "rel_pair_idxs",
    "rel_scores",
)


# -- workload generator (notes §3) -------------------------------------------------------------
def _random_boxes(rng: np.random.Generator, n: int, W: int, H: int) -> np.ndarray:
    w = rng.integers(16, W // 2, size=n, endpoint=True)
    h = rng.integers(16, H // 2, size=n, endpoint=True)
    x1 = rng.integers(0, W - w)
    y1 = rng.integers(0, H - h)
    return np.stack([x1, y1, x1 + w, y1 + h], 1)


def generate_image(workload: str, index: int) -> dict[str, np.ndarray]:
    """Image ``index`` of workload ``"a"`` or ``"b"``, independent of every other image."""
    mode, seed, _, n, m, q = WORKLOADS[workload]
    rng = np.random.default_rng([seed, index])
    W = int(rng.integers(300, 1024, endpoint=True))
    H = int(rng.integers(300, 1024, endpoint=True))
    gt_boxes = _random_boxes(rng, n, W, H).astype(np.float32)
    gt_labels = rng.choice(150, size=n, p=OBJ_PRIOR) + 1
    codes = rng.choice(n * (n - 1), size=m, replace=False)
    s, o = codes // (n - 1), codes % (n - 1)
    o = o + (o >= s)
    gt_rels = np.stack([s, o, rng.choice(50, size=m, p=PRED_PRIOR) + 1], 1).astype(np.int64)

    if q is None:  # predcls: predictions are the GT objects
        pred_boxes, pred_labels = gt_boxes.copy(), gt_labels.astype(np.int64)
        pred_scores, origin = np.ones(n, dtype=np.float32), np.arange(n)
    else:
        boxes, labels, scores, origin_l = [], [], [], []
        for g in range(n):
            k = int(rng.choice(3, p=[0.1, 0.6, 0.3]))
            gb = gt_boxes[g].astype(np.float64)
            wh = np.array([gb[2] - gb[0] + 1, gb[3] - gb[1] + 1] * 2)
            for t in range(k):
                b = gb + rng.normal(0, 0.05 if t == 0 else 0.15, size=4) * wh
                b = np.round(b * 4) / 4
                b[0] = np.clip(b[0], 0, W - 2)
                b[1] = np.clip(b[1], 0, H - 2)
                b[2] = np.clip(b[2], b[0] + 1, W - 1)
                b[3] = np.clip(b[3], b[1] + 1, H - 1)
                if rng.random() < (0.7 if t == 0 else 0.5):
                    lab, sc = gt_labels[g], rng.uniform(0.3, 1.0)
                else:
                    lab, sc = rng.choice(150, p=OBJ_PRIOR) + 1, rng.uniform(0.05, 0.6)
                boxes.append(b), labels.append(lab), scores.append(sc), origin_l.append(g)
        F = q - len(boxes)
        fp_boxes = _random_boxes(rng, F, W, H).astype(np.float64)
        fp_labels = rng.choice(150, size=F, p=OBJ_PRIOR) + 1
        fp_scores = rng.uniform(0.01, 0.4, size=F)
        all_boxes = np.concatenate([np.array(boxes).reshape(-1, 4), fp_boxes])
        all_labels = np.concatenate([np.array(labels, dtype=np.int64), fp_labels])
        all_scores = np.concatenate([np.array(scores), fp_scores]).astype(np.float32)
        all_origin = np.concatenate([np.array(origin_l, dtype=np.int64), np.full(F, -1)])
        order = np.argsort(-all_scores, kind="stable")
        pred_boxes = all_boxes[order].astype(np.float32)
        pred_labels = all_labels[order].astype(np.int64)
        pred_scores, origin = all_scores[order], all_origin[order]

    nq = len(pred_boxes)
    ii, jj = np.meshgrid(np.arange(nq), np.arange(nq), indexing="ij")
    off = ii != jj
    pairs = np.stack([ii[off], jj[off]], 1).astype(np.int64)
    r = len(pairs)
    gt_pred = {(int(a), int(b)): int(p) for a, b, p in gt_rels}
    oa, ob = origin[pairs[:, 0]], origin[pairs[:, 1]]
    related = (oa >= 0) & (ob >= 0) & np.isin(oa * n + ob, gt_rels[:, 0] * n + gt_rels[:, 1])
    z = np.empty((r, 51))
    z[:, 1:] = 0.5 * np.log(PRED_PRIOR) + rng.standard_normal((r, 50))
    z[:, 0] = np.where(related, 1.0, 3.0) + rng.standard_normal(r)
    for row in np.flatnonzero(related):
        p = gt_pred[(int(oa[row]), int(ob[row]))]
        if rng.random() < 0.7:
            z[row, p] += rng.normal(3.0, 1.0)
    z = np.exp(z - z.max(1, keepdims=True))
    probs = (z / z.sum(1, keepdims=True)).astype(np.float32)
    triple = probs[:, 1:].max(1) * pred_scores[pairs[:, 0]] * pred_scores[pairs[:, 1]]
    order = np.argsort(-triple, kind="stable")
    return {
        "gt_boxes": gt_boxes,
        "gt_labels": gt_labels.astype(np.int64),
        "gt_rels": gt_rels,
        "pred_boxes": pred_boxes,
        "pred_labels": pred_labels,
        "pred_scores": pred_scores,
        "rel_pair_idxs": pairs[order],
        "rel_scores": probs[order],
    }


def zero_shot_list(workload: str, images: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The workload's 5,971 zero-shot (subject class, object class, predicate) triplets."""
    seed = WORKLOADS[workload][1]
    trip = set()
    for im in images:
        gl, gr = im["gt_labels"], im["gt_rels"]
        trip.update(zip(gl[gr[:, 0]].tolist(), gl[gr[:, 1]].tolist(), gr[:, 2].tolist()))
    ordered = sorted(trip)
    rng = np.random.default_rng([seed, 999999])
    keep = rng.random(len(ordered)) < 0.05
    out = {t for t, k in zip(ordered, keep) if k}
    while len(out) < 5971:
        out.add((int(rng.integers(1, 151)), int(rng.integers(1, 151)), int(rng.integers(1, 51))))
    return np.array(sorted(out), dtype=np.int64)


def fingerprint(images: list[dict[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for im in images:
        for k in ARRAY_KEYS:
            h.update(np.ascontiguousarray(im[k]).tobytes())
    return h.hexdigest()


# -- baseline: plain per-image re-implementation of the official algorithm ---------------------
def _intersect_2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] booleans: row i of a equals row j of b."""
    return (a[..., None] == b.T[None, ...]).all(1)


def _iou_plus_one(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    one = np.float32(1)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt + one, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    return inter / (area_a[:, None] + area_b - inter)


def _triplets(
    rels: np.ndarray, classes: np.ndarray, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    s, o, p = rels[:, 0], rels[:, 1], rels[:, 2]
    return np.column_stack((classes[s], p, classes[o])), np.column_stack((boxes[s], boxes[o]))


def _pred_to_gt(
    gt_t: np.ndarray, pred_t: np.ndarray, gt_b: np.ndarray, pred_b: np.ndarray, thr: float = 0.5
) -> list[list[int]]:
    keeps = _intersect_2d(gt_t, pred_t)
    has = keeps.any(1)
    out: list[list[int]] = [[] for _ in range(pred_b.shape[0])]
    for gi, gb, keep in zip(np.where(has)[0], gt_b[has], keeps[has]):
        cand = pred_b[keep]
        ok = (_iou_plus_one(gb[None, :4], cand[:, :4])[0] >= thr) & (
            _iou_plus_one(gb[None, 4:], cand[:, 4:])[0] >= thr
        )
        for i in np.where(keep)[0][ok]:
            out[i].append(int(gi))
    return out


def baseline_evaluate(
    images: list[dict[str, np.ndarray]], zs: np.ndarray, mode: str
) -> dict[str, Any]:
    """Official-style evaluation, one image at a time; returns the same keys as percepta."""
    names = ["R", "ngR", "zR", "ng-zR", "A_hit", "A_count"]
    lists: dict[str, dict[int, list]] = {n: {k: [] for k in KS} for n in names}
    collect = {n: {k: [[] for _ in range(NUM_PRED + 1)] for k in KS} for n in ("mR", "ng-mR")}
    ids, zids = [], []
    for idx, im in enumerate(images):
        gt_rels, gt_boxes, gt_cls = im["gt_rels"], im["gt_boxes"], im["gt_labels"]
        if len(gt_rels) == 0:
            continue
        zidx = np.where(
            _intersect_2d(
                np.column_stack((gt_cls[gt_rels[:, 0]], gt_cls[gt_rels[:, 1]], gt_rels[:, 2])), zs
            ).sum(-1)
            > 0
        )[0].tolist()
        inds, scores = im["rel_pair_idxs"], im["rel_scores"]
        if mode != "sgdet":
            in_gt = (
                (inds[:, 0] * 1024 + inds[:, 1])[:, None]
                == (gt_rels[:, 0] * 1024 + gt_rels[:, 1])[None, :]
            ).sum(-1) > 0
        if mode == "predcls":
            boxes, cls, obj_scores = gt_boxes, gt_cls, np.ones(gt_cls.shape[0])
        else:
            boxes, cls, obj_scores = im["pred_boxes"], im["pred_labels"], im["pred_scores"]
        if len(inds) == 0:
            continue
        ids.append(idx)
        m = float(gt_rels.shape[0])
        gt_t, gt_b = _triplets(gt_rels, gt_cls, gt_boxes)
        pred_rels = np.column_stack((inds, 1 + scores[:, 1:].argmax(1)))
        p_t, p_b = _triplets(pred_rels, cls, boxes)
        to_gt = _pred_to_gt(gt_t, p_t, gt_b, p_b)
        ng = obj_scores[inds].prod(1)[:, None] * scores[:, 1:]
        order = np.argsort(-ng.ravel())
        top = np.column_stack(np.unravel_index(order, ng.shape))[:100]
        ng_rels = np.column_stack((inds[top[:, 0]], top[:, 1] + 1))
        n_t, n_b = _triplets(ng_rels, cls, boxes)
        ng_to_gt = _pred_to_gt(gt_t, n_t, gt_b, n_b)
        for k in KS:
            lists["R"][k].append(len(reduce(np.union1d, to_gt[:k])) / m)
        for k in KS:
            lists["ngR"][k].append(len(reduce(np.union1d, ng_to_gt[:k])) / m)
        for key, src in (("zR", to_gt), ("ng-zR", ng_to_gt)):
            for k in KS:
                match = reduce(np.union1d, src[:k])
                if zidx:
                    ml = match.tolist() if not isinstance(match, list) else match
                    lists[key][k].append(
                        (len(zidx) + len(ml) - len(set(zidx + ml))) / float(len(zidx))
                    )
        if zidx:
            zids.append(idx)
        if mode != "sgdet":
            for k in KS:
                sel = [p for p, f in zip(to_gt, in_gt) if f]
                hit = reduce(np.union1d, sel[:k]) if sel else []
                lists["A_hit"][k].append(float(len(hit)))
                lists["A_count"][k].append(m)
        for key, src in (("mR", to_gt), ("ng-mR", ng_to_gt)):
            for k in KS:
                match = reduce(np.union1d, src[:k])
                hit, count = [0] * (NUM_PRED + 1), [0] * (NUM_PRED + 1)
                for i in range(gt_rels.shape[0]):
                    count[int(gt_rels[i, 2])] += 1
                    count[0] += 1
                for i in range(len(match)):
                    hit[int(gt_rels[int(match[i]), 2])] += 1
                    hit[0] += 1
                for p in range(NUM_PRED + 1):
                    if count[p] > 0:
                        collect[key][k][p].append(float(hit[p] / count[p]))
    res: dict[str, Any] = {}
    for key in ("R", "ngR", "zR", "ng-zR"):
        for k in KS:
            res[f"{key}@{k}"] = float(np.mean(lists[key][k]))
    per_pred: dict[str, Any] = {}
    for key in ("mR", "ng-mR"):
        per_pred[key] = {}
        for k in KS:
            rec = [float(np.mean(c)) if c else 0.0 for c in collect[key][k][1:]]
            per_pred[key][k] = rec
            res[f"{key}@{k}"] = sum(rec) / float(NUM_PRED)
    if mode != "sgdet":
        for k in KS:
            res[f"A@{k}"] = float(np.mean(lists["A_hit"][k]) / np.mean(lists["A_count"][k]))
    res["per_predicate"] = per_pred
    res["per_image"] = {
        "evaluated_image_ids": ids,
        "zeroshot_image_ids": zids,
        **{n: lists[n] for n in names if mode != "sgdet" or not n.startswith("A_")},
    }
    return res


# -- percepta ----------------------------------------------------------------------------------
def to_torch(images: list[dict[str, np.ndarray]]) -> list[tuple[dict, dict]]:
    """(pred, target) dicts of torch tensors, as a relation head and a dataset hand them over."""
    out = []
    for i, im in enumerate(images):
        t = {k: torch.from_numpy(v) for k, v in im.items()}
        out.append(
            (
                {
                    "boxes": t["pred_boxes"],
                    "labels": t["pred_labels"],
                    "scores": t["pred_scores"],
                    "rel_pairs": t["rel_pair_idxs"],
                    "rel_scores": t["rel_scores"],
                },
                {
                    "boxes": t["gt_boxes"],
                    "labels": t["gt_labels"],
                    "relations": t["gt_rels"],
                    "image_id": i,
                },
            )
        )
    return out


def percepta_evaluate(pairs: list[tuple[dict, dict]], zs: np.ndarray, mode: str) -> dict[str, Any]:
    ev = SceneGraphEvaluator(mode=mode, k=KS, num_predicates=NUM_PRED, zero_shot_triplets=zs)
    for pred, target in pairs:
        ev.update([pred], [target])
    return ev.compute()


def compare(ours: dict[str, Any], base: dict[str, Any], tol: float = 1e-12) -> list[str]:
    """Differences between the two results (metric values, per-predicate and per-image lists)."""
    diffs = []
    for k, v in base.items():
        if k in ("per_predicate", "per_image"):
            continue
        if k not in ours or not (abs(ours[k] - v) <= tol or (np.isnan(v) and np.isnan(ours[k]))):
            diffs.append(f"{k}: ours {ours.get(k)} baseline {v}")
    for sect in ("per_predicate", "per_image"):
        for key, val in base[sect].items():
            mine = ours[sect].get(key)
            if isinstance(val, dict):
                for k, lst in val.items():
                    a, b = np.asarray(mine[k], dtype=float), np.asarray(lst, dtype=float)
                    if a.shape != b.shape or (a.size and np.abs(a - b).max() > tol):
                        diffs.append(f"{sect}.{key}@{k} differs")
            elif list(mine) != list(val):
                diffs.append(f"{sect}.{key} differs")
    return diffs


def run(workload: str, num_images: int, repeats: int) -> dict[str, Any]:
    mode = WORKLOADS[workload][0]
    images = [generate_image(workload, i) for i in range(num_images)]
    zs = zero_shot_list(workload, images)
    pairs = to_torch(images)
    ours = percepta_evaluate(pairs, zs, mode)  # warm-up + correctness
    base = baseline_evaluate(images, zs, mode)
    diffs = compare(ours, base)
    t_ours, t_base = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        percepta_evaluate(pairs, zs, mode)
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        baseline_evaluate(images, zs, mode)
        t_base.append(time.perf_counter() - t0)
    ours_s = statistics.median(t_ours) / num_images
    base_s = statistics.median(t_base) / num_images
    out: dict[str, Any] = {
        "bench": f"sgg_eval_{workload}",
        "mode": mode,
        "images": num_images,
        "ours": ours_s,
        "baseline": base_s,
        "ratio": base_s / ours_s,
        "identical": not diffs,
        "machine": machine("numpy", "torch"),
    }
    if diffs:
        out["differences"] = diffs[:10]
    if num_images == WORKLOADS[workload][2]:
        fp_img, fp_zs = FINGERPRINTS[workload]
        out["fingerprint_ok"] = (
            fingerprint(images) == fp_img
            and hashlib.sha256(np.ascontiguousarray(zs).tobytes()).hexdigest() == fp_zs
        )
        out["official_values_ok"] = all(
            abs(round(ours[f"{key}@{k}"], 4) - v) < 1.5e-4
            for key, vals in OFFICIAL_VALUES[workload].items()
            for k, v in zip(KS, vals)
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="10x fewer images, one timed run (smoke test)"
    )
    ap.add_argument(
        "--repeats", type=int, default=None, help="timed runs per side (median; default 3, quick 1)"
    )
    ap.add_argument("--only", choices=sorted(WORKLOADS), default=None)
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    status = 0
    for w in sorted(WORKLOADS):
        if args.only and w != args.only:
            continue
        n = WORKLOADS[w][2] // (10 if args.quick else 1)
        res = run(w, n, repeats)
        emit(**res)
        status |= 0 if res["identical"] and res.get("fingerprint_ok", True) else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
