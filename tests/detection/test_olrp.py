"""Optimal LRP: official LRP-Error vectors, an independent pycocotools-matching reference on random
cases, and hand-computed special cases."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from percepta.detection.coco_results import load_ground_truth, load_results
from percepta.detection.olrp import COCO_AREA_RANGES, COCO_MAX_DETS, coco_box_iou, optimal_lrp

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "olrp"


def _run(gt_dict, dets, img_ids=None, cat_ids=None, **kw):
    gt = load_ground_truth(gt_dict)
    rows = load_results(dets, gt)
    return optimal_lrp(
        gt.ann_image_ids,
        gt.ann_cat_ids,
        gt.ann_boxes,
        gt.ann_areas,
        gt.ann_crowd,
        rows[:, 0].astype(np.int64),
        rows[:, 6].astype(np.int64),
        rows[:, 1:5],
        rows[:, 5],
        img_ids=gt.image_ids if img_ids is None else img_ids,
        cat_ids=gt.cat_ids if cat_ids is None else cat_ids,
        **kw,
    )


def _arr(nested):
    return np.array(nested, dtype=object).astype(float)  # None -> nan


# ---------------------------------------------------------------------------------------------
# official LRP-Error vectors


def test_matches_official_per_class_arrays():
    expected = json.loads((FIX / "expected.json").read_text())["expected"]["lrp_error_cocoeval"]
    pc = expected["per_class_K_A_M"]
    res = _run(str(FIX / "gt.json"), str(FIX / "detections.json"))
    assert res.cat_ids == pc["catIds"]
    assert list(res.area_labels) == pc["areaRngLbl"] and list(res.max_dets) == pc["maxDets"]
    for name, ours in (
        ("olrp", res.olrp),
        ("olrp_loc", res.loc),
        ("olrp_fp", res.fp),
        ("olrp_fn", res.fn),
        ("lrp_opt_thr", res.threshold),
    ):
        exp = _arr(pc[name])
        assert ours.shape == exp.shape
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(exp), err_msg=name)
        np.testing.assert_allclose(ours, exp, rtol=0, atol=1e-9, err_msg=name)  # NaNs compare equal


def test_matches_official_summary_stats():
    expected = json.loads((FIX / "expected.json").read_text())["expected"]["lrp_error_cocoeval"]
    stats = dict(zip(expected["stats_names"], expected["stats"]))
    res = _run(str(FIX / "gt.json"), str(FIX / "detections.json"))
    s = res.summary("all")
    assert s["oLRP"] == pytest.approx(stats["oLRP"], abs=1e-9)
    assert s["oLRP_loc"] == pytest.approx(stats["oLRP_Loc"], abs=1e-9)
    assert s["oLRP_fp"] == pytest.approx(stats["oLRP_FP"], abs=1e-9)
    assert s["oLRP_fn"] == pytest.approx(stats["oLRP_FN"], abs=1e-9)
    for area in ("small", "medium", "large"):
        assert res.summary(area)["oLRP"] == pytest.approx(stats[f"oLRP_{area}"], abs=1e-9)
    # component means run over different class sets: oLRP/FN over {1,2,3}, Loc/FP over {1,2}
    o = res.olrp[:, 0, 2]
    assert s["oLRP"] == pytest.approx(np.mean(o[o > -1]))
    assert s["oLRP_loc"] == pytest.approx(np.mean(res.loc[:2, 0, 2]))


# ---------------------------------------------------------------------------------------------
# independent reference: pycocotools' own matching (evaluateImg) + a plain loop over thresholds


def _random_case(seed: int, n_images: int = 24):
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for img_id in range(1, n_images + 1):
        images.append({"id": img_id, "width": 400, "height": 300})
        boxes = []
        for _ in range(rng.poisson(4)):
            w, h = np.exp(rng.uniform(np.log(4), np.log(180), 2))
            x, y = rng.uniform(0, 400 - w), rng.uniform(0, 300 - h)
            cat = int(rng.choice([1, 1, 2, 2, 3, 4]))  # category 4: GT only; 5: detections only
            crowd = int(rng.random() < 0.12)
            boxes.append((x, y, w, h, cat, crowd))
            if rng.random() < 0.15:  # identical twin GT -> exact IoU ties between GTs
                boxes.append((x, y, w, h, cat, 0))
        if img_id == 1:
            boxes.append((10.0, 10.0, 32.0, 32.0, 1, 0))  # area exactly 32^2: small and medium
        for x, y, w, h, cat, crowd in boxes:
            area = 32.0 * 32.0 if (w, h) == (32.0, 32.0) else w * h * rng.uniform(0.6, 1.0)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": cat,
                    "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                    "area": area,
                    "iscrowd": crowd,
                }
            )
            for _ in range(rng.integers(0, 4) + 2 * crowd):
                j = rng.normal(0, 0.15, 4)
                dc = cat if (rng.random() < 0.85 and cat != 4) else int(rng.integers(1, 6))
                dets.append(
                    {
                        "image_id": img_id,
                        "category_id": dc,
                        "bbox": [
                            round(x + j[0] * w, 2),
                            round(y + j[1] * h, 2),
                            round(w * np.exp(j[2]), 2),
                            round(h * np.exp(j[3]), 2),
                        ],
                        "score": round(float(rng.random()), 2),
                    }
                )  # 2 decimals -> score ties
        for _ in range(rng.integers(0, 5)):
            w, h = np.exp(rng.uniform(np.log(2), np.log(150), 2))
            dets.append(
                {
                    "image_id": img_id,
                    "category_id": int(rng.integers(1, 6)),
                    "bbox": [
                        round(rng.uniform(0, 300), 2),
                        round(rng.uniform(0, 200), 2),
                        round(w, 2),
                        round(h, 2),
                    ],
                    "score": round(float(rng.random()), 2),
                }
            )
    # one image with 110 detections of category 1: exercises the per-image maxDets=100 cut
    for i in range(110):
        dets.append(
            {
                "image_id": 2,
                "category_id": 1,
                "bbox": [float(i % 50) * 5, 20.0, 30.0, 40.0],
                "score": round(float(rng.random()), 3),
            }
        )
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, 6)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _reference_lrp(gt_dict, dets, tau=0.5):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = copy.deepcopy(gt_dict)
        cg.createIndex()
        cd = cg.loadRes(copy.deepcopy(dets))
        ev = COCOeval(cg, cd, "bbox")
        ev.params.iouThrs = np.array([tau])
        ev.evaluate()
    p = ev.params
    K, A, M, I = len(p.catIds), len(p.areaRng), len(p.maxDets), len(p.imgIds)
    out = {k: np.full((K, A, M), -1.0) for k in ("olrp", "loc", "fp", "fn", "thr")}
    for k in range(K):
        for a in range(A):
            recs = [
                e for e in (ev.evalImgs[k * A * I + a * I + i] for i in range(I)) if e is not None
            ]
            for m, max_det in enumerate(p.maxDets):
                if not recs:
                    continue
                npig = sum(int(np.count_nonzero(e["gtIgnore"] == 0)) for e in recs)
                if npig == 0:
                    continue
                scores, matched, ignored, ious = [], [], [], []
                for e in recs:
                    for j, dt_id in enumerate(e["dtIds"][:max_det]):
                        gt_id = int(e["dtMatches"][0, j])
                        scores.append(e["dtScores"][j])
                        matched.append(gt_id > 0)
                        ignored.append(bool(e["dtIgnore"][0, j]))
                        if gt_id > 0 and not e["dtIgnore"][0, j]:
                            g = cg.anns[gt_id]
                            ious.append(
                                float(
                                    mask_utils.iou(
                                        [cd.anns[dt_id]["bbox"]], [g["bbox"]], [g["iscrowd"]]
                                    )[0, 0]
                                )
                            )
                        else:
                            ious.append(0.0)
                order = np.argsort(-np.array(scores), kind="mergesort")
                tp = fp = 0
                loc = 0.0
                best = None
                for i in order:
                    if matched[i] and not ignored[i]:
                        tp += 1
                        loc += 1.0 - ious[i]
                    elif not matched[i] and not ignored[i]:
                        fp += 1
                    fn = npig - tp
                    lrp = (loc / (1 - tau) + fp + fn) / (tp + fp + fn)
                    if best is None or lrp < best[0]:
                        best = (
                            lrp,
                            loc / tp if tp else np.nan,
                            fp / (tp + fp) if tp + fp else np.nan,
                            fn / npig,
                            scores[i],
                            tp,
                        )
                if best is None or tp == 0:
                    vals = (1.0, np.nan, np.nan, 1.0, np.nan)
                else:
                    vals = best[:5]
                for key, v in zip(("olrp", "loc", "fp", "fn", "thr"), vals):
                    out[key][k, a, m] = v
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_independent_reference_on_random_cases(seed):
    gt_dict, dets = _random_case(seed)
    ref = _reference_lrp(gt_dict, dets)
    res = _run(gt_dict, dets)
    for key, ours in (
        ("olrp", res.olrp),
        ("loc", res.loc),
        ("fp", res.fp),
        ("fn", res.fn),
        ("thr", res.threshold),
    ):
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref[key]), err_msg=key)
        np.testing.assert_allclose(ours, ref[key], rtol=0, atol=1e-12, err_msg=key)
    # the case exercises what it is meant to: crowd regions, GT-only and detection-only classes
    assert res.olrp[4].max() == -1  # detections only
    assert (res.olrp == 1.0).any() and np.isnan(res.loc).any()  # classes/ranges without a TP
    assert any(a["iscrowd"] for a in gt_dict["annotations"])


def test_random_case_on_an_image_subset():
    gt_dict, dets = _random_case(5)
    keep = [i for i in range(1, 25) if i % 3]
    sub_gt = dict(
        gt_dict,
        images=[im for im in gt_dict["images"] if im["id"] in keep],
        annotations=[a for a in gt_dict["annotations"] if a["image_id"] in keep],
    )
    sub_dets = [d for d in dets if d["image_id"] in keep]
    ref = _run(sub_gt, sub_dets)
    res = _run(gt_dict, dets, img_ids=keep)
    np.testing.assert_allclose(res.olrp, ref.olrp, atol=1e-12)
    np.testing.assert_allclose(res.threshold, ref.threshold, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# hand-computed cases


def _gt(anns, n_images=1, cats=(1, 2)):
    return {
        "images": [{"id": i + 1, "width": 200, "height": 200} for i in range(n_images)],
        "annotations": [dict(id=i + 1, **a) for i, a in enumerate(anns)],
        "categories": [{"id": c, "name": f"c{c}"} for c in cats],
    }


def _ann(img, cat, box, crowd=0, area=None):
    return {
        "image_id": img,
        "category_id": cat,
        "bbox": list(box),
        "area": box[2] * box[3] if area is None else area,
        "iscrowd": crowd,
    }


def _det(img, cat, box, score):
    return {"image_id": img, "category_id": cat, "bbox": list(box), "score": score}


def test_single_tp_and_fp_by_hand():
    gt = _gt([_ann(1, 1, (0, 0, 100, 100))])
    # TP with IoU 0.8 (score .8) and a higher-scored background FP
    dets = [_det(1, 1, (0, 0, 100, 80), 0.8), _det(1, 1, (150, 150, 40, 40), 0.9)]
    res = _run(gt, dets)
    # prefixes: [FP] -> (0 + 1 + 1) / 2 = 1 ; [FP, TP] -> (0.2/0.5 + 1 + 0) / 2 = 0.7
    assert res.olrp[0, 0, 2] == pytest.approx(0.7)
    assert res.loc[0, 0, 2] == pytest.approx(0.2)
    assert res.fp[0, 0, 2] == pytest.approx(0.5)
    assert res.fn[0, 0, 2] == 0.0
    assert res.threshold[0, 0, 2] == 0.8
    # maxDets=1 keeps only the FP: no TP -> oLRP 1, FN 1, Loc/FP/threshold NaN
    assert res.olrp[0, 0, 0] == 1.0 and res.fn[0, 0, 0] == 1.0
    assert np.isnan([res.loc[0, 0, 0], res.fp[0, 0, 0], res.threshold[0, 0, 0]]).all()
    # category 2: no GT, no detections -> -1 everywhere
    assert (res.olrp[1] == -1).all() and (res.threshold[1] == -1).all()


def test_crowd_absorbs_several_detections_as_ignored():
    gt = _gt([_ann(1, 1, (0, 0, 50, 50)), _ann(1, 1, (100, 100, 90, 90), crowd=1)])
    dets = [
        _det(1, 1, (0, 0, 50, 50), 0.5),  # perfect TP
        _det(1, 1, (110, 110, 30, 30), 0.9),  # inside the crowd region
        _det(1, 1, (150, 120, 30, 30), 0.7),
    ]  # also inside: the crowd stays free
    res = _run(gt, dets)
    # crowd detections are ignored, so after the TP: (0 + 0 + 0) / 1 = 0
    assert res.olrp[0, 0, 2] == 0.0 and res.fp[0, 0, 2] == 0.0
    assert res.threshold[0, 0, 2] == 0.5
    # sanity: without the crowd flag they would be false positives
    gt2 = _gt([_ann(1, 1, (0, 0, 50, 50)), _ann(1, 1, (100, 100, 90, 90))])
    res2 = _run(gt2, dets)
    assert res2.olrp[0, 0, 2] > 0.0


def test_area_ranges_ignore_out_of_range_unmatched_detections():
    gt = _gt([_ann(1, 1, (0, 0, 20, 20)), _ann(1, 1, (100, 100, 60, 60))])
    dets = [
        _det(1, 1, (0, 0, 20, 18), 0.9),  # TP on the small GT (IoU 0.9)
        _det(1, 1, (100, 0, 99, 99), 0.8),
    ]  # large unmatched detection
    res = _run(gt, dets)
    a_small, a_med = COCO_AREA_RANGES.index(("small", 0.0, 1024.0)), 2
    # small: the large FP is outside the range -> ignored; the medium GT is ignored
    assert res.olrp[0, a_small, 2] == pytest.approx(0.1 / 0.5)
    assert res.fp[0, a_small, 2] == 0.0
    # medium: only the 60x60 GT counts, never detected; the small TP matches an ignored GT
    assert res.olrp[0, a_med, 2] == 1.0 and np.isnan(res.loc[0, a_med, 2])
    # all: TP, FP, one FN -> first prefix (0.2 + 0 + 1) / 2 = 0.6 ; second (0.2 + 1 + 1) / 3
    assert res.olrp[0, 0, 2] == pytest.approx(0.6)
    assert res.fn[0, 0, 2] == 0.5 and res.threshold[0, 0, 2] == 0.9


def test_equal_iou_goes_to_the_later_gt_like_pycocotools():
    # det1 has IoU exactly 0.6 with A and with B; pycocotools' scan keeps the later GT (B), so
    # det2 (sitting on B) finds B taken and becomes a false positive.
    gt = _gt([_ann(1, 1, (0, 0, 10, 10)), _ann(1, 1, (5, 0, 10, 10))])
    dets = [_det(1, 1, (2.5, 0, 10, 10), 0.9), _det(1, 1, (5, 0, 10, 10), 0.8)]
    res = _run(gt, dets)
    ref = _reference_lrp(gt, dets)
    np.testing.assert_allclose(res.olrp, ref["olrp"], atol=1e-12)
    # one TP (IoU 0.6), FN 1 after det1: (0.4/0.5 + 0 + 1) / 2 = 0.9 ; det2 as FP: 2.8/3
    assert res.olrp[0, 0, 2] == pytest.approx(0.9)
    assert res.threshold[0, 0, 2] == 0.9


def test_no_detections_gives_olrp_one():
    gt = _gt([_ann(1, 1, (0, 0, 20, 20)), _ann(1, 2, (50, 50, 40, 40))])
    res = _run(gt, [])
    assert (res.olrp[:, 0, :] == 1.0).all() and np.isnan(res.loc[:, 0, :]).all()
    s = res.summary()
    assert s["oLRP"] == 1.0 and s["oLRP_fn"] == 1.0 and np.isnan(s["oLRP_loc"])


def test_max_dets_keeps_top_per_image_and_category():
    gt = _gt([_ann(1, 1, (0, 0, 20, 20)), _ann(2, 1, (0, 0, 20, 20))], n_images=2)
    dets = [
        _det(1, 1, (100, 100, 20, 20), 0.9),
        _det(1, 1, (0, 0, 20, 20), 0.8),
        _det(2, 1, (0, 0, 20, 20), 0.7),
    ]
    res = _run(gt, dets, max_dets=(1, 100))
    # maxDets 1: image 1 keeps only its FP; image 2 its TP -> best prefix (0 + 1 + 1)/3 at 0.7
    assert res.olrp[0, 0, 0] == pytest.approx(2 / 3) and res.threshold[0, 0, 0] == 0.7
    # maxDets 100: FP, TP, TP -> (0 + 1 + 0) / 3
    assert res.olrp[0, 0, 1] == pytest.approx(1 / 3)


def test_coco_box_iou_matches_pycocotools():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(3)
    d = np.c_[rng.uniform(0, 50, (200, 2)), rng.uniform(0, 40, (200, 2))]
    g = np.c_[rng.uniform(0, 50, (200, 2)), rng.uniform(0, 40, (200, 2))]
    crowd = rng.random(200) < 0.3
    ours = coco_box_iou(d, g, crowd)
    ref = np.array(
        [
            mask_utils.iou([d[i].tolist()], [g[i].tolist()], [int(crowd[i])])[0, 0]
            for i in range(200)
        ]
    )
    # same operation order -> bit-identical where measured; asserted to 1e-15 absolute (IoU is
    # in [0, 1]: a few float64 ulps), enough for matching thresholds like IoU >= 0.5
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-15)
    assert (ours > 0).sum() > 20


def test_default_max_dets_and_ranges_are_coco():
    assert COCO_MAX_DETS == (1, 10, 100)
    assert [r[0] for r in COCO_AREA_RANGES] == ["all", "small", "medium", "large"]
