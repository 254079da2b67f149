"""Two gloo processes: the synced evaluator equals the official single-process numbers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from percepta.scene_graph.evaluation import SceneGraphEvaluator
from percepta.scene_graph.results_io import iter_images, read_results_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sgg"


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        spec = read_results_file(FIXTURES / "predcls.json")
        images = list(iter_images(spec["records"], mode="predcls", num_predicates=50, int_ids=True))

        def make():
            return SceneGraphEvaluator(
                mode="predcls",
                num_predicates=50,
                predicate_names=spec["predicate_names"],
                zero_shot_triplets=spec["zero_shot_triplets"],
            )

        split = (
            make()
        )  # rank 0: images 0..19, rank 1: 20..29 (so the gathered order is the file order)
        split.update(images=images[:20] if rank == 0 else images[20:])
        lopsided = make()  # rank 1 never calls update (an empty list state must still sync)
        if rank == 0:
            lopsided.update(images=images)
        results = {"split": split.compute(), "lopsided": lopsided.compute()}
        if rank == 0:
            torch.save(results, os.path.join(out_dir, "result.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (POSIX)")
def test_two_process_sync_matches_official(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context(
        "fork"
    )  # children inherit the imports: seconds instead of a fresh start each
    procs = [
        ctx.Process(target=_worker, args=(r, 2, str(tmp_path / "init"), str(tmp_path)))
        for r in range(2)
    ]
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
    results = torch.load(tmp_path / "result.pt", weights_only=False)
    expected = json.loads((FIXTURES / "predcls.json").read_text())["expected"]
    for name, result in results.items():
        for key, value in expected["metrics"].items():
            if not key.startswith("det_"):
                assert result[key] == pytest.approx(value, abs=1e-9), (name, key)
        for k, values in expected["per_predicate_recall"]["ng-mR"].items():
            np.testing.assert_allclose(result["per_predicate"]["ng-mR"][int(k)], values, atol=1e-9)
        assert (
            list(result["per_image"]["evaluated_image_ids"])
            == expected["per_image"]["evaluated_image_ids"]
        )
        np.testing.assert_allclose(
            result["per_image"]["zR"][50], expected["per_image"]["zR"]["50"], atol=1e-9
        )
        assert result["images"]["seen"] == 30
