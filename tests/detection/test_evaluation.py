"""COCO AP family (faster-coco-eval) vs pycocotools and the official vectors; the
DetectionEvaluator metric; ``percepta score detection``; bad result files."""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from percepta import cli
from percepta.detection.evaluation import (
    AP_KEYS,
    CocoEvaluatorOptions,
    DetectionEvaluator,
    cli_score,
    evaluate_results,
    format_table,
)
from percepta.errors import DataError, NotAvailableError
from percepta.registry import EVALUATORS

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "olrp"
GT_PATH, DT_PATH = FIX / "gt.json", FIX / "detections.json"
EXPECTED = json.loads((FIX / "expected.json").read_text())["expected"]
LRP_STATS = dict(
    zip(EXPECTED["lrp_error_cocoeval"]["stats_names"], EXPECTED["lrp_error_cocoeval"]["stats"])
)
CLI_KEYS = list(AP_KEYS) + ["oLRP", "oLRP_loc", "oLRP_fp", "oLRP_fn", "per_class"]


def _nan(x):
    return float("nan") if x is None or x == -1 else x


def _pycocotools(gt_dict, dets, img_ids=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = copy.deepcopy(gt_dict)
        cg.createIndex()
        cd = cg.loadRes(copy.deepcopy(dets))
        ev = COCOeval(cg, cd, "bbox")
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]
    per_class = {}
    for k, cid in enumerate(ev.params.catIds):
        p = prec[:, :, k, 0, -1]
        per_class[cid] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    return [_nan(float(s)) for s in ev.stats], per_class


def _random_case(seed: int, n_images: int = 30):
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for img_id in range(1, n_images + 1):
        images.append({"id": img_id, "width": 500, "height": 400})
        for _ in range(rng.poisson(3)):
            w, h = np.exp(rng.uniform(np.log(5), np.log(250), 2))
            x, y = rng.uniform(0, 500 - w), rng.uniform(0, 400 - h)
            cat = int(rng.integers(1, 4))  # categories 1-3 have GT, 4 only detections
            crowd = int(rng.random() < 0.08)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h * rng.uniform(0.7, 1.0),
                    "iscrowd": crowd,
                }
            )
            if img_id % 7 == 0:
                continue  # images with GT but no detections
            for _ in range(rng.integers(0, 4)):
                j = rng.normal(0, 0.1, 4)
                dc = cat if rng.random() < 0.85 else int(rng.integers(1, 5))
                dets.append(
                    {
                        "image_id": img_id,
                        "category_id": dc,
                        "bbox": [x + j[0] * w, y + j[1] * h, w * np.exp(j[2]), h * np.exp(j[3])],
                        "score": float(rng.random()),
                    }
                )
        for _ in range(rng.integers(0, 3)):
            dets.append(
                {
                    "image_id": img_id,
                    "category_id": int(rng.integers(1, 5)),
                    "bbox": [float(rng.uniform(0, 400)), float(rng.uniform(0, 300)), 40.0, 30.0],
                    "score": float(rng.random()),
                }
            )
    cats = [{"id": c, "name": f"cls{c}"} for c in range(1, 5)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


# ---------------------------------------------------------------------------------------------
# numbers


def test_reference_vectors_ap_and_olrp():
    m = evaluate_results(str(GT_PATH), str(DT_PATH))
    for key, exp in zip(AP_KEYS, EXPECTED["pycocotools_official"]["stats"]):
        assert m[key] == pytest.approx(exp, abs=1e-12), key
    np.testing.assert_allclose(
        [m[k] for k in AP_KEYS], EXPECTED["faster_coco_eval"]["stats"], atol=1e-12
    )
    for key, name in (
        ("oLRP", "oLRP"),
        ("oLRP_loc", "oLRP_Loc"),
        ("oLRP_fp", "oLRP_FP"),
        ("oLRP_fn", "oLRP_FN"),
        ("oLRP_s", "oLRP_small"),
        ("oLRP_m", "oLRP_medium"),
        ("oLRP_l", "oLRP_large"),
    ):
        assert m[key] == pytest.approx(LRP_STATS[name], abs=1e-9), key
    per_ap = EXPECTED["pycocotools_official"]["per_class_AP"]
    pc = EXPECTED["lrp_error_cocoeval"]["per_class_K_A_M"]
    assert [r["category_id"] for r in m["per_class"]] == [1, 2, 3, 4]
    for k, row in enumerate(m["per_class"]):
        exp_ap = _nan(per_ap[str(row["category_id"])])
        assert (math.isnan(row["AP"]) and math.isnan(exp_ap)) or row["AP"] == pytest.approx(
            exp_ap, abs=1e-12
        )
        for key, arr in (("oLRP", "olrp"), ("oLRP_loc", "olrp_loc"), ("threshold", "lrp_opt_thr")):
            exp = _nan(pc[arr][k][0][2])
            assert (math.isnan(row[key]) and math.isnan(exp)) or row[key] == pytest.approx(
                exp, abs=1e-9
            )
    assert m["per_class"][3]["name"] == "delta_dt_only" and math.isnan(m["per_class"][3]["oLRP"])


@pytest.mark.parametrize("seed", [0, 1])
def test_random_case_identical_to_pycocotools(seed):
    gt, dets = _random_case(seed)
    ref_stats, ref_pc = _pycocotools(gt, dets)
    m = evaluate_results(gt, dets)
    np.testing.assert_allclose([m[k] for k in AP_KEYS], ref_stats[:12], rtol=0, atol=1e-12)
    ours_pc = {r["category_id"]: r["AP"] for r in m["per_class"]}
    np.testing.assert_allclose(
        [ours_pc[c] for c in sorted(ref_pc)], [ref_pc[c] for c in sorted(ref_pc)], atol=1e-12
    )
    assert math.isnan(ours_pc[4])  # no GT
    # and on an image subset (what DetectionEvaluator does with the images it saw)
    subset = list(range(1, 31, 2))
    ref_sub, _ = _pycocotools(gt, dets, img_ids=subset)
    m_sub = evaluate_results(gt, dets, img_ids=subset)
    np.testing.assert_allclose([m_sub[k] for k in AP_KEYS], ref_sub[:12], atol=1e-12)
    assert m_sub["AP"] != m["AP"]


def test_empty_results_give_zero_ap_and_olrp_one():
    m = evaluate_results(str(GT_PATH), [])
    assert all(m[k] == 0.0 for k in AP_KEYS)
    assert m["oLRP"] == 1.0 and m["oLRP_fn"] == 1.0 and math.isnan(m["oLRP_loc"])
    assert [r["oLRP"] for r in m["per_class"][:3]] == [1.0, 1.0, 1.0]


def test_olrp_can_be_switched_off():
    m = evaluate_results(str(GT_PATH), str(DT_PATH), olrp=False)
    assert "oLRP" not in m and "oLRP" not in m["per_class"][0]
    assert m["AP"] == pytest.approx(EXPECTED["pycocotools_official"]["stats"][0], abs=1e-12)


# ---------------------------------------------------------------------------------------------
# CLI and table


def test_cli_json_reproduces_official_numbers(capsys):
    assert (
        cli.main(["score", "detection", "--gt", str(GT_PATH), "--pred", str(DT_PATH), "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert list(out) == CLI_KEYS
    assert out["AP"] == pytest.approx(EXPECTED["pycocotools_official"]["stats"][0], abs=1e-12)
    assert out["oLRP"] == pytest.approx(LRP_STATS["oLRP"], abs=1e-9)
    assert out["oLRP_fp"] == pytest.approx(LRP_STATS["oLRP_FP"], abs=1e-9)
    gamma, delta = out["per_class"][2], out["per_class"][3]
    assert gamma["oLRP"] == 1.0 and gamma["oLRP_loc"] is None and gamma["threshold"] is None
    assert delta["AP"] is None and delta["oLRP"] is None  # NaN -> null


def test_cli_table_with_per_class(capsys):
    ns = argparse.Namespace(gt=str(GT_PATH), pred=str(DT_PATH), json=False, per_class=True)
    assert cli_score(ns) == 0
    out = capsys.readouterr().out
    assert "0.211" in out and "0.827" in out  # AP and oLRP
    assert "alpha" in out and "gamma_gt_only" in out and "(no GT)" in out
    assert "nan" not in out.lower() and "-1.0" not in out
    ns.per_class = False
    cli_score(ns)
    assert "alpha" not in capsys.readouterr().out


def test_format_table_handles_missing_values():
    m = evaluate_results(str(GT_PATH), [])
    table = format_table(m)
    assert "nan" not in table.lower() and "1.000" in table


def test_cli_empty_list_file(tmp_path, capsys):
    p = tmp_path / "none.json"
    p.write_text("[]")
    assert cli.main(["score", "detection", "--gt", str(GT_PATH), "--pred", str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["AP"] == 0.0 and out["oLRP"] == 1.0


def _dets():
    return json.loads(DT_PATH.read_text())


def _bad(kind):
    d = _dets()
    if kind == "unknown_image":
        d[2]["image_id"] = 999
    elif kind == "unknown_category":
        d[2]["category_id"] = 77
    elif kind == "nan_box":
        d[2]["bbox"][1] = float("nan")
    elif kind == "inf_box":
        d[2]["bbox"][2] = float("inf")
    elif kind == "negative_size":
        d[2]["bbox"][3] = -4.0
    elif kind == "nan_score":
        d[2]["score"] = float("nan")
    elif kind == "missing_key":
        del d[2]["score"]
    elif kind == "short_bbox":
        d[2]["bbox"] = d[2]["bbox"][:3]
    elif kind == "string_image_id":
        d[2]["image_id"] = "1"
    elif kind == "not_an_object":
        d[2] = "oops"
    return json.dumps(d)  # writes NaN / Infinity tokens, which json.loads accepts


RECORD_CASES = {
    "unknown_image": "image_id 999",
    "unknown_category": "category_id 77",
    "nan_box": "NaN",
    "inf_box": "infinite",
    "negative_size": "negative",
    "nan_score": "score",
    "missing_key": "'score'",
    "short_bbox": "4 numbers",
    "string_image_id": "image_id",
    "not_an_object": "object",
}


@pytest.mark.parametrize("kind", sorted(RECORD_CASES))
def test_bad_records_name_the_record_and_file(kind, tmp_path):
    p = tmp_path / f"{kind}.json"
    p.write_text(_bad(kind))
    ns = argparse.Namespace(gt=str(GT_PATH), pred=str(p), json=True, per_class=False)
    with pytest.raises(DataError) as e:
        cli_score(ns)
    msg = str(e.value)
    assert str(p) in msg and "detection [2]" in msg and RECORD_CASES[kind] in msg, msg
    if kind != "not_an_object":
        assert "category_id=" in msg and "image_id=" in msg


@pytest.mark.parametrize(
    "content, needle",
    [
        ("", "empty"),
        ("   \n", "empty"),
        ('{"image_id": 1}', "list"),
        ("[{", "invalid JSON at line 1 col 3"),
        (None, "truncated"),
        (b"\xff\xfe[", "UTF-8"),
    ],
)
def test_bad_files(tmp_path, capsys, content, needle):
    p = tmp_path / "res.json"
    if content is None:  # truncated real file
        content = DT_PATH.read_text()[:700]
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert cli.main(["score", "detection", "--gt", str(GT_PATH), "--pred", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(p) in err and needle in err and "Traceback" not in err


def test_unknown_image_or_category_subsets():
    with pytest.raises(DataError, match="image ids \\[99\\]"):
        evaluate_results(str(GT_PATH), [], img_ids=[1, 99])
    with pytest.raises(DataError, match="category ids \\[9\\]"):
        evaluate_results(str(GT_PATH), [], cat_ids=[1, 9])


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        evaluate_results(str(tmp_path / "nope.json"), [])
    with pytest.raises(DataError, match="not found"):
        evaluate_results(str(GT_PATH), str(tmp_path / "nope.json"))


def test_bad_ground_truth(tmp_path):
    gt = json.loads(GT_PATH.read_text())
    gt["annotations"][5]["bbox"] = [1, 2, -3, 4]
    with pytest.raises(DataError, match=r"annotations\[5\].*negative"):
        evaluate_results(gt, [])
    gt = json.loads(GT_PATH.read_text())
    gt["annotations"][0]["category_id"] = 99
    with pytest.raises(DataError, match=r"annotations\[0\].*category_id"):
        evaluate_results(gt, [])
    with pytest.raises(DataError, match="'images'"):
        evaluate_results({"annotations": [], "categories": []}, [])


def test_ground_truth_defaults_do_not_mutate_input():
    gt = json.loads(GT_PATH.read_text())
    del gt["annotations"][3]["id"]  # some annotations with ids, some without -> clear error
    with pytest.raises(DataError, match=r"annotations\[3\].*'id'"):
        evaluate_results(gt, [])
    gt = json.loads(GT_PATH.read_text())
    for a in gt["annotations"]:  # no ids at all and no iscrowd=0: the COCO defaults are filled in
        del a["id"]
        if a["iscrowd"] == 0:
            del a["iscrowd"]
    before = copy.deepcopy(gt)
    m = evaluate_results(gt, str(DT_PATH))
    assert gt == before
    assert m["AP"] == pytest.approx(EXPECTED["pycocotools_official"]["stats"][0], abs=1e-12)
    assert m["oLRP"] == pytest.approx(LRP_STATS["oLRP"], abs=1e-9)
    gt = json.loads(GT_PATH.read_text())
    for a in gt["annotations"]:  # 0-based ids: id 0 means "unmatched" inside the COCO tools
        a["id"] -= 1
    m0 = evaluate_results(gt, str(DT_PATH))
    np.testing.assert_allclose(
        [m0[k] for k in AP_KEYS], EXPECTED["pycocotools_official"]["stats"], atol=1e-12
    )


# ---------------------------------------------------------------------------------------------
# DetectionEvaluator (torchmetrics)


def _preds_targets(image_ids, cat_ids=(1, 2, 3, 4)):
    dets = _dets()
    label = {c: i for i, c in enumerate(cat_ids)}
    preds, targets = [], []
    for img in image_ids:
        rows = [d for d in dets if d["image_id"] == img]
        b = torch.tensor([d["bbox"] for d in rows], dtype=torch.float64).reshape(-1, 4)
        preds.append(
            {
                "boxes": torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1),
                "scores": torch.tensor([d["score"] for d in rows], dtype=torch.float64),
                "labels": torch.tensor([label[d["category_id"]] for d in rows], dtype=torch.int64),
            }
        )
        targets.append({"image_id": torch.tensor(img), "boxes": torch.zeros(0, 4)})
    return preds, targets


def test_evaluator_reproduces_reference_vectors():
    ev = DetectionEvaluator(str(GT_PATH))
    p, t = _preds_targets(range(1, 9))
    ev.update(p[:3], t[:3])
    ev.update(p[3:], t[3:])
    m = ev.compute()
    np.testing.assert_allclose(
        [m[k] for k in AP_KEYS], EXPECTED["pycocotools_official"]["stats"], atol=1e-9
    )
    assert m["oLRP"] == pytest.approx(LRP_STATS["oLRP"], abs=1e-9)
    assert DetectionEvaluator.primary_metric == "AP"
    assert "alpha" in ev.format_table(m)
    ev.reset()
    ev.update(p[:1], t[:1])
    assert ev.compute()["AP"] != m["AP"]


def test_evaluator_counts_only_seen_images_including_empty_ones():
    gt = json.loads(GT_PATH.read_text())
    p, t = _preds_targets([1, 2, 3])
    p[2] = {
        "boxes": torch.zeros(0, 4),
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.int64),
    }
    ev = DetectionEvaluator(gt)
    ev.update(p, t)
    m = ev.compute()
    rows = [d for d in _dets() if d["image_id"] in (1, 2)]
    ref = evaluate_results(gt, rows, img_ids=[1, 2, 3])
    assert m["AP"] == pytest.approx(ref["AP"], abs=1e-9)
    assert m["AR100"] == pytest.approx(ref["AR100"], abs=1e-9)
    assert m["oLRP"] == pytest.approx(ref["oLRP"], abs=1e-9)
    without_3 = evaluate_results(gt, rows, img_ids=[1, 2])
    assert without_3["AR100"] != pytest.approx(m["AR100"])  # image 3's GT counted as missed


def test_evaluator_label_mapping_and_class_names():
    cat_ids = [3, 1, 4, 2]
    ev = DetectionEvaluator(str(GT_PATH), cat_ids=cat_ids, class_names=["g", "a", "d", "b"])
    p, t = _preds_targets(range(1, 9), cat_ids=cat_ids)
    ev.update(p, t)
    m = ev.compute()
    assert m["AP"] == pytest.approx(EXPECTED["pycocotools_official"]["stats"][0], abs=1e-9)
    assert [r["name"] for r in m["per_class"]] == ["a", "b", "g", "d"]  # sorted by category id


def test_evaluator_subset_of_categories():
    ev = DetectionEvaluator(str(GT_PATH), cat_ids=[1, 2])
    p, t = _preds_targets(range(1, 9))
    for d in p:  # keep only labels 0/1 (categories 1, 2)
        keep = d["labels"] < 2
        for k in d:
            d[k] = d[k][keep]
    ev.update(p, t)
    m = ev.compute()
    assert [r["category_id"] for r in m["per_class"]] == [1, 2]
    per_ap = EXPECTED["pycocotools_official"]["per_class_AP"]
    assert m["AP"] == pytest.approx((per_ap["1"] + per_ap["2"]) / 2, abs=1e-12)


def test_evaluator_rejects_bad_input():
    ev = DetectionEvaluator(str(GT_PATH))
    p, t = _preds_targets([1])
    with pytest.raises(DataError, match="image_id 42"):
        ev.update(p, [{"image_id": 42}])
    bad = dict(p[0], labels=p[0]["labels"] + 10)
    with pytest.raises(DataError, match="label"):
        ev.update([bad], t)
    bad = dict(p[0], scores=p[0]["scores"] * float("nan"))
    with pytest.raises(DataError, match="NaN"):
        ev.update([bad], t)
    with pytest.raises(NotAvailableError):
        DetectionEvaluator(str(GT_PATH), iou_type="segm")
    with pytest.raises(DataError, match="cat_ids"):
        DetectionEvaluator(str(GT_PATH), cat_ids=[1, 9])


def test_registered_as_coco_evaluator():
    assert EVALUATORS.options("coco") is CocoEvaluatorOptions
    assert CocoEvaluatorOptions().name == "coco"
    # dataset facts come from dataset.meta (no cat_ids / class_names attributes needed)
    ds = SimpleNamespace(
        coco_gt=json.loads(GT_PATH.read_text()),
        meta={
            "category_ids": [1, 2, 3, 4],
            "num_classes": 4,
            "class_names": ["alpha", "beta", "gamma", "delta"],
        },
    )
    ev = EVALUATORS.build("coco", CocoEvaluatorOptions(olrp=False), ds)
    assert isinstance(ev, DetectionEvaluator) and ev.olrp is False
    p, t = _preds_targets(range(1, 9))
    ev.update(p, t)
    m = ev.compute()
    assert "oLRP" not in m and m["per_class"][2]["name"] == "gamma"


def test_follows_the_evaluator_protocol():
    """percepta.evaluator: an Evaluator (torchmetrics Metric) with a declared primary metric,
    one ``format_table(metrics)`` (no ``table`` / ``summary`` aliases), a builder that takes
    ``options=None`` as the defaults."""
    from torchmetrics import Metric

    from percepta.evaluator import Evaluator, primary_of

    ds = SimpleNamespace(
        coco_gt=json.loads(GT_PATH.read_text()),
        meta={
            "category_ids": [1, 2, 3, 4],
            "num_classes": 4,
            "class_names": ["alpha", "beta", "gamma", "delta"],
        },
    )
    ev = EVALUATORS.build("coco", None, ds)
    assert isinstance(ev, Evaluator) and isinstance(ev, Metric)
    assert primary_of(ev) == ("AP", True)
    assert ev.olrp is CocoEvaluatorOptions().olrp is True
    assert not hasattr(ev, "table") and not hasattr(ev, "summary")
    p, t = _preds_targets(range(1, 9))
    ev.update(p, t)
    m = ev.compute()
    text = ev.format_table(m)
    assert text == format_table(m) and "gamma" in text and "oLRP" in text
    with pytest.raises(DataError, match="coco_gt"):
        EVALUATORS.build("coco", None, None)


def test_states_are_cat_reduced_so_a_sync_merges_ranks():
    """torchmetrics' own sync path with a stand-in all_gather: rank 0 receives rank 1's states."""
    rank1 = DetectionEvaluator(str(GT_PATH))
    p1, t1 = _preds_targets([2, 4, 6])
    rank1.update(p1, t1)
    other = {torch.float64: torch.cat(rank1.detections), torch.int64: torch.cat(rank1.image_ids)}
    calls = []

    def fake_all_gather(tensor, group=None):
        calls.append(tensor.dtype)
        return [tensor, other[tensor.dtype]]

    rank0 = DetectionEvaluator(
        str(GT_PATH), dist_sync_fn=fake_all_gather, distributed_available_fn=lambda: True
    )
    p0, t0 = _preds_targets([1, 3, 5, 7])
    rank0.update(p0[:2], t0[:2])
    rank0.update(p0[2:], t0[2:])
    m = rank0.compute()
    assert sorted(map(str, calls)) == ["torch.float64", "torch.int64"]
    ref = evaluate_results(
        str(GT_PATH), [d for d in _dets() if d["image_id"] != 8], img_ids=range(1, 8)
    )
    for k in AP_KEYS + ("oLRP", "oLRP_fn"):
        assert m[k] == pytest.approx(ref[k], abs=1e-9), k


_DDP_WORKER = textwrap.dedent("""
    import json, os, sys, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[2])
    from test_evaluation_ddp_data import preds_targets
    from percepta.detection.evaluation import DetectionEvaluator
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    ev = DetectionEvaluator(sys.argv[3])
    p, t = preds_targets([1, 3, 5, 7] if rank == 0 else [2, 4, 6])  # rank 1 never sees image 8
    ev.update(p, t)
    m = ev.compute()
    if rank == 0:
        json.dump({k: v for k, v in m.items() if k != "per_class"}, open(sys.argv[1], "w"))
    dist.destroy_process_group()
""")


@pytest.mark.dist
@pytest.mark.slow
def test_ddp_two_processes_gather_detections_and_images(tmp_path):
    # the data helper is written next to the worker so the child processes need no test imports
    helper = textwrap.dedent(f"""
        import json, torch
        DETS = json.load(open({str(DT_PATH)!r}))
        def preds_targets(ids):
            P, T = [], []
            for img in ids:
                rows = [d for d in DETS if d["image_id"] == img]
                b = torch.tensor([d["bbox"] for d in rows], dtype=torch.float64).reshape(-1, 4)
                P.append({{"boxes": torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1),
                          "scores": torch.tensor([d["score"] for d in rows], dtype=torch.float64),
                          "labels": torch.tensor([d["category_id"] - 1 for d in rows])}})
                T.append({{"image_id": img}})
            return P, T
    """)
    (tmp_path / "test_evaluation_ddp_data.py").write_text(helper)
    worker = tmp_path / "worker.py"
    worker.write_text(_DDP_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "metrics.json"
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(worker), str(out), str(tmp_path), str(GT_PATH)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    logs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    m = json.loads(out.read_text())
    ref = evaluate_results(
        str(GT_PATH), [d for d in _dets() if d["image_id"] != 8], img_ids=range(1, 8)
    )
    for k in AP_KEYS + ("oLRP", "oLRP_loc"):
        assert m[k] == pytest.approx(ref[k], abs=1e-9), k
    full = evaluate_results(str(GT_PATH), str(DT_PATH))
    assert m["AR100"] != pytest.approx(full["AR100"])  # image 8 was not evaluated
