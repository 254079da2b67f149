"""Run-log helpers: scalar flattening, JSON conversion, the loss window, jsonl truncation."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from percepta.engine.logging import (
    LossWindow,
    MetricsLogger,
    scalar_items,
    to_jsonable,
    truncate_jsonl,
)


def test_scalar_items_keeps_only_scalars_and_flattens():
    metrics = {
        "AP": torch.tensor(0.5),
        "AP50": 0.7,
        "n": np.int64(3),
        "flag": True,
        "per_class": {"cat": np.float32(0.25), "curve": [0.1, 0.2]},
        "matrix": torch.ones(2, 2),
        "name": "coco",
    }
    assert scalar_items(metrics) == {
        "AP": 0.5,
        "AP50": 0.7,
        "n": 3.0,
        "flag": 1.0,
        "per_class/cat": 0.25,
    }


def test_to_jsonable_converts_tensors_and_non_finite():
    out = to_jsonable({"a": torch.tensor([1.0, float("nan")]), "b": (np.float64(2.5), math.inf)})
    assert out == {"a": [1.0, None], "b": [2.5, None]}
    json.dumps(out, allow_nan=False)


def test_loss_window_means_per_term_counts():
    w = LossWindow()
    w.add({"loss_a": torch.tensor(1.0), "loss_b": torch.tensor(2.0), "vec": torch.ones(3)})
    w.add({"loss_a": torch.tensor(3.0), "flag": True})
    w.count(4), w.count(4), w.count(4)
    assert w.means() == {"loss_a": 2.0, "loss_b": 2.0}
    assert (w.iters, w.images) == (3, 12)
    w.reset()
    assert w.means() == {}


def test_truncate_jsonl_and_logger_disabled(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in (2, 4, 6, 8)))
    truncate_jsonl(path, 4)
    assert [json.loads(s)["iteration"] for s in path.read_text().splitlines()] == [2, 4]
    off = MetricsLogger(tmp_path / "rank1", enabled=False)
    off.log_train(1, {"loss": 1.0})
    off.log_eval(1, {"AP": 1.0})
    off.close()
    assert not (tmp_path / "rank1").exists()


def test_finite_or_none_keeps_numbers_and_drops_what_json_cannot_hold():
    from percepta.jsonable import finite_or_none

    assert finite_or_none(0.25) == 0.25 and finite_or_none("3") == 3.0
    assert finite_or_none(float("nan")) is None
    assert finite_or_none(None) is None and finite_or_none("n/a") is None
