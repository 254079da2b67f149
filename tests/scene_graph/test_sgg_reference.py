"""SceneGraphEvaluator against a naive, loop-by-loop transcription of the metric definitions.

The reference below is written straight from the project notes (``sgg.md`` §1.2-1.7): explicit
Python loops over every prediction and every GT relation, Python sets, no shared code with
percepta. Random images stress what the vectors do not: all three modes, both box conventions,
K cuts inside the lists, exact score ties (resolved as percepta documents: first row/predicate
first), more than 100 pairs with varied object scores (the pruned top-100 search), negative
object scores (its fallback), duplicate rows and duplicate GT triplets, near-duplicate boxes.
"""

from __future__ import annotations

import numpy as np
import pytest

from percepta.scene_graph.evaluation import SceneGraphEvaluator

P = 8  # predicates
KS = (2, 10, 100)


def f32_iou(a, b, plus_one):
    one = np.float32(1 if plus_one else 0)
    a = [np.float32(v) for v in a]
    b = [np.float32(v) for v in b]
    area_a = (a[2] - a[0] + one) * (a[3] - a[1] + one)
    area_b = (b[2] - b[0] + one) * (b[3] - b[1] + one)
    iw = max(np.float32(0), min(a[2], b[2]) - max(a[0], b[0]) + one)
    ih = max(np.float32(0), min(a[3], b[3]) - max(a[1], b[1]) + one)
    inter = iw * ih
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a + area_b - inter)


def naive(images, mode, zero_shot, thr=0.5, plus_one=True):
    Z = {tuple(t) for t in zero_shot}
    lists = {n: {k: [] for k in KS} for n in ("R", "ngR", "zR", "ng-zR", "A_hit", "A_count")}
    collect = {n: {k: {p: [] for p in range(1, P + 1)} for k in KS} for n in ("mR", "ng-mR")}
    for img in images:
        gt = img["target"]
        gb, gl, rels = gt["boxes"].tolist(), gt["labels"].tolist(), gt["relations"].tolist()
        pred = img["pred"]
        if not rels or pred is None or not len(pred["rel_pairs"]):
            continue
        if mode == "predcls":
            boxes, labels, obj = gb, gl, [1.0] * len(gl)
        else:
            boxes, labels, obj = (
                pred["boxes"].tolist(),
                pred["labels"].tolist(),
                list(pred["scores"]),
            )
        pairs = pred["rel_pairs"].tolist()
        S = pred["rel_scores"]

        def matches(a, b, p):
            out = set()
            for i, (s, o, q) in enumerate(rels):
                if (
                    labels[a] == gl[s]
                    and labels[b] == gl[o]
                    and p == q
                    and f32_iou(boxes[a], gb[s], plus_one) >= np.float32(thr)
                    and f32_iou(boxes[b], gb[o], plus_one) >= np.float32(thr)
                ):
                    out.add(i)
            return out

        gc = []
        for j, (a, b) in enumerate(pairs):
            best = 1
            for c in range(2, P + 1):
                if S[j][c] > S[j][best]:
                    best = c
            gc.append((a, b, best))
        entries = []
        for j, (a, b) in enumerate(pairs):
            for c in range(1, P + 1):
                sigma = np.float32(obj[a]) * np.float32(obj[b]) * np.float32(S[j][c])
                entries.append((-float(sigma), j * P + c - 1, a, b, c))
        ng = [(a, b, c) for _, _, a, b, c in sorted(entries)[:100]]
        gt_pairs = {(s, o) for s, o, _ in rels}
        acc = [t for t in gc if (t[0], t[1]) in gt_pairs]
        zidx = {i for i, (s, o, p) in enumerate(rels) if (gl[s], gl[o], p) in Z}
        m = len(rels)
        for k in KS:
            for name, ranking in (("R", gc), ("ngR", ng)):
                hit = set().union(*[matches(*t) for t in ranking[:k]])
                lists[name][k].append(len(hit) / m)
                if zidx:
                    zname = "zR" if name == "R" else "ng-zR"
                    lists[zname][k].append(len(hit & zidx) / len(zidx))
                mname = "mR" if name == "R" else "ng-mR"
                for p in range(1, P + 1):
                    with_p = [i for i, r in enumerate(rels) if r[2] == p]
                    if with_p:
                        collect[mname][k][p].append(sum(i in hit for i in with_p) / len(with_p))
            if mode != "sgdet":
                hit = set().union(*[matches(*t) for t in acc[:k]])
                lists["A_hit"][k].append(len(hit))
                lists["A_count"][k].append(m)
    out = {}
    for k in KS:
        for name in ("R", "ngR", "zR", "ng-zR"):
            out[f"{name}@{k}"] = float(np.mean(lists[name][k])) if lists[name][k] else float("nan")
        for name in ("mR", "ng-mR"):
            per = [float(np.mean(v)) if v else 0.0 for v in collect[name][k].values()]
            out[f"{name}@{k}"] = sum(per) / P
            out[f"{name}_per_predicate@{k}"] = per
        if mode != "sgdet":
            out[f"A@{k}"] = sum(lists["A_hit"][k]) / sum(lists["A_count"][k])
    return out


def random_images(seed, mode, n_images=12):
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n_images):
        big = i in (1, 2, 4, 6)  # > 100 candidate pairs: the pruned top-100 search
        n = 12 if big else int(rng.integers(2, 13))
        xy = rng.integers(0, 60, size=(n, 2)).astype(np.float32)
        wh = rng.integers(0, 30, size=(n, 2)).astype(np.float32)
        gb = np.concatenate([xy, xy + wh], 1)
        if n > 2:  # a near-duplicate GT box with the same label
            gb[1] = gb[0] + np.float32(rng.integers(0, 3))
        gl = rng.integers(0, 3, size=n)
        gl[1] = gl[0]
        m = int(rng.integers(0, 7)) if i else 0
        rels = np.stack(
            [rng.integers(0, n, m), rng.integers(0, n, m), rng.integers(1, P + 1, m)], 1
        )
        if m >= 2:
            rels[1] = rels[0]  # duplicate triplet
        if mode == "predcls":
            q, boxes, labels, scores = n, gb, gl, np.ones(n, np.float32)
        else:
            q = n + int(rng.integers(0, 4))
            src = rng.integers(0, n, q)
            boxes = gb[src] + rng.integers(-3, 4, size=(q, 4)).astype(np.float32)
            boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
            labels = np.where(rng.random(q) < 0.8, gl[src], rng.integers(0, 3, q))
            scores = rng.choice([0.25, 0.5, 0.75, 1.0], size=q).astype(
                np.float32
            )  # ties on purpose
            if i == 3:
                scores[0] = -0.5  # negative object score: the unpruned ngR path
        all_pairs = np.array(
            [(a, b) for a in range(q) for b in range(q) if a != b] or np.zeros((0, 2)), np.int64
        )
        r = min(
            len(all_pairs),
            int(rng.integers(105, 140) if big else rng.integers(0, 60)) if i != 5 else 0,
        )
        pairs = (
            all_pairs[rng.choice(len(all_pairs), r, replace=False)]
            if r
            else np.zeros((0, 2), np.int64)
        )
        if r > 3:
            pairs[3] = pairs[0]  # duplicate row
        if big:  # continuous scores: the top-100 bound decides which entries survive
            rel_scores = rng.dirichlet(np.ones(P + 1) * 0.5, size=r).astype(np.float32)
        else:  # many exact ties
            rel_scores = (rng.integers(0, 8, size=(r, P + 1)) / 8).astype(np.float32)
        pred = {
            "boxes": boxes,
            "labels": labels,
            "scores": scores,
            "rel_pairs": pairs,
            "rel_scores": rel_scores,
        }
        images.append(
            {
                "pred": pred if i != 7 else None,
                "target": {"boxes": gb, "labels": gl, "relations": rels, "image_id": 100 + i},
            }
        )
    z = {
        (int(a), int(b), int(c)) for a, b, c in rng.integers([0, 0, 1], [3, 3, P + 1], size=(15, 3))
    }
    return images, sorted(z)


@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
@pytest.mark.parametrize("convention", ["vg", "xyxy"])
def test_matches_naive_reference(mode, convention):
    images, zs = random_images(
        {"predcls": 1, "sgcls": 2, "sgdet": 3}[mode] + (10 if convention == "xyxy" else 0), mode
    )
    ref = naive(images, mode, zs, plus_one=convention == "vg")
    ev = SceneGraphEvaluator(
        mode=mode, k=KS, num_predicates=P, zero_shot_triplets=zs, box_convention=convention
    )
    ev.update([im["pred"] for im in images], [im["target"] for im in images])
    got = ev.compute()
    assert (
        got["images"]["skipped_no_gt_relations"] >= 1
        and got["images"]["skipped_no_prediction"] == 1
    )
    for key, value in ref.items():
        if "_per_predicate@" in key:
            name, k = key.split("_per_predicate@")
            np.testing.assert_allclose(
                got["per_predicate"][name][int(k)], value, atol=1e-12, err_msg=key
            )
        elif np.isnan(value):
            assert np.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, abs=1e-12), key


def test_iou_threshold_uses_plus_one_pixel_convention():
    """IoU exactly 0.5 with inclusive pixels (a match), 0.444 without (no match)."""
    target = {
        "boxes": np.array([[0, 0, 9, 9], [20, 20, 29, 29]], np.float32),
        "labels": np.array([1, 2]),
        "relations": np.array([[0, 1, 1]]),
        "image_id": 1,
    }
    pred = {
        "boxes": np.array([[0, 0, 9, 4], [20, 20, 29, 29]], np.float32),
        "labels": np.array([1, 2]),
        "scores": np.array([1.0, 1.0], np.float32),
        "rel_pairs": np.array([[0, 1]]),
        "rel_scores": np.array([[0.9, 0.1, 0.0]], np.float32),
    }
    for convention, expected in (("vg", 1.0), ("xyxy", 0.0)):
        ev = SceneGraphEvaluator(mode="sgdet", num_predicates=2, box_convention=convention)
        ev.update([pred], [target])
        assert ev.compute()["R@20"] == expected, convention


def test_background_column_is_ignored():
    """Background is the arg-max but the best non-background predicate is still used."""
    target = {
        "boxes": np.array([[0, 0, 9, 9], [20, 20, 29, 29]], np.float32),
        "labels": np.array([1, 2]),
        "relations": np.array([[0, 1, 2]]),
        "image_id": 1,
    }
    pred = {
        "rel_pairs": np.array([[0, 1]]),
        "rel_scores": np.array([[0.97, 0.01, 0.02]], np.float32),
    }
    ev = SceneGraphEvaluator(mode="predcls", num_predicates=2)
    ev.update([pred], [target])
    out = ev.compute()
    assert (
        out["R@20"] == 1.0 and out["A@20"] == 1.0 and out["mR@20"] == 0.5
    )  # predicate 1 absent: counts 0


@pytest.mark.parametrize("r", [1, 60, 100, 101, 150, 2000])
def test_top100_search_equals_full_stable_sort(r):
    """The pruned no-graph-constraint top-100 equals a full stable sort of all R x P scores."""
    from percepta.scene_graph.matching import _ng_top

    rng = np.random.default_rng(r)
    for trial in range(6):
        npred = 50 if trial % 2 else 7
        if trial < 2:
            scores = rng.dirichlet(np.ones(npred + 1) * 0.3, size=r).astype(np.float32)
        else:  # exact ties everywhere
            scores = (rng.integers(0, 5, size=(r, npred + 1)) / 4).astype(np.float32)
        pair = rng.choice([0.0, 0.1, 0.5, 0.9, 1.0], size=r).astype(np.float32)
        if trial == 5:
            pair[0] = -1.0
        if trial == 4:
            pair = rng.random(r).astype(np.float32)
            scores = rng.random((r, npred + 1)).astype(np.float32) ** 4
        flat = (pair[:, None] * scores[:, 1:]).ravel()
        ref = np.argsort(-flat, kind="stable")[:100]
        rows, preds = _ng_top(pair, scores)
        np.testing.assert_array_equal(rows, ref // npred)
        np.testing.assert_array_equal(preds, ref % npred + 1)
