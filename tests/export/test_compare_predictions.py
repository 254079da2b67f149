"""The parity comparison itself must fail on real differences and tolerate only tie order."""

from __future__ import annotations

import torch

from percepta.export.runtime import compare_predictions


def _pred() -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(
            [[10.0, 10, 50, 40], [60, 5, 90, 30], [5, 60, 20, 90], [30, 30, 40, 40]]
        ),
        "scores": torch.tensor([0.9, 0.5, 0.5, 0.2]),
        "labels": torch.tensor([0, 1, 2, 1]),
    }


def _copy(p, **changes):
    q = {k: v.clone() for k, v in p.items()}
    q.update(changes)
    return q


def test_identical_and_reordered_ties_pass():
    p = _pred()
    res = compare_predictions([p], [_copy(p)])
    assert res["ok"] and res["max_box_diff"] == 0 and res["detections"] == 4
    order = torch.tensor([0, 2, 1, 3])  # the two 0.5 scores swapped, as another topk may do
    res = compare_predictions([p], [{k: v[order] for k, v in p.items()}])
    assert res["ok"] and res["labels_equal"]


def test_box_score_label_and_count_differences_fail():
    p = _pred()
    boxes = p["boxes"].clone()
    boxes[1, 2] += 2e-3
    res = compare_predictions([p], [_copy(p, boxes=boxes)])
    assert not res["ok"] and abs(res["max_box_diff"] - 2e-3) < 1e-5
    scores = p["scores"].clone()
    scores[0] += 3e-5
    assert not compare_predictions([p], [_copy(p, scores=scores)])["ok"]
    labels = p["labels"].clone()
    labels[3] = 0
    res = compare_predictions([p], [_copy(p, labels=labels)])
    assert not res["ok"] and not res["labels_equal"]
    fewer = {k: v[:3] for k, v in p.items()}
    assert not compare_predictions([p], [fewer])["ok"]
    assert compare_predictions([p], [p], box_tol=1e-3)["ok"]


def test_borderline_detections_are_tolerated_only_at_the_threshold_or_the_kth_slot():
    p = _pred()
    extra = {k: torch.cat([v, v[-1:]]) for k, v in p.items()}
    extra["scores"][-1] = 0.0100001  # just above a 0.01 threshold in one runtime only
    extra["boxes"][-1] += 7
    assert compare_predictions([p], [extra], score_threshold=0.01)["ok"]
    assert not compare_predictions([p], [extra], score_threshold=0.05)["ok"]
    # K-th slot tie: a different box with the same lowest score, top_k = 4
    swapped = _copy(p)
    swapped["boxes"][3] += 7
    assert compare_predictions([p], [swapped], top_k=4)["ok"]
    assert not compare_predictions([p], [swapped], top_k=10)["ok"]
