"""Metric plug-ins, the EVALUATORS registration and the per-predicate bar chart."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from percepta.registry import EVALUATORS
from percepta.scene_graph import evaluation as sgg_eval
from percepta.scene_graph.evaluation import (
    RELATION_METRICS,
    RelationMetric,
    SceneGraphEvalOptions,
    SceneGraphEvaluator,
    register_relation_metric,
)
from percepta.scene_graph.results_io import iter_images, load_zero_shot_triplets, read_results_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sgg"


def predcls_images():
    spec = read_results_file(FIXTURES / "predcls.json")
    return spec, list(iter_images(spec["records"], mode="predcls", num_predicates=50, int_ids=True))


def test_registered_metric_receives_the_shared_matches():
    seen = []

    class PooledRecall(RelationMetric):
        """Dataset-level recall: total hits / total GT relations (one sum per K)."""

        name = "pooled"

        def __init__(self, ks, num_predicates):
            super().__init__(ks, num_predicates)
            self.sum_size = len(self.ks) + 1
            self.row_size = 1

        def image_values(self, match):
            seen.append(match)
            return np.array([match.num_gt], float), np.append(
                self.hits(match.first_hit).sum(1), match.num_gt
            )

        def compute(self, rows, sums, image_ids):
            return {f"pooled@{k}": sums[i] / sums[-1] for i, k in enumerate(self.ks)}

    register_relation_metric(PooledRecall)
    try:
        spec, images = predcls_images()
        ev = SceneGraphEvaluator(mode="predcls", num_predicates=50, metrics=["R", "pooled"])
        ev.update(images=images)
        out = ev.compute()
    finally:
        del RELATION_METRICS["pooled"]
    assert "mR@20" not in out and "R@20" in out
    assert len(seen) == 28 and all(m.first_hit_pair is not None for m in seen)
    # independent check: pooled recall from the official per-image recalls and GT counts
    data = json.loads((FIXTURES / "predcls.json").read_text())
    recs = {r["image_id"]: len(r["gt_rels"]) for r in data["inputs"]["images"]}
    exp = data["expected"]["per_image"]
    for k in (20, 50, 100):
        m = np.array([recs[i] for i in exp["evaluated_image_ids"]])
        hits = np.array(exp["R"][str(k)]) * m
        assert out[f"pooled@{k}"] == pytest.approx(hits.sum() / m.sum(), abs=1e-12)


def test_registry_rejects_a_clashing_name():
    class Other(RelationMetric):
        name = "R"

    with pytest.raises(ValueError, match="already registered"):
        register_relation_metric(Other)
    with pytest.raises(ValueError, match="unknown relation metrics"):
        SceneGraphEvaluator(metrics=["nope"])


def test_evaluators_registry_entry():
    entry = EVALUATORS.entry("scene_graph")
    assert entry.options is SceneGraphEvalOptions
    first = dataclasses.fields(SceneGraphEvalOptions)[0]
    assert first.name == "name" and first.default == "scene_graph"

    class Dataset:  # dataset facts come from ``meta`` (the evaluator protocol)
        meta = {
            "predicate_names": ["__background__"] + [f"p{i}" for i in range(1, 51)],
            "zero_shot_triplets": [[1, 2, 3]],
        }

    opts = SceneGraphEvalOptions(mode="sgcls", k=[5, 10], primary_metric="mR@10")
    ev = entry.builder(opts, Dataset())
    assert isinstance(ev, SceneGraphEvaluator)
    assert (ev.mode, ev.ks, ev.num_predicates, ev.predicate_names[0]) == (
        "sgcls",
        (5, 10),
        50,
        "p1",
    )
    assert ev.zero_shot is not None and ev.zero_shot.size == 1
    assert (ev.primary_metric, ev.higher_is_better) == ("mR@10", True)
    with pytest.raises(sgg_eval.DataError, match="num_predicates"):
        entry.builder(SceneGraphEvalOptions(), object())
    with pytest.raises(sgg_eval.DataError, match="num_predicates"):
        entry.builder(None, None)  # no dataset (scoring files): the options must say P
    assert entry.builder(SceneGraphEvalOptions(num_predicates=3), None).primary_metric == "R@100"


@pytest.mark.parametrize(
    "mode,k,primary,ok",
    [
        (
            "predcls",
            [20, 50, 100],
            "R@100",
            True,
        ),  # the default: the seed framework's selection metric
        ("sgdet", [20, 50, 100], "mR@50", True),
        ("sgdet", [20, 50, 100], "A@100", False),  # A@K is not computed in SGDet
        ("predcls", [20, 50], "R@100", False),  # K = 100 not evaluated
        ("predcls", [20, 50, 100], "recall", False),
    ],
)
def test_primary_metric_option_must_be_a_computed_key(mode, k, primary, ok):
    opts = SceneGraphEvalOptions(mode=mode, k=k, num_predicates=2, primary_metric=primary)
    if not ok:
        with pytest.raises(
            sgg_eval.DataError,
            match=rf"evaluator: primary_metric '{primary}' is "
            rf"not computed in mode '{mode}'",
        ):
            EVALUATORS.build("scene_graph", opts, None)
        return
    ev = EVALUATORS.build("scene_graph", opts, None)
    assert ev.primary_metric == primary
    assert SceneGraphEvalOptions().primary_metric == "R@100"


def test_zero_shot_triplets_from_files(tmp_path):
    import torch

    trip = [[1, 89, 31], [2, 6, 31]]
    for name, write in (
        ("z.json", lambda p: p.write_text(json.dumps(trip))),
        ("z.npy", lambda p: np.save(p, np.array(trip))),
        ("z.pytorch", lambda p: torch.save(torch.tensor(trip), p)),
    ):
        path = tmp_path / name
        write(path)
        np.testing.assert_array_equal(load_zero_shot_triplets(str(path)), trip)
    with pytest.raises(sgg_eval.DataError, match="not found"):
        load_zero_shot_triplets(str(tmp_path / "missing.json"))


def test_bar_chart_is_sorted_by_gt_frequency(tmp_path):
    from percepta.viz.bars import per_predicate_bars

    fig = per_predicate_bars(
        [0.1, 0.9, 0.5], ["a", "b", "c"], counts=[5, 1, 9], out_path=tmp_path / "x.png"
    )
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c", "a", "b"]
    assert [round(p.get_height(), 3) for p in ax.patches] == [0.5, 0.1, 0.9]
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError):
        per_predicate_bars([0.1], ["a", "b"])
