"""Two gloo processes on CPU train like one process with the same global batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_toy import build, make_cfg, run_ranks

from percepta.engine import checkpoint as ck
from percepta.engine import distributed
from percepta.engine.trainer import Trainer

TOY = Path(__file__).with_name("toy.py")
REPO = Path(__file__).resolve().parents[2]

OVERRIDES = [
    "train.max_iters=5",
    "train.batch_size=8",
    "train.log_period=5",
    "train.checkpoint_period=0",
    "train.optimizer.name=sgd",
    "train.optimizer.lr=0.2",
    "train.optimizer.momentum=0.9",
    "train.optimizer.weight_decay=0.001",
    "train.scheduler.name=cosine",
    "train.scheduler.warmup_iters=2",
]


def test_init_from_env_is_a_noop_without_torchrun(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    info = distributed.init_from_env()
    assert (info.rank, info.world_size, info.distributed) == (0, 1, False)
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_from_env().world_size == 1
    assert distributed.all_gather_object(3) == [3] and distributed.all_reduce_min(4) == 4


@pytest.mark.dist
def test_two_gloo_processes_match_single_process(tmp_path):
    # n_train=20 with global batch 8: 2 batches per epoch, so 5 iterations cross two epochs;
    # n_val=5 gives uneven evaluation shards (3 + 2) that torchmetrics must sync.
    sizes = {"n_train": 20, "n_val": 5, "evaluator": "metric"}
    spec = {
        "output_dir": str(tmp_path),
        "overrides": OVERRIDES,
        "dropout": 0.0,
        "run_dir": str(tmp_path / "rank{rank}"),
        "metrics_out": str(tmp_path / "m.json"),
        **sizes,
    }
    outputs = run_ranks(spec)
    assert all(rc == 0 for rc, _ in outputs), outputs

    assert not (tmp_path / "rank1").exists()  # only rank 0 writes
    ddp = ck.load_checkpoint(tmp_path / "rank0" / "checkpoints" / "last.pt")
    ddp_metrics = json.loads((tmp_path / "m.json").read_text())

    # the same global batch in one process
    cfg = make_cfg(tmp_path / "single", OVERRIDES)
    model, train_ds, val_ds, evaluator = build(cfg, dropout=0.0, **sizes)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    single_metrics = Trainer(cfg, model, train_ds, val_dataset=val_ds, evaluator=evaluator).fit()
    for k, v in model.state_dict().items():
        assert not torch.allclose(v, init[k]), f"{k} did not train"
        assert torch.allclose(ddp["model"][k], v, atol=1e-5, rtol=0), k
    assert ddp_metrics["count"] == 5  # every validation image once, none padded or duplicated
    assert ddp_metrics["neg_mse"] == pytest.approx(float(single_metrics["neg_mse"]), abs=1e-5)
