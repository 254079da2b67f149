"""Bad input gets one DataError naming the image and the field; skipped images are counted."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from percepta.errors import DataError
from percepta.scene_graph.evaluation import SceneGraphEvaluator


def sample(image_id=7):
    target = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 25, 25]]),
        "labels": torch.tensor([1, 2, 3]),
        "relations": torch.tensor([[0, 1, 2], [2, 0, 1]]),
        "image_id": image_id,
    }
    pred = {
        "boxes": target["boxes"].clone(),
        "labels": target["labels"].clone(),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "rel_pairs": torch.tensor([[0, 1], [2, 0], [1, 2]]),
        "rel_scores": torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]]),
    }
    return pred, target


def run(mode="sgdet", pred=None, target=None):
    p, t = sample()
    ev = SceneGraphEvaluator(mode=mode, num_predicates=2)
    ev.update([p if pred is None else pred], [t if target is None else target])
    return ev.compute()


def test_sample_is_valid():
    out = run()
    assert out["R@20"] == 1.0 and out["images"]["evaluated"] == 1


@pytest.mark.parametrize(
    "where,key,value,match",
    [
        ("target", "relations", None, r"image 7: missing \"target\['relations'\]\""),
        ("pred", "scores", None, r"image 7: missing \"pred\['scores'\]\""),
        (
            "pred",
            "rel_pairs",
            torch.tensor([[0, 1], [2, 3], [1, 2]]),
            r"image 7: .*rel_pairs.* row 1 = \[2, 3\] is out of range",
        ),
        (
            "pred",
            "rel_pairs",
            torch.tensor([[0, 1], [-1, 0], [1, 2]]),
            r"image 7: .*rel_pairs.* row 1",
        ),
        (
            "pred",
            "rel_scores",
            torch.rand(3, 4),
            r"image 7: .*rel_scores.* shape \[3, 4\], expected \[N, 3\]",
        ),
        (
            "pred",
            "rel_scores",
            torch.tensor([[0.1, float("nan"), 0.7]] * 3),
            r"image 7: .*rel_scores.* NaN",
        ),
        (
            "pred",
            "rel_scores",
            torch.rand(2, 3),
            r"image 7: .*rel_pairs.* 3 rows but .*rel_scores.* 2",
        ),
        ("pred", "scores", torch.tensor([0.9, float("nan"), 0.7]), r"image 7: .*scores.* NaN"),
        (
            "pred",
            "boxes",
            torch.tensor([[0.0, 0, 10, 10], [30, 20, 20, 30], [5, 5, 25, 25]]),
            r"image 7: .*boxes.* row 1 = \[30.0, 20.0, 20.0, 30.0\] has x2 < x1",
        ),
        (
            "target",
            "boxes",
            torch.tensor([[0.0, 0, 10, -1], [20, 20, 30, 30], [5, 5, 25, 25]]),
            r"image 7: .*target\['boxes'\].* row 0",
        ),
        (
            "target",
            "relations",
            torch.tensor([[0, 1, 3]]),
            r"image 7: .*relations.* row 0 = \[0, 1, 3\] .* predicate in 1..2",
        ),
        ("target", "relations", torch.tensor([[0, 5, 1]]), r"image 7: .*relations.* row 0"),
        (
            "target",
            "labels",
            torch.tensor([1, 2]),
            r"image 7: .*labels.* 2 entries but .*boxes.* 3",
        ),
        (
            "pred",
            "labels",
            torch.tensor([[1, 2, 3]]),
            r"image 7: .*labels.* shape \[1, 3\], expected \[N\]",
        ),
        ("target", "image_id", None, r"missing 'image_id'"),
    ],
)
def test_bad_input_names_image_and_field(where, key, value, match):
    pred, target = sample()
    d = pred if where == "pred" else target
    if value is None:
        del d[key]
    else:
        d[key] = value
    with pytest.raises(DataError, match=match):
        run(pred=pred, target=target)


def test_predcls_pairs_index_the_gt_objects():
    pred, target = sample()
    pred["rel_pairs"] = torch.tensor([[0, 1], [2, 0], [1, 3]])
    with pytest.raises(DataError, match=r"row 2 = \[1, 3\] is out of range for 3 GT objects"):
        run(mode="predcls", pred=pred, target=target)


def test_duplicate_image_id_is_an_error():
    ev = SceneGraphEvaluator(mode="sgdet", num_predicates=2)
    ev.update(*[[x] for x in sample(3)])
    with pytest.raises(DataError, match="image id 3 was given twice"):
        ev.update(*[[x] for x in sample(3)])
    with pytest.raises(DataError, match="image id 5 was given twice"):
        ev.update(*map(list, zip(sample(4), sample(5), sample(5))))
    assert ev.compute()["images"]["seen"] == 1  # the failed batch left no trace
    ev.update(*[[x] for x in sample(4)])
    ev.reset()
    ev.update(*[[x] for x in sample(3)])  # a reset forgets the ids


def test_skipped_images_are_counted_not_scored():
    ev = SceneGraphEvaluator(mode="sgdet", num_predicates=2)
    preds, targets = [], []
    for i in range(5):
        p, t = sample(i)
        if i == 1:
            t["relations"] = torch.zeros(0, 3, dtype=torch.int64)  # no GT relation
        if i == 2:
            p = None  # absent from the predictions
        if i == 3:
            p["rel_pairs"], p["rel_scores"] = torch.zeros(0, 2), torch.zeros(0, 3)  # no pair
        if i == 4:
            p["rel_scores"] = torch.tensor(
                [[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4]]
            )  # a miss
        preds.append(p)
        targets.append(t)
    ev.update(preds, targets)
    out = ev.compute()
    assert out["images"] == {
        "seen": 5,
        "evaluated": 2,
        "skipped_no_gt_relations": 1,
        "skipped_no_prediction": 1,
        "skipped_no_predicted_pairs": 1,
    }
    assert list(out["per_image"]["evaluated_image_ids"]) == [0, 4]
    assert out["R@20"] == pytest.approx((1.0 + 0.0) / 2)  # skipped images are not zeros
    assert "absent from the predictions" in ev.format_table(out)


def test_no_zero_shot_list_gives_nan_not_zero():
    out = run()
    assert np.isnan(out["zR@20"]) and out["per_image"]["zeroshot_image_ids"].size == 0


def test_constructor_rejects_bad_options():
    with pytest.raises(ValueError, match="mode"):
        SceneGraphEvaluator(mode="phrdet")
    with pytest.raises(ValueError, match="box_convention"):
        SceneGraphEvaluator(box_convention="xywh")
    with pytest.raises(ValueError, match="predicate_names"):
        SceneGraphEvaluator(num_predicates=3, predicate_names=["a", "b"])
    with pytest.raises(DataError, match="zero_shot_triplets"):
        SceneGraphEvaluator(zero_shot_triplets=[[1, 2]])


def test_state_is_small_and_independent_of_the_score_matrix():
    """Memory bound: per image a row of ~20 numbers, whatever the number of pairs."""
    ev = SceneGraphEvaluator(mode="sgdet", num_predicates=2)
    rng = np.random.default_rng(0)
    for i in range(20):
        p, t = sample(i)
        q = 60
        p["boxes"] = torch.tensor(
            np.sort(rng.random((q, 4)) * 50, axis=1)[:, [0, 1, 2, 3]], dtype=torch.float32
        )
        p["boxes"][:, 2:] = p["boxes"][:, :2] + 5
        p["labels"], p["scores"] = torch.randint(1, 4, (q,)), torch.rand(q)
        p["rel_pairs"] = torch.randint(0, q, (3000, 2))
        p["rel_scores"] = torch.rand(3000, 3)
        ev.update([p], [t])
    rows = sum(x.numel() for x in ev.image_rows)
    assert rows == 20 * ev._row_width and ev._row_width <= 24
    assert len(ev.image_rows) <= 5  # merged as it grows
    assert ev.sums.numel() + ev.counts.numel() < 400


def test_deepcopy_and_float_inputs():
    """Lists and float-typed integer fields are accepted; non-integers are rejected."""
    pred, target = sample()
    pred = {k: v.tolist() for k, v in pred.items()}
    target = copy.deepcopy(
        {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in target.items()}
    )
    target["relations"] = [[0.0, 1.0, 2.0], [2.0, 0.0, 1.0]]
    assert run(pred=pred, target=target)["R@20"] == 1.0
    target["relations"] = [[0.5, 1.0, 2.0]]
    with pytest.raises(DataError, match="whole numbers"):
        run(pred=pred, target=target)
