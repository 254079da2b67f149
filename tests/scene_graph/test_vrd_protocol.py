"""The VRD protocol (Lu et al., ECCV 2016): reference values, traps, evaluator, triplet files, CLI.

Reference: ``tests/fixtures/vrd_eval/first200.json`` (the authors' MATLAB functions under Octave,
on their released predictions for the first 200 test images; see the PROVENANCE.md there).
Everything compared with it is an integer (hit counts, GT counts) or a ratio of integers, so the
comparisons are exact. The small cases are built by hand; their answers are worked out in the
docstrings, from the rules, not from the code.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from percepta import config
from percepta.cli import main
from percepta.components import build_evaluator
from percepta.errors import DataError
from percepta.scene_graph.evaluation import SceneGraphEvaluator
from percepta.scene_graph.triplet_io import (
    align,
    parse_triplet_document,
    read_triplet_file,
    write_triplet_file,
)
from percepta.scene_graph.vrd_protocol import VRDEvaluator, gt_denominator, vrd_recall

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "vrd_eval" / "first200.json"
REF = json.loads(FIXTURE.read_text())
GT, PRED, EXP = REF["ground_truth"], REF["predictions"], REF["expected"]
INPUT = {
    "predicate": "predicate_det",
    "phrase": "relationship_det",
    "relationship": "relationship_det",
}
TASK_KEYS = [f"{t}{z}" for t in ("predicate", "phrase", "relationship") for z in ("", "_zeroshot")]


# -- the reference values ----------------------------------------------------------------------


@pytest.mark.parametrize("key", TASK_KEYS)
def test_first200_reproduces_the_official_numbers_exactly(key):
    task = key.removesuffix("_zeroshot")
    zs = key.endswith("_zeroshot")
    r = vrd_recall(GT, PRED[INPUT[task]], ks=(50, 100), task=task, zero_shot=zs)
    assert r["num_gt"] == EXP["num_gt"]["zeroshot" if zs else "all"]
    per_gt = EXP["per_image_num_gt_zeroshot" if zs else "per_image_num_gt"]
    assert r["per_image_num_gt"].tolist() == per_gt
    for k in (50, 100):
        assert r["per_image_tp"][k].tolist() == EXP["per_image_tp"][key][str(k)], (key, k)
        assert r["tp"][k] == EXP["tp_total"][key][str(k)]
        assert r["recall"][k] == EXP["recall"][key][str(k)]  # a ratio of ints: exact
        assert float(f"{100 * r['recall'][k]:.2f}") == EXP["recall_percent_2dp"][key][str(k)]


def test_zero_shot_triplet_list_equals_the_per_row_flags():
    """The flags of the fixture are a function of the triplet (checked here), so the list of
    zero-shot triplets restricts the same GT rows."""
    rows = [(tuple(lab), z) for g in GT for lab, z in zip(g["labels"], g["zeroshot"])]
    zs = sorted({lab for lab, z in rows if z})
    assert not {lab for lab, z in rows if not z} & set(zs)
    for task in ("predicate", "relationship"):
        r = vrd_recall(GT, PRED[INPUT[task]], task=task, zero_shot=np.array(zs))
        assert r["tp"][100] == EXP["tp_total"][f"{task}_zeroshot"]["100"]
        assert r["num_gt"] == EXP["num_gt"]["zeroshot"]


def test_rows_are_sorted_per_image_with_ties_kept_in_input_order():
    """Shuffle every image's predictions, then put the rows of each tied group back in their
    original relative order: a stable sort by conf restores the stored order exactly, so the
    reference hits must come out unchanged. (The relationship_det confs have exact ties, but on
    these 200 images their order happens not to change any hit count, so stability itself is
    checked by the hand-built case below.)"""
    rng = np.random.default_rng(0)
    confs = [np.asarray(p["confs"]) for p in PRED["relationship_det"]]
    assert sum(int((c[1:] == c[:-1]).sum()) for c in confs) > 100  # the trap is in the data
    shuffled = []
    for p, c in zip(PRED["relationship_det"], confs):
        perm = rng.permutation(len(c))
        for value in np.unique(c):  # tied rows: same slots, original relative order
            slots = np.flatnonzero(c[perm] == value)
            perm[slots] = np.sort(perm[slots])
        shuffled.append({k: [v[i] for i in perm] for k, v in p.items()})
    assert any(s["confs"] != p["confs"] for s, p in zip(shuffled, PRED["relationship_det"]))
    for task in ("phrase", "relationship"):
        r = vrd_recall(GT, shuffled, task=task)
        for k in (50, 100):
            assert r["per_image_tp"][k].tolist() == EXP["per_image_tp"][task][str(k)]


# -- hand-built cases --------------------------------------------------------------------------


def _img(rows, confs=None, zeroshot=None):
    """rows: (subject, predicate, object, sub_box, obj_box)."""
    out = {
        "labels": [[s, p, o] for s, p, o, _, _ in rows],
        "sub_boxes": [list(b) for *_, b, _ in rows],
        "obj_boxes": [list(b) for *_, b in rows],
    }
    if confs is not None:
        out["confs"] = list(confs)
    if zeroshot is not None:
        out["zeroshot"] = list(zeroshot)
    return out


A, B = [0, 0, 9, 9], [20, 20, 29, 29]


def test_stable_sort_keeps_tied_rows_in_input_order():
    """Rows with the same conf, K = 1: only the first in input order is kept. With 20 rows and
    ties at every level, the first of the top group (row 2, conf 2) is the hit; an unstable
    sort (numpy's default quicksort keeps row 3 first here, on this machine) or a reversed one
    (``argsort(c)[::-1]``: row 17) loses it."""
    gt = [_img([(1, 2, 3, A, B)])]
    hit, miss = (1, 2, 3, A, B), (1, 2, 4, A, B)
    assert vrd_recall(gt, [_img([hit, miss], [0.5, 0.5])], ks=(1,))["tp"][1] == 1
    assert vrd_recall(gt, [_img([miss, hit], [0.5, 0.5])], ks=(1,))["tp"][1] == 0
    confs = [1, 1, 2, 2, 1, 1, 1, 2, 0, 1, 0, 1, 2, 1, 1, 2, 1, 2, 0, 1]
    rows = [hit if i == 2 else miss for i in range(len(confs))]
    assert vrd_recall(gt, [_img(rows, [float(c) for c in confs])], ks=(1,))["tp"][1] == 1


def test_duplicate_gt_rows_each_need_their_own_prediction():
    gt = [_img([(1, 2, 3, A, B), (1, 2, 3, A, B)])]
    one = vrd_recall(gt, [_img([(1, 2, 3, A, B)], [0.9])], ks=(10,))
    assert (one["tp"][10], one["num_gt"], one["recall"][10]) == (1, 2, 0.5)
    two = vrd_recall(gt, [_img([(1, 2, 3, A, B)] * 2, [0.9, 0.8])], ks=(10,))
    assert two["recall"][10] == 1.0


def test_a_tie_goes_to_the_lowest_gt_index_and_a_prediction_falls_back():
    """Inclusive IoUs: p1 = [0,0,9,9] has IoU 100 / 200 = 0.5 with both g0 = [0,0,9,19] and
    g1 = [0,0,19,9]; p2 = g0 has IoU 1 with g0 and 100 / 300 with g1. If p1 (higher conf) takes
    g0 (lowest index on the tie), p2 has nothing left: 1 hit. Taking g1 would give 2.
    Fallback: q2 = [0,0,9,17] has IoU 1 with g0' = [0,0,9,17] (matched first by q1 = g0') and
    180 / 200 = 0.9 with g1' = [0,0,9,19]: it falls back to g1' (2 hits)."""
    g0, g1, p1 = [0, 0, 9, 19], [0, 0, 19, 9], [0, 0, 9, 9]
    gt = [_img([(1, 2, 3, g0, g0), (1, 2, 3, g1, g1)])]
    pred = [_img([(1, 2, 3, p1, p1), (1, 2, 3, g0, g0)], [0.9, 0.8])]
    assert vrd_recall(gt, pred, ks=(2,))["tp"][2] == 1
    h0, h1 = [0, 0, 9, 17], [0, 0, 9, 19]
    gt = [_img([(1, 2, 3, h0, h0), (1, 2, 3, h1, h1)])]
    pred = [_img([(1, 2, 3, h0, h0), (1, 2, 3, h0, h0)], [0.9, 0.8])]
    assert vrd_recall(gt, pred, ks=(2,))["tp"][2] == 2


def test_disjoint_boxes_are_not_candidates_even_when_iw_times_ih_is_positive():
    """[0,0,9,9] vs [20,20,29,29]: iw = ih = -10, iw * ih = 100 would be an IoU of 1 without
    the official iw > 0 and ih > 0 test."""
    gt = [_img([(1, 2, 3, A, A)])]
    assert vrd_recall(gt, [_img([(1, 2, 3, B, B)], [1.0])], ks=(1,))["tp"][1] == 0


def test_inclusive_pixels_versus_continuous_xyxy():
    """[0,0,2,0] vs [1,0,3,0]: inclusive widths 3, heights 1, intersection 2 x 1: IoU 2 / 4 =
    0.5, a hit. Continuous: heights 0, so no intersection: a miss."""
    a, b = [0, 0, 2, 0], [1, 0, 3, 0]
    gt, pred = [_img([(1, 2, 3, a, a)])], [_img([(1, 2, 3, b, b)], [1.0])]
    assert vrd_recall(gt, pred, ks=(1,), box_convention="vrd")["tp"][1] == 1
    assert vrd_recall(gt, pred, ks=(1,), box_convention="xyxy")["tp"][1] == 0


def test_phrase_uses_the_union_box_relationship_both_boxes():
    """GT subject [0,0,9,9], object [10,0,19,9] (union [0,0,19,9]). Prediction [0,0,3,9] and
    [16,0,19,9]: each IoU 40 / 100 = 0.4 < 0.5 (relationship miss), same union box (phrase hit)."""
    gt = [_img([(1, 2, 3, [0, 0, 9, 9], [10, 0, 19, 9])])]
    pred = [_img([(1, 2, 3, [0, 0, 3, 9], [16, 0, 19, 9])], [1.0])]
    assert vrd_recall(gt, pred, ks=(1,), task="relationship")["tp"][1] == 0
    assert vrd_recall(gt, pred, ks=(1,), task="phrase")["tp"][1] == 1
    wrong_predicate = [_img([(1, 5, 3, [0, 0, 9, 9], [10, 0, 19, 9])], [1.0])]
    assert vrd_recall(gt, wrong_predicate, ks=(1,), task="phrase")["tp"][1] == 0


def test_top_k_is_per_image_and_recall_is_pooled():
    """Image 0: its hit is ranked 3rd (conf 0.7) behind two misses; image 1: 2 GT, one hit at
    conf 0.1. At K = 2 image 0 has 0 hits although its hit outscores everything of image 1;
    recall pools: K = 2 -> 1 / 3, K = 3 -> 2 / 3 (not the mean of per-image recalls, 1/2)."""
    gt = [_img([(1, 2, 3, A, B)]), _img([(4, 5, 6, A, B), (4, 5, 7, A, B)])]
    pred = [
        _img([(9, 9, 9, A, B), (9, 9, 8, A, B), (1, 2, 3, A, B)], [0.9, 0.8, 0.7]),
        _img([(4, 5, 6, A, B)], [0.1]),
    ]
    r = vrd_recall(gt, pred, ks=(2, 3))
    assert r["per_image_tp"][2].tolist() == [0, 1] and r["per_image_tp"][3].tolist() == [1, 1]
    assert r["recall"] == {2: 1 / 3, 3: 2 / 3}


def test_images_without_predictions_or_gt():
    """No prediction for an image: 0 hits (the official code handles it; with no prediction
    anywhere it crashes on ``recall(end)`` of an empty vector; here: recall 0). An image
    without GT adds nothing to either sum. No GT anywhere: NaN (0 / 0)."""
    gt = [_img([(1, 2, 3, A, B)]), _img([]), _img([(1, 2, 3, A, B)])]
    pred = [
        None,
        _img([(1, 2, 3, A, B)], [1.0]),
        {"labels": [], "sub_boxes": [], "obj_boxes": [], "confs": []},
    ]
    r = vrd_recall(gt, pred, ks=(50,))
    assert (r["tp"][50], r["num_gt"], r["recall"][50]) == (0, 2, 0.0)
    assert np.isnan(vrd_recall([_img([])], [None])["recall"][50])


def test_zero_shot_restricts_only_the_ground_truth():
    """GT row 0 is seen (triplet 1-2-3), row 1 zero-shot (1-2-4). The top prediction hits row
    0: for zero-shot it is a false positive that still takes the K = 1 slot."""
    gt = [_img([(1, 2, 3, A, B), (1, 2, 4, A, B)], zeroshot=[False, True])]
    pred = [_img([(1, 2, 3, A, B), (1, 2, 4, A, B)], [0.9, 0.8])]
    r = vrd_recall(gt, pred, ks=(1, 2), zero_shot=True)
    assert r["num_gt"] == 1 and r["recall"] == {1: 0.0, 2: 1.0}
    assert vrd_recall(gt, pred, ks=(1, 2), zero_shot=[[1, 2, 4]])["recall"] == {1: 0.0, 2: 1.0}
    with pytest.raises(DataError, match="zeroshot"):
        vrd_recall([_img([(1, 2, 3, A, B)])], [None], zero_shot=True)


def test_matlab_length_denominator():
    """MATLAB's length() of an n x 3 matrix is max(n, 3): GT counts 1, 0, 2, 4 -> 3 + 0 + 3 + 4
    = 10 instead of 7. The hits do not change."""
    assert gt_denominator([1, 0, 2, 4], "rows") == 7
    assert gt_denominator([1, 0, 2, 4], "matlab_length") == 10
    gt = [_img([(1, 2, 3, A, B)])]
    pred = [_img([(1, 2, 3, A, B)], [1.0])]
    assert vrd_recall(gt, pred, ks=(1,), gt_count="matlab_length")["recall"][1] == 1 / 3
    with pytest.raises(ValueError, match="gt_count"):
        gt_denominator([1], "length")


def test_bad_inputs_are_one_line_data_errors():
    bad_box = _img([(1, 2, 3, [5, 0, 0, 9], B)], [1.0])
    with pytest.raises(DataError, match=r"image 0: 'sub_boxes' row 0"):
        vrd_recall([_img([])], [bad_box])
    with pytest.raises(DataError, match="confs"):
        vrd_recall([_img([])], [_img([(1, 2, 3, A, B)], [float("nan")])])
    with pytest.raises(DataError, match="1 GT images but 2"):
        vrd_recall([_img([])], [None, None])


# -- the evaluator -----------------------------------------------------------------------------


def _dict_sample():
    """SGDet, P = 2. GT boxes b0, b1, b2 (far apart), labels 0, 1, 2; relations (0 -1-> 1) and
    (1 -1-> 2). Predicted boxes = GT, scores 0.9, 0.8, 0.5; rows (0,1), (1,2), (2,0) with
    predicate scores [bg, p1, p2] = [.1,.7,.2], [.1,.3,.6], [0,.9,.1].
    One predicate per pair: (0,p1,1) .9*.8*.7 = .504 hit, (2,p1,0) .5*.9*.9 = .405 miss,
    (1,p2,2) .8*.5*.6 = .24 miss -> R@1 = R@5 = 1/2.
    Two per pair adds (0,p2,1) .144, (1,p1,2) .8*.5*.3 = .12 (hit, 5th), (2,p2,0) .045:
    R@1 = 1/2, R@5 = 1. Zero-shot triplet (subject 1, object 2, predicate 1) = GT relation 1:
    zR@5 = 0 (one per pair), 1 (two per pair).
    PredCls (object scores 1): .9 miss, .7 hit, .6 miss -> R@1 = 0, R@5 = 1/2."""
    boxes = torch.tensor([[0.0, 0, 9, 9], [20, 20, 29, 29], [40, 0, 49, 9]])
    target = {
        "boxes": boxes,
        "labels": torch.tensor([0, 1, 2]),
        "relations": torch.tensor([[0, 1, 1], [1, 2, 1]]),
        "image_id": 0,
    }
    pred = {
        "boxes": boxes.clone(),
        "labels": torch.tensor([0, 1, 2]),
        "scores": torch.tensor([0.9, 0.8, 0.5]),
        "rel_pairs": torch.tensor([[0, 1], [1, 2], [2, 0]]),
        "rel_scores": torch.tensor([[0.1, 0.7, 0.2], [0.1, 0.3, 0.6], [0.0, 0.9, 0.1]]),
    }
    return pred, target


@pytest.mark.parametrize(
    ("mode", "per_pair", "expected"),
    [
        ("sgdet", 1, {"relationship_R@1": 0.5, "relationship_R@5": 0.5, "phrase_R@5": 0.5,
                      "relationship_zeroshot_R@5": 0.0}),
        ("sgdet", 2, {"relationship_R@1": 0.5, "relationship_R@5": 1.0, "phrase_R@5": 1.0,
                      "relationship_zeroshot_R@5": 1.0}),
        ("predcls", 1, {"predicate_R@1": 0.0, "predicate_R@5": 0.5}),
    ],
)  # fmt: skip
def test_evaluator_on_percepta_dicts(mode, per_pair, expected):
    ev = VRDEvaluator(
        mode=mode, k=(1, 5), num_predicates=2, zero_shot_triplets=[[1, 2, 1]],
        predicates_per_pair=per_pair, primary_metric="R@5",
    )  # fmt: skip
    pred, target = _dict_sample()
    ev.update([pred], [target])
    out = ev.compute()
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key
    assert out["num_gt"] == 2 and out["num_gt_zeroshot"] == 1
    assert ev.primary_metric == ("predicate_R@5" if mode == "predcls" else "relationship_R@5")
    with pytest.raises(DataError, match="given twice"):
        ev.update([pred], [target])


def test_evaluator_on_the_fixture_and_its_table():
    for task, mode in (("predicate", "predcls"), ("relationship", "sgdet")):
        ev = VRDEvaluator(mode=mode, zero_shot=True)
        ev.update_triplets(list(range(100)), GT[:100], PRED[INPUT[task]][:100])
        ev.update_triplets(list(range(100, 200)), GT[100:], PRED[INPUT[task]][100:])
        out = ev.compute()
        keys = [
            k
            for k in TASK_KEYS
            if k.startswith(("predicate",) if mode == "predcls" else ("phrase", "relationship"))
        ]
        for key in keys:
            for k in (50, 100):
                assert out[f"{key}_R@{k}"] == EXP["recall"][key][str(k)]
                assert out["per_image"]["tp"][key][k].tolist() == EXP["per_image_tp"][key][str(k)]
        assert out["images"] == {"seen": 200, "without_gt": 9, "without_prediction": sum(
            not p["labels"] for p in PRED[INPUT[task]])}  # fmt: skip
        table = ev.format_table(out)
        for key in keys:
            name = key.replace("_zeroshot", " zero-shot")
            line = next(ln for ln in table.splitlines() if ln.startswith(name + " "))
            got = line[len(name) :].split()
            assert got == [f"{EXP['recall_percent_2dp'][key][k]:.2f}" for k in ("50", "100")]


def test_built_through_the_engine_switch():
    cfg = config.load(None, ["evaluator.name=scene_graph", "evaluator.protocol=vrd", "evaluator.mode=sgdet", "evaluator.k=[1,5]", "evaluator.primary_metric=R@5"])  # fmt: skip
    dataset = SimpleNamespace(meta={"predicate_names": ["__background__", "on", "near"]})
    ev = build_evaluator(cfg, dataset)
    assert isinstance(ev, VRDEvaluator) and ev.primary_metric == "relationship_R@5"
    assert ev.num_predicates == 2
    pred, target = _dict_sample()
    ev.update([pred], [target])
    first = ev.compute()
    assert first["relationship_R@5"] == 0.5
    ev.reset()
    ev.update([pred], [target])  # the same id again after reset is fine
    assert ev.compute()["relationship_R@5"] == 0.5
    default = build_evaluator(config.load(None, ["evaluator.name=scene_graph"]), dataset)
    assert isinstance(default, SceneGraphEvaluator)
    with pytest.raises(DataError, match="protocol"):
        build_evaluator(config.load(None, ["evaluator.name=scene_graph", "evaluator.protocol=x"]), dataset)  # fmt: skip
    with pytest.raises(DataError, match="primary_metric"):
        build_evaluator(config.load(None, ["evaluator.name=scene_graph", "evaluator.protocol=vrd", "evaluator.primary_metric=mR@100"]), dataset)  # fmt: skip


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric VRDEvaluator")
def test_evaluator_empty_inputs_give_nan_not_a_crash():
    ev = VRDEvaluator(num_predicates=2)
    out = ev.compute()
    assert np.isnan(out["relationship_R@100"]) and out["images"]["seen"] == 0
    empty_t = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
               "relations": torch.zeros(0, 3, dtype=torch.int64), "image_id": 7}  # fmt: skip
    empty_p = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
               "scores": torch.zeros(0), "rel_pairs": torch.zeros(0, 2, dtype=torch.int64),
               "rel_scores": torch.zeros(0, 3)}  # fmt: skip
    ev.update([empty_p], [empty_t])
    out = ev.compute()
    assert np.isnan(out[ev.primary_metric]) and out["images"]["without_gt"] == 1
    assert isinstance(ev.format_table(out), str)


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        ev = VRDEvaluator(mode="sgdet", zero_shot=True)
        lo, hi = (0, 120) if rank == 0 else (120, 200)  # contiguous: the gathered order is kept
        ev.update_triplets(list(range(lo, hi)), GT[lo:hi], PRED["relationship_det"][lo:hi])
        Path(out_dir, f"rank{rank}.pkl").write_bytes(pickle.dumps(ev.compute()))
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (POSIX)")
def test_two_gloo_processes_give_the_reference_numbers(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_ddp_worker, args=(r, str(tmp_path / "init"), str(tmp_path))) for r in range(2)]  # fmt: skip
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=120)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    for rank in (0, 1):
        out = pickle.loads((tmp_path / f"rank{rank}.pkl").read_bytes())
        for key in ("phrase", "relationship_zeroshot"):
            assert out[f"{key}_R@100"] == EXP["recall"][key]["100"]
        assert out["per_image"]["tp"]["relationship"][50].tolist() == EXP["per_image_tp"]["relationship"]["50"]  # fmt: skip
        assert out["per_image"]["image_ids"].tolist() == list(range(200))


# -- triplet files and the command line --------------------------------------------------------


def _records(images, scores: bool):
    """first200 images as triplet-file records, label base 1 (as in the .mat files), written
    here by hand (independently of ``triplet_io.write_triplet_file``)."""
    out = []
    for j, img in enumerate(images):
        rows = []
        for r, (lab, sb, ob) in enumerate(zip(img["labels"], img["sub_boxes"], img["obj_boxes"])):
            row = {"subject": {"label": lab[0], "box": sb}, "object": {"label": lab[2], "box": ob},
                   "predicate": lab[1]}  # fmt: skip
            if scores:
                row["score"] = img["confs"][r]
            elif img["zeroshot"][r]:
                row["zeroshot"] = True
            rows.append(row)
        out.append({"image_id": f"img{j}", "triplets": rows})
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vrd")
    gt = {"protocol": "vrd", "label_base": 1, "images": _records(GT, scores=False)}
    (d / "gt.json").write_text(json.dumps(gt))
    for task, src in (("predicate", "predicate_det"), ("relationship", "relationship_det")):
        recs = [r for r in _records(PRED[src], scores=True) if r["triplets"]]  # absent = none
        doc = {"protocol": "vrd", "task": task, "label_base": 1, "images": recs}
        (d / f"{task}.json").write_text(json.dumps(doc))
        doc["ground_truth"] = gt["images"]
        (d / f"{task}_embedded.json").write_text(json.dumps(doc))
    zs = sorted({tuple(lab) for g in GT for lab, z in zip(g["labels"], g["zeroshot"]) if z})
    (d / "zs.json").write_text(json.dumps({"label_base": 1, "triplets": [list(t) for t in zs]}))
    return d


def _table_row(out: str, name: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
    return line[len(name) :].split()


def test_cli_table_from_files(files, capsys):
    args = ["score", "scene-graph", "--protocol", "vrd"]
    assert main([*args, str(files / "relationship.json"), "--gt", str(files / "gt.json")]) == 0
    out = capsys.readouterr().out
    assert "200 images, 1525 GT relationships (251 zero-shot)" in out
    for key in ("phrase", "relationship", "phrase_zeroshot", "relationship_zeroshot"):
        want = [f"{EXP['recall_percent_2dp'][key][k]:.2f}" for k in ("50", "100")]
        assert _table_row(out, key.replace("_zeroshot", " zero-shot")) == want, key
    assert "predicate" not in out
    assert main([*args, str(files / "predicate_embedded.json")]) == 0  # GT inside the file
    out = capsys.readouterr().out
    assert _table_row(out, "predicate") == ["47.41", "47.41"]
    assert _table_row(out, "predicate zero-shot") == ["14.34", "14.34"]


def test_cli_json_zero_shot_file_and_gt_count(files, capsys):
    base = ["score", "scene-graph", "--protocol", "vrd", "--json"]
    assert main([*base, str(files / "relationship_embedded.json")]) == 0
    flags = json.loads(capsys.readouterr().out)
    for key in ("phrase", "relationship_zeroshot"):
        assert flags[f"{key}_R@50"] == EXP["recall"][key]["50"]
    assert flags["per_image"]["image_ids"][:2] == ["img0", "img1"]
    assert flags["tp"]["relationship"]["100"] == EXP["tp_total"]["relationship"]["100"]
    gt_plain = json.loads((files / "gt.json").read_text())
    for rec in gt_plain["images"]:  # no flags: the zero-shot file must bring them back
        for t in rec["triplets"]:
            t.pop("zeroshot", None)
    (files / "gt_plain.json").write_text(json.dumps(gt_plain))
    zs_args = ["--gt", str(files / "gt_plain.json"), "--zero-shot", str(files / "zs.json")]
    assert main([*base, str(files / "relationship.json"), *zs_args]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in listed.items() if "R@" in k} == {k: v for k, v in flags.items() if "R@" in k}  # fmt: skip
    assert (
        main([*base, str(files / "relationship.json"), "--gt", str(files / "gt_plain.json")]) == 0
    )
    assert "relationship_zeroshot_R@50" not in json.loads(capsys.readouterr().out)
    assert main([*base, str(files / "predicate_embedded.json"), "--gt-count", "matlab_length"]) == 0
    quirk = json.loads(capsys.readouterr().out)
    n = [len(g["labels"]) for g in GT]
    den = sum(max(x, 3) for x in n if x)  # MATLAB length() of each n x 3 GT matrix
    assert quirk["denominators"]["all"] == den == 1547
    assert quirk["predicate_R@100"] == 723 / den


def test_triplet_file_round_trip_and_base_shift(files, tmp_path):
    res = read_triplet_file(files / "relationship_embedded.json")
    assert res.label_base == 1 and res.task == "relationship" and res.ground_truth is not None
    j = 0
    np.testing.assert_array_equal(
        res.images[j].labels, np.asarray(PRED["relationship_det"][j]["labels"]) - 1
    )
    np.testing.assert_array_equal(res.ground_truth.images[2].zeroshot, GT[2]["zeroshot"])
    path = write_triplet_file(
        tmp_path / "w.json", res.images, res.image_ids, label_base=0,
        ground_truth=(res.ground_truth.images, res.ground_truth.image_ids),
    )  # fmt: skip
    again = read_triplet_file(path)
    assert again.label_base == 0 and again.image_ids == res.image_ids
    for a, b in zip(again.images, res.images):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.sub_boxes, b.sub_boxes)
        np.testing.assert_array_equal(a.confs, b.confs)
    np.testing.assert_array_equal(again.ground_truth.images[2].zeroshot, GT[2]["zeroshot"])


GOOD_ROW = {"subject": {"label": 1, "box": [0, 0, 5, 5]}, "object": {"label": 2, "box": [1, 1, 6, 6]},
            "predicate": 3, "score": 0.5}  # fmt: skip


def _bad(**change):
    row = json.loads(json.dumps(GOOD_ROW))
    for path, value in change.items():
        *head, last = path.split("__")
        d = row
        for h in head:
            d = d[h]
        if value is None:
            d.pop(last)
        else:
            d[last] = value
    return row


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (_bad(score="high"), r"triplets\[1\]: 'score' must be a finite number"),
        (_bad(score=None), r"triplets\[1\]: 'score' must be a finite number"),
        (_bad(subject__box=[0, 0, 5]), r"triplets\[1\]: subject.box must be 4 numbers"),
        (_bad(object__box=[6, 0, 5, 5]), r"triplets\[1\]: object.box .* x2 < x1"),
        (_bad(subject__box=[0, 0, "5", 5]), r"triplets\[1\]: subject.box must be 4 numbers"),
        (_bad(subject__label=1.5), r"triplets\[1\]: subject.label must be an integer"),
        (_bad(predicate=True), r"triplets\[1\]: 'predicate' must be an integer"),
        (_bad(object__label=-1), r"triplets\[1\]: object.label -1 is below the label base 0"),
        (_bad(object=None), r"triplets\[1\]: 'object' must be an object"),
    ],
)
def test_bad_rows_name_file_image_and_row(row, message, tmp_path):
    doc = {"images": [{"image_id": 5, "triplets": [GOOD_ROW]}, {"image_id": "x", "triplets": [GOOD_ROW, row]}]}  # fmt: skip
    path = tmp_path / "res.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=f"res.json: image 'x': {message}") as e:
        read_triplet_file(path)
    assert "\n" not in str(e.value)


def test_bad_documents_are_one_line_errors(tmp_path):
    def check(doc, message, role="results"):
        with pytest.raises(DataError, match=message) as e:
            parse_triplet_document(doc, source="f.json", role=role)
        assert str(e.value).startswith("f.json") and "\n" not in str(e.value)

    img = {"image_id": 1, "triplets": [GOOD_ROW]}
    check({"protocol": "sgg", "images": []}, "'protocol' is 'sgg'")
    check({"label_base": 2, "images": []}, "'label_base' must be 0 or 1")
    check({"task": "phrase", "images": []}, "'task' must be one of")
    check({"images": [img, img]}, "duplicate image id 1")
    check({"images": [{"image_id": 1}]}, "image 1: missing 'triplets'")
    check({"k_values": [0], "images": []}, "'k_values'")
    check({"object_names": ["a", "b"], "images": [img]}, r"image 1: triplets\[0\]: object.label 2 is beyond the 2 object names")  # fmt: skip
    gt_row = {k: v for k, v in GOOD_ROW.items() if k != "score"}
    check({"images": [{"image_id": 1, "triplets": [{**gt_row, "zeroshot": 1}]}]}, "'zeroshot' must be true or false", role="ground_truth")  # fmt: skip
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps({"images": [{"image_id": 2, "triplets": [gt_row]}]}))
    (tmp_path / "r.json").write_text(json.dumps({"images": [img]}))
    with pytest.raises(DataError, match=r"r.json: image 1 is not in the ground truth .*gt.json"):
        align(read_triplet_file(gt_file, role="ground_truth"), read_triplet_file(tmp_path / "r.json"))  # fmt: skip


def test_cli_user_errors(files, capsys, tmp_path):
    args = ["score", "scene-graph", "--protocol", "vrd", str(files / "relationship.json")]
    assert main(args) == 2
    assert "no ground truth" in capsys.readouterr().err
    assert main([*args, "--gt", str(files / "gt.json"), "--mode", "sgdet"]) == 2
    assert "--mode applies to --protocol sgg only" in capsys.readouterr().err
    sgg_fixture = Path(__file__).resolve().parents[1] / "fixtures" / "sgg" / "tiny_predcls.json"
    assert main(["score", "scene-graph", str(sgg_fixture), "--gt", str(files / "gt.json")]) == 2
    assert "--gt applies to --protocol vrd only" in capsys.readouterr().err
    bad_zs = tmp_path / "zs.json"
    bad_zs.write_text(json.dumps([[1, 2]]))
    assert main([*args, "--gt", str(files / "gt.json"), "--zero-shot", str(bad_zs)]) == 2
    err = capsys.readouterr().err
    assert "zs.json: row 0 must be 3 integers" in err and err.count("\n") == 1
