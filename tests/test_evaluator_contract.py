"""The evaluator protocol (:mod:`percepta.evaluator`), checked for EVERY registered evaluator.

Each evaluator is built the way the engine builds it: ``percepta.config.load(None,
["evaluator.name=<name>", ...])`` then ``percepta.engine.build.build_evaluator(cfg, dataset)``,
so a builder whose signature differs from ``builder(options, dataset)`` fails here. Checks:

* it is a :class:`percepta.evaluator.Evaluator` declaring ``primary_metric`` and a boolean
  ``higher_is_better``, with its own ``format_table`` and no ``summary``/``table`` aliases;
* after a small valid update the primary metric is in ``compute()`` and equals a value worked
  out by hand for the sample (independent of the code under test);
* update / compute / reset / update / compute gives the same result twice;
* no update, or an update without objects / relations, gives a dict holding the primary key
  (NaN allowed) or a clear :class:`percepta.errors.PerceptaError`, not a crash;
* ``dist``: two gloo CPU processes (forked, as in ``tests/scene_graph/test_sgg_ddp.py``), each
  updating half the batches, compute what one process computes on all of them. Tolerance:
  1e-9 (relative and absolute) on floats, exact on ints / strings / booleans; each rank takes a
  contiguous half, so gathered lists keep the single-process order and only the round-off of
  summed states can differ.

A new evaluator must come with a sample factory in :data:`SAMPLE_FACTORIES`; without one its
tests fail with a message saying so.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from percepta import config
from percepta.engine.build import build_evaluator
from percepta.errors import PerceptaError
from percepta.evaluator import Evaluator
from percepta.registry import EVALUATORS, import_all

import_all()
NAMES = EVALUATORS.names()
TOL = 1e-9


@dataclass
class Sample:
    """What one evaluator's contract tests need (built by a factory of :data:`SAMPLE_FACTORIES`)."""

    dataset: Any  # what build_evaluator(cfg, dataset) receives
    batches: list[tuple[list, list]]  # >= 2 small valid (preds, targets) batches
    empty: tuple[list, list]  # one update without objects / relations
    expected: dict[str, float]  # compute() keys worked out by hand for ``batches``
    overrides: list[str] = field(default_factory=list)  # besides evaluator.name=<name>


# -- samples ---------------------------------------------------------------------------------


def _scene_graph_sample(tmp_path: Path) -> Sample:
    """PredCls (the default mode), P = 2 predicates, 4 images with 3 far-apart boxes and GT
    relations (0 -1-> 1), (1 -2-> 2). Rows (0,1), (1,2), (2,0); the predicted predicate is the
    arg-max of columns 1..2. Hits per image: both, the second only, none, both.
    By hand: R@100 = mean(1, 1/2, 0, 1) = 0.625; predicate 1 is hit in images 0 and 3 (recall
    1/2 over the 4 images containing it), predicate 2 in images 0, 1, 3 (3/4):
    mR@100 = (0.5 + 0.75) / 2 = 0.625; A@100 = (2 + 1 + 0 + 2) / 8 = 0.625."""
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 50, 10]])
    pick = {1: [0.1, 0.8, 0.1], 2: [0.1, 0.1, 0.8]}  # rel_scores row predicting predicate 1 / 2
    predicted = [(1, 2), (2, 2), (2, 1), (1, 2)]  # per image: predicate of rows (0,1) and (1,2)

    def image(i: int) -> tuple[dict, dict]:
        target = {
            "boxes": boxes.clone(),
            "labels": torch.tensor([0, 1, 2]),
            "image_id": i,
            "relations": torch.tensor([[0, 1, 1], [1, 2, 2]]),
        }
        a, b = predicted[i]
        pred = {
            "boxes": boxes.clone(),
            "labels": torch.tensor([0, 1, 2]),
            "scores": torch.ones(3),
            "rel_pairs": torch.tensor([[0, 1], [1, 2], [2, 0]]),
            "rel_scores": torch.tensor([pick[a], pick[b], [0.5, 0.3, 0.2]]),
        }
        return pred, target

    pairs = [image(i) for i in range(4)]
    batches = [([p for p, _ in pairs[j : j + 2]], [t for _, t in pairs[j : j + 2]]) for j in (0, 2)]
    empty_t = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "relations": torch.zeros(0, 3, dtype=torch.int64),
        "image_id": 99,
    }
    empty_p = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
        "rel_pairs": torch.zeros(0, 2, dtype=torch.int64),
        "rel_scores": torch.zeros(0, 3),
    }
    dataset = SimpleNamespace(meta={"predicate_names": ["__background__", "on", "near"]})
    return Sample(
        dataset, batches, ([empty_p], [empty_t]), {"R@100": 0.625, "mR@100": 0.625, "A@100": 0.625}
    )


def _quality_sample(tmp_path: Path) -> Sample:
    """8 images, MOS 1.0..4.5 in steps of 0.5, predicted ranks 2 1 3 4 6 5 8 7 (no ties).
    By hand (Spearman's formula without ties): sum d^2 = 6, SROCC = 1 - 6*6 / (8*63) = 13/14."""
    mos = [1.0 + 0.5 * i for i in range(8)]
    ranks = [2, 1, 3, 4, 6, 5, 8, 7]
    pred = [0.1 * r + 0.01 * r * r for r in ranks]  # any increasing function of the rank
    batches = [
        (
            [{"score": torch.tensor(p, dtype=torch.float64)} for p in pred[j : j + 4]],
            [{"score": m} for m in mos[j : j + 4]],
        )
        for j in (0, 4)
    ]
    return Sample(SimpleNamespace(meta={}), batches, ([], []), {"srocc": 13 / 14})


def _coco_sample(tmp_path: Path) -> Sample:
    """A real COCO dataset (json + image folder) with 4 images, 2 classes; the predictions are
    the GT boxes with score 0.9, so AP = AP50 = 1 by definition (precision 1 at every recall)."""
    from percepta.data.coco import CocoDetection

    boxes = {
        1: [[4, 4, 20, 20]],
        2: [[10, 10, 30, 40], [40, 8, 20, 20]],
        3: [[0, 0, 60, 50]],
        4: [[5, 30, 25, 25], [33, 2, 12, 12]],
    }  # xywh
    cats = {1: 1, 2: 2, 3: 1, 4: 2}
    anns, aid = [], 0
    for img, bs in boxes.items():
        for j, b in enumerate(bs):
            aid += 1
            cat = cats[img] if j == 0 else 3 - cats[img]
            anns.append(
                {
                    "id": aid,
                    "image_id": img,
                    "category_id": cat,
                    "bbox": b,
                    "area": b[2] * b[3],
                    "iscrowd": 0,
                }
            )
    images = [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in boxes]
    coco = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    ann_file = tmp_path / "coco" / "instances.json"
    (tmp_path / "coco" / "images").mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(coco))
    dataset = CocoDetection(ann_file, tmp_path / "coco" / "images")

    def image(img: int) -> tuple[dict, dict]:
        mine = [a for a in anns if a["image_id"] == img]
        xyxy = torch.tensor(
            [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in mine)], dtype=torch.float32
        )
        labels = torch.tensor([a["category_id"] - 1 for a in mine])
        pred = {"boxes": xyxy, "scores": torch.full((len(mine),), 0.9), "labels": labels}
        return pred, {"boxes": xyxy.clone(), "labels": labels.clone(), "image_id": img}

    pairs = [image(i) for i in boxes]
    batches = [([p for p, _ in pairs[j : j + 2]], [t for _, t in pairs[j : j + 2]]) for j in (0, 2)]
    empty = (
        [
            {
                "boxes": torch.zeros(0, 4),
                "scores": torch.zeros(0),
                "labels": torch.zeros(0, dtype=torch.int64),
            }
        ],
        [pairs[0][1]],
    )
    return Sample(dataset, batches, empty, {"AP": 1.0, "AP50": 1.0})


#: registered evaluator name -> factory(tmp_path) of its sample; every registered one needs one
SAMPLE_FACTORIES: dict[str, Callable[[Path], Sample]] = {
    "coco": _coco_sample,
    "quality": _quality_sample,
    "scene_graph": _scene_graph_sample,
}


def _sample(name: str, tmp_path: Path) -> Sample:
    if name not in SAMPLE_FACTORIES:
        pytest.fail(
            f"evaluator {name!r} is registered but has no sample factory: add one to "
            "SAMPLE_FACTORIES in tests/test_evaluator_contract.py",
            pytrace=False,
        )
    return SAMPLE_FACTORIES[name](tmp_path)


def _build(name: str, sample: Sample) -> Any:
    cfg = config.load(None, [f"evaluator.name={name}", *sample.overrides])
    ev = build_evaluator(cfg, sample.dataset)
    assert ev is not None, f"build_evaluator returned None for {name!r}"
    return ev


def _run(ev: Any, batches: list[tuple[list, list]]) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN / fit warnings of tiny samples are not under test
        for preds, targets in batches:
            ev.update(preds, targets)
        return ev.compute()


def _assert_same(a: Any, b: Any, where: str = "result") -> None:
    """Equal up to :data:`TOL` on floats (NaN == NaN), exact on everything else."""
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping) and set(a) == set(b), (
            f"{where}: keys {sorted(a)} vs {sorted(b)}"
        )
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (np.ndarray, torch.Tensor)) or (
        isinstance(a, (list, tuple)) and all(isinstance(x, (int, float)) for x in a)
    ):
        x, y = np.asarray(a), np.asarray(b)
        assert x.shape == y.shape, f"{where}: shape {x.shape} vs {y.shape}"
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            np.testing.assert_allclose(
                x.astype(float), y.astype(float), rtol=TOL, atol=TOL, equal_nan=True, err_msg=where
            )
        else:
            np.testing.assert_array_equal(x, y, err_msg=where)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert isinstance(b, (int, float)), f"{where}: {a!r} vs {b!r}"
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=TOL, abs_tol=TOL), (
            f"{where}: {a!r} vs {b!r}"
        )
    else:
        assert a == b and type(a) is type(b), f"{where}: {a!r} vs {b!r}"


# -- the contract ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_builds_through_the_engine_as_an_evaluator(name, tmp_path):
    ev = _build(name, _sample(name, tmp_path))
    assert isinstance(ev, Evaluator), f"{name}: {type(ev).__name__} is not a percepta Evaluator"
    assert isinstance(ev.primary_metric, str) and ev.primary_metric, f"{name}: no primary_metric"
    assert isinstance(ev.higher_is_better, bool), f"{name}: higher_is_better must be True/False"
    assert type(ev).format_table is not Evaluator.format_table, f"{name}: no format_table"
    for alias in ("summary", "table"):
        assert not hasattr(ev, alias), f"{name}: has a {alias!r} alias besides format_table"


@pytest.mark.parametrize("name", NAMES)
def test_primary_metric_is_computed_and_matches_the_hand_value(name, tmp_path):
    sample = _sample(name, tmp_path)
    ev = _build(name, sample)
    result = _run(ev, sample.batches)
    assert ev.primary_metric in result, f"{name}: {ev.primary_metric!r} not in {sorted(result)}"
    assert isinstance(result[ev.primary_metric], float)
    for key, value in sample.expected.items():
        assert result[key] == pytest.approx(value, abs=TOL), key
    table = ev.format_table(result)
    assert isinstance(table, str) and table.strip()


@pytest.mark.parametrize("name", NAMES)
def test_reset_update_compute_round_trip(name, tmp_path):
    sample = _sample(name, tmp_path)
    ev = _build(name, sample)
    first = _run(ev, sample.batches)
    ev.reset()
    second = _run(ev, sample.batches)
    _assert_same(first, second)
    _assert_same(first, _run(_build(name, sample), sample.batches))  # and a fresh one


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", ["no_update", "empty_update"])
def test_empty_input_is_defined_or_a_clear_error(name, case, tmp_path):
    sample = _sample(name, tmp_path)
    ev = _build(name, sample)
    try:
        result = _run(ev, [sample.empty] if case == "empty_update" else [])
    except PerceptaError as e:
        assert str(e) and "\n" not in str(e).strip(), f"{name}: multi-line error {e!r}"
        return
    assert isinstance(result, Mapping) and ev.primary_metric in result, (
        f"{name}: empty input gave {result!r} without {ev.primary_metric!r}"
    )
    value = result[ev.primary_metric]
    assert isinstance(value, float), f"{name}: primary metric {value!r} is not a float"
    assert isinstance(ev.format_table(result), str)


def test_a_registered_evaluator_without_factory_fails_clearly(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="no sample factory.*SAMPLE_FACTORIES"):
        _sample("an_evaluator_nobody_registered", tmp_path)


# -- two processes ---------------------------------------------------------------------------


def _worker(rank: int, name: str, sample: Sample, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        half = len(sample.batches) // 2  # contiguous halves: the gathered order is the file order
        mine = sample.batches[:half] if rank == 0 else sample.batches[half:]
        result = _run(_build(name, sample), mine)
        Path(out_dir, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (POSIX)")
@pytest.mark.parametrize("name", NAMES)
def test_two_gloo_processes_equal_one_process(name, tmp_path):
    import multiprocessing as mp

    sample = _sample(name, tmp_path)
    single = _run(_build(name, sample), sample.batches)
    ctx = mp.get_context("fork")  # children inherit the imports (and the sample, unpickled)
    init = str(tmp_path / "init")
    procs = [
        ctx.Process(target=_worker, args=(r, name, sample, init, str(tmp_path))) for r in range(2)
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
    assert [p.exitcode for p in procs] == [0, 0], f"{name}: a worker failed (see its stderr)"
    for rank in (0, 1):
        got = pickle.loads((tmp_path / f"rank{rank}.pkl").read_bytes())
        _assert_same(single, got, f"rank {rank}")
