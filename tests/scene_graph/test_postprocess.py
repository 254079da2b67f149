"""RelationPostProcessor against the official PostProcessor's reference vectors, plus hand cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from percepta.errors import ConfigError, DataError
from percepta.scene_graph.evaluation import SceneGraphEvaluator
from percepta.scene_graph.postprocess import (
    RelationPostProcessor,
    obj_prediction_nms,
    postprocess_image,
)

FIXTURE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "sgg_model" / "relation_postprocessor.json"
)
RTOL, ATOL = 1e-5, 1e-6  # post-processor probabilities and scores (sgg_official_semantics.md)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(FIXTURE.read_text())


def case(reference: dict, name: str) -> dict:
    return next(c for c in reference["cases"] if c["name"] == name)


def run_case(c: dict) -> list[dict]:
    ins = c["inputs"]
    key = "boxes_per_cls" if c["mode"] == "sgdet" else "bbox"
    pp = RelationPostProcessor(c["mode"], later_nms_pred_thres=c["later_nms_pred_thres"])
    return pp(
        [torch.tensor(i["rel_logits"]) for i in ins],
        [torch.tensor(i["obj_logits"]) for i in ins],
        [torch.tensor(i["rel_pair_idxs_from_prepare_test_pairs"]) for i in ins],
        [torch.tensor(i[key]) for i in ins],
    )


@pytest.mark.parametrize("name", ["predcls_2img", "sgcls_2img", "sgdet_overlap_pairs"])
def test_reproduces_official_postprocessor(reference, name):
    c = case(reference, name)
    outs = run_case(c)
    assert len(outs) == len(c["outputs"])
    for out, ref in zip(outs, c["outputs"]):
        assert out["labels"].tolist() == ref["pred_labels"]
        assert out["rel_pairs"].tolist() == ref["rel_pair_idxs"]
        assert out["rel_labels"].tolist() == ref["pred_rel_labels"]
        assert (
            out["rel_pairs"].dtype == out["labels"].dtype == out["rel_labels"].dtype == torch.int64
        )
        np.testing.assert_allclose(out["scores"].numpy(), ref["pred_scores"], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(
            out["rel_scores"].numpy(), ref["pred_rel_scores"], rtol=RTOL, atol=ATOL
        )
        np.testing.assert_allclose(out["boxes"].numpy(), ref["bbox"], rtol=RTOL, atol=ATOL)
        # the background column is kept: rows are full softmax distributions
        assert out["rel_scores"].shape[1] == c["num_rel_classes"]
        # the derived sort key, recomputed here from the reference outputs' own fields
        s = np.asarray(ref["pred_scores"], dtype=np.float32)
        q = np.asarray(ref["pred_rel_scores"], dtype=np.float32)
        p = np.asarray(ref["rel_pair_idxs"])
        key = q[:, 1:].max(1) * s[p[:, 0]] * s[p[:, 1]]
        np.testing.assert_allclose(key, ref["triple_scores_sorted(derived)"], rtol=RTOL, atol=ATOL)


def test_sgdet_obj_prediction_nms_reference(reference):
    c = case(reference, "sgdet_overlap_pairs")
    for inp, want in zip(c["inputs"], c["obj_prediction_nms"]):
        got = obj_prediction_nms(
            torch.tensor(inp["boxes_per_cls"]),
            torch.tensor(inp["obj_logits"]),
            c["later_nms_pred_thres"],
        )
        assert got.tolist() == want


def test_background_probability_is_zeroed_not_renormalised():
    # softmax([2, 0, 0]) = [e^2, 1, 1] / (e^2 + 2); the best foreground keeps its raw probability
    obj = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    out = postprocess_image(
        torch.zeros(2, 3),
        obj,
        torch.tensor([[0, 1], [1, 0]]),
        torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]),
        mode="sgcls",
    )
    z0 = math.exp(2) + 2
    z1 = 1 + math.e + math.exp(3)
    assert out["labels"].tolist() == [1, 2]  # tie in box 0: the first foreground class
    np.testing.assert_allclose(out["scores"].numpy(), [1 / z0, math.exp(3) / z1], rtol=RTOL)
    # rel logits all zero: q = 1/3 each, predicate 1 (first non-background), key = 1/3 s0 s1
    assert out["rel_labels"].tolist() == [1, 1]
    np.testing.assert_allclose(out["rel_scores"].numpy(), np.full((2, 3), 1 / 3), rtol=RTOL)


def test_equal_triple_scores_keep_input_order():
    n = 4
    pairs = torch.tensor([[i, j] for i in range(n) for j in range(n) if i != j])
    rel = torch.zeros(len(pairs), 5)
    rel[:, 2] = 1.0
    rel[5, 3] = 4.0  # one clear winner, the rest tie exactly
    obj = torch.full((n, 3), -1000.0)
    obj[:, 1] = 1000.0
    out = postprocess_image(
        rel, obj, pairs, torch.rand(n, 4) + torch.tensor([0, 0, 1, 1]), mode="predcls"
    )
    expected = [pairs[5].tolist()] + [p.tolist() for k, p in enumerate(pairs) if k != 5]
    assert out["rel_pairs"].tolist() == expected
    assert out["rel_labels"].tolist() == [3] + [2] * (len(pairs) - 1)


def test_sgdet_nms_suppresses_with_plus_one_iou_and_leaves_class_zero():
    # boxes 0 and 1 touch (x2 == x1'): IoU with +1 = 3 / 15 = 0.2, without +1 it is 0.
    # box 2 is far away. One foreground class: box 1 loses it to box 0 and ends with class 0.
    boxes = torch.tensor([[0.0, 0, 2, 2], [2, 0, 4, 2], [50, 50, 60, 60]])
    per_cls = boxes[:, None, :].repeat(1, 2, 1)
    per_cls[:, 0] += 100  # the background-column box differs, so the chosen column is visible
    logits = torch.tensor([[0.0, 3.0], [0.0, 2.0], [0.0, 1.0]])
    labels = obj_prediction_nms(per_cls, logits, nms_thresh=0.2)
    assert labels.tolist() == [1, 0, 1]
    assert obj_prediction_nms(per_cls, logits, nms_thresh=0.21).tolist() == [1, 1, 1]

    out = postprocess_image(
        torch.zeros(2, 3),
        logits,
        torch.tensor([[0, 1], [0, 2]]),
        per_cls,
        mode="sgdet",
        later_nms_pred_thres=0.2,
    )
    p = [1 / (1 + math.exp(-v)) for v in (3.0, 2.0, 1.0)]  # 2-class softmax = sigmoid
    np.testing.assert_allclose(out["scores"].numpy(), [p[0], 0.0, p[2]], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out["boxes"].numpy(), per_cls[[0, 1, 2], [1, 0, 1]].numpy())
    assert out["rel_pairs"].tolist() == [[0, 2], [0, 1]]  # the pair with a class-0 box scores 0


def test_sgdet_takes_next_class_after_suppression():
    # Two identical boxes prefer class 1; the weaker one is suppressed there and takes class 2.
    box = torch.tensor([0.0, 0, 10, 10])
    per_cls = box.expand(2, 3, 4).clone()
    logits = torch.tensor([[0.0, 5.0, 1.0], [0.0, 4.0, 2.0]])
    assert obj_prediction_nms(per_cls, logits, 0.3).tolist() == [1, 2]


def test_label_offset_and_evaluator_plugs_in(reference):
    c = case(reference, "predcls_2img")
    ins = c["inputs"][0]
    pp = RelationPostProcessor("predcls", label_offset=-1)
    (out,) = pp(
        [torch.tensor(ins["rel_logits"])],
        [torch.tensor(ins["obj_logits"])],
        [torch.tensor(ins["rel_pair_idxs_from_prepare_test_pairs"])],
        [torch.tensor(ins["bbox"])],
    )
    assert out["labels"].tolist() == [x - 1 for x in c["outputs"][0]["pred_labels"]]
    # Reference order: (0,2) label 4 is rank 0; (2,3) is the last row, with label 2 (not 1).
    target = {
        "boxes": torch.tensor(ins["bbox"]),
        "labels": torch.tensor(ins["labels"]) - 1,
        "relations": torch.tensor([[0, 2, 4], [2, 3, 1]]),
        "image_id": 7,
    }
    ev = SceneGraphEvaluator(
        mode="predcls", k=(1, 20), num_predicates=c["num_rel_classes"] - 1, primary_metric="R@20"
    )
    ev.update([out], [target])
    res = ev.compute()
    assert res["R@1"] == pytest.approx(0.5, abs=1e-12)
    assert res["R@20"] == pytest.approx(0.5, abs=1e-12)


def test_empty_image_and_errors():
    out = postprocess_image(
        torch.zeros(1, 5),
        torch.zeros(0, 3),
        torch.zeros((1, 2), dtype=torch.int64),
        torch.zeros(0, 4),
        mode="sgcls",
    )
    assert out["rel_pairs"].shape == (0, 2) and out["rel_scores"].shape == (0, 5)
    with pytest.raises(ConfigError, match="mode"):
        RelationPostProcessor("sgxx")
    with pytest.raises(DataError, match="image 0.*outside"):
        postprocess_image(
            torch.zeros(1, 5),
            torch.zeros(2, 3),
            torch.tensor([[0, 2]]),
            torch.zeros(2, 4),
            mode="sgcls",
        )
    with pytest.raises(DataError, match="boxes_per_cls"):
        postprocess_image(
            torch.zeros(1, 5),
            torch.zeros(2, 3),
            torch.tensor([[0, 1]]),
            torch.zeros(2, 4),
            mode="sgdet",
        )
    with pytest.raises(DataError, match="same images"):
        RelationPostProcessor("sgcls")([torch.zeros(1, 5)], [], [], [])
