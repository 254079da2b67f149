"""SceneGraphEvaluator against the official Scene-Graph-Benchmark evaluator's reference vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from percepta.scene_graph.evaluation import SceneGraphEvaluator
from percepta.scene_graph.results_io import iter_images, read_results_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sgg"
CASES = ["tiny_predcls", "tiny_sgdet", "predcls"]
TOL = 1e-9


def load(case: str) -> dict:
    return json.loads((FIXTURES / f"{case}.json").read_text())


def evaluator_for(inputs: dict, mode: str | None = None, **kw) -> SceneGraphEvaluator:
    return SceneGraphEvaluator(
        mode=mode or inputs["mode"],
        k=inputs["k_values"],
        num_predicates=inputs["num_rel_classes"] - 1,
        predicate_names=inputs["predicate_names"],
        zero_shot_triplets=inputs["zeroshot_triplets"],
        iou_threshold=inputs["iou_threshold"],
        **kw,
    )


def as_dicts(record: dict) -> tuple[dict, dict]:
    """A file record as percepta (pred, target) dicts of torch tensors."""
    pred = {
        "boxes": torch.tensor(record["pred_boxes"], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(record["pred_labels"]),
        "scores": torch.tensor(record["pred_scores"]),
        "rel_pairs": torch.tensor(record["rel_pair_idxs"], dtype=torch.int64).reshape(-1, 2),
        "rel_scores": torch.tensor(record["rel_scores"], dtype=torch.float32).reshape(-1, 51),
    }
    target = {
        "boxes": torch.tensor(record["gt_boxes"], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(record["gt_labels"]),
        "relations": torch.tensor(record["gt_rels"], dtype=torch.int64).reshape(-1, 3),
        "image_id": record["image_id"],
    }
    return pred, target


def check_against(result: dict, expected: dict) -> None:
    for key, value in expected["metrics"].items():
        if key.startswith("det_"):
            continue  # detection AP is percepta.detection's job
        assert result[key] == pytest.approx(value, abs=TOL), key
    for key in ("mR", "ng-mR"):
        for k, values in expected["per_predicate_recall"][key].items():
            np.testing.assert_allclose(
                result["per_predicate"][key][int(k)], values, rtol=0, atol=TOL
            )
    per_image = result["per_image"]
    for key, value in expected["per_image"].items():
        if isinstance(value, dict):
            for k, values in value.items():
                np.testing.assert_allclose(
                    per_image[key][int(k)], values, rtol=0, atol=TOL, err_msg=f"{key}@{k}"
                )
        else:
            assert list(per_image[key]) == value, key
    assert set(per_image) >= set(expected["per_image"])


def official_without_detection(s: str) -> str:
    lines = s.split("\n")
    at = [i for i, line in enumerate(lines) if line.startswith("Detection evaluation mAp=")]
    if at:
        del lines[at[0] : at[0] + 2]  # the mAP line and the '=' line after it
    return "\n".join(lines)


@pytest.mark.parametrize("case", CASES)
def test_reproduces_official_vectors(case):
    data = load(case)
    inputs = data["inputs"]
    ev = evaluator_for(inputs)
    spec = read_results_file(FIXTURES / f"{case}.json")
    ev.update(
        images=list(
            iter_images(spec["records"], mode=inputs["mode"], num_predicates=50, int_ids=True)
        )
    )
    result = ev.compute()
    check_against(result, data["expected"])
    assert ("A@20" in result) == (inputs["mode"] != "sgdet")
    # the printed table: the official string (detection-AP line aside), then our image count line
    table = ev.format_table(result)
    official = official_without_detection(data["expected"]["official_print_string"])
    assert table.startswith(official)
    tail = table[len(official) :]
    n = len(inputs["images"])
    assert tail.startswith(
        f"images: {n} seen, {len(data['expected']['per_image']['evaluated_image_ids'])} evaluated"
    )


@pytest.mark.parametrize("case", ["tiny_sgdet", "predcls"])
def test_torch_dicts_in_batches_give_the_same_result(case):
    """The percepta dict interface, fed in uneven batches, equals the official numbers."""
    data = load(case)
    inputs = data["inputs"]
    ev = evaluator_for(inputs)
    pairs = [as_dicts(r) for r in inputs["images"]]
    i = 0
    for size in (1, 4, 2, 7, 100):
        chunk = pairs[i : i + size]
        if chunk:
            ev.update([p for p, _ in chunk], [t for _, t in chunk])
        i += size
    check_against(ev.compute(), data["expected"])


def test_sgcls_with_gt_boxes_equals_predcls():
    """SGCls uses the predicted boxes/labels/scores; given the GT ones it must equal PredCls."""
    data = load("predcls")
    inputs = data["inputs"]
    ev = evaluator_for(inputs, mode="sgcls")
    ev.update(*map(list, zip(*[as_dicts(r) for r in inputs["images"]])))
    check_against(ev.compute(), data["expected"])


def test_predcls_overrides_predicted_objects():
    """In PredCls the predicted boxes/labels/scores are ignored (replaced by the GT)."""
    data = load("tiny_predcls")
    inputs = data["inputs"]
    pred, target = as_dicts(inputs["images"][0])
    pred = {
        "rel_pairs": pred["rel_pairs"],
        "rel_scores": pred["rel_scores"],
        "boxes": torch.zeros(4, 4),
        "labels": torch.full((4,), 99),
        "scores": torch.zeros(4),
    }
    ev = evaluator_for(inputs)
    ev.update([pred], [target])
    check_against(ev.compute(), data["expected"])
    ev2 = evaluator_for(inputs)  # and may be left out entirely
    ev2.update([{"rel_pairs": pred["rel_pairs"], "rel_scores": pred["rel_scores"]}], [target])
    check_against(ev2.compute(), data["expected"])


def test_ngr_ranking_keeps_only_top_100():
    """ngR@K is bounded by the top 100 entries even when K > 100 (official behaviour)."""
    data = load("predcls")
    inputs = data["inputs"]
    ev = evaluator_for(inputs)
    ev_big = SceneGraphEvaluator(mode="predcls", k=(100, 1000), num_predicates=50)
    for r in inputs["images"]:
        ev.update(*[[x] for x in as_dicts(r)])
        ev_big.update(*[[x] for x in as_dicts(r)])
    a, b = ev.compute(), ev_big.compute()
    assert b["ngR@1000"] == pytest.approx(a["ngR@100"], abs=TOL)
    assert b["R@1000"] > a["R@100"]  # graph-constrained rows beyond 100 do count
