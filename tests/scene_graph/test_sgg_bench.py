"""The benchmark's workload generator and both implementations on a few images (fast)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_sgg_eval.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_sgg_eval", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generator_reproduces_the_recipe_fingerprint_facts(bench):
    """Image 0 of each workload as the notes describe it (sgg_eval_workload.md §3.6)."""
    a = bench.generate_image("a", 0)
    np.testing.assert_array_equal(a["gt_boxes"][0], [186, 446, 374, 526])
    assert a["gt_rels"].tolist() == [
        [4, 9, 21],
        [9, 4, 20],
        [8, 4, 20],
        [8, 9, 20],
        [1, 0, 31],
        [10, 5, 20],
    ]
    assert a["rel_pair_idxs"][0].tolist() == [10, 5] and a["rel_scores"].shape == (132, 51)
    assert a["rel_scores"][0, 1:].argmax() + 1 == 20 and a["rel_scores"][0].max() == pytest.approx(
        0.70650399, abs=1e-7
    )
    b = bench.generate_image("b", 0)
    np.testing.assert_array_equal(b["gt_boxes"][0], [306, 6, 569, 178])
    assert b["rel_pair_idxs"][0].tolist() == [13, 5] and b["rel_scores"].shape == (6320, 51)
    assert b["rel_scores"][0, 1:].argmax() + 1 == 31 and b["rel_scores"][0].max() == pytest.approx(
        0.91381931, abs=1e-7
    )


@pytest.mark.parametrize("workload", ["a", "b"])
def test_ours_and_baseline_agree_on_three_images(bench, workload):
    mode = bench.WORKLOADS[workload][0]
    images = [bench.generate_image(workload, i) for i in range(3)]
    zs = bench.zero_shot_list(workload, images)
    assert zs.shape == (5971, 3)
    zs = np.concatenate(
        [
            zs,
            [
                [im["gt_labels"][s], im["gt_labels"][o], p]  # make zR non-trivial
                for im in images
                for s, o, p in im["gt_rels"][:2]
            ],
        ]
    )
    ours = bench.percepta_evaluate(bench.to_torch(images), zs, mode)
    base = bench.baseline_evaluate(images, zs, mode)
    assert bench.compare(ours, base) == []
    assert ours["R@100"] > 0 and len(ours["per_image"]["zeroshot_image_ids"]) > 0
    base["R@20"] += 1e-6  # the comparison itself can fail
    assert bench.compare(ours, base)
