"""CUDA paths (skipped without a GPU): fp16 + GradScaler, bf16, device moves, resume on GPU."""

from __future__ import annotations

import json

import pytest
import torch
from engine_toy import build, make_cfg

from percepta.engine import checkpoint as ck
from percepta.engine.trainer import Trainer, move_to_device
from percepta.structures import make_target

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_move_to_device_keeps_tv_tensors():
    from torchvision import tv_tensors

    target = make_target([[0, 0, 2, 2]], [1], image_id=3, orig_size=(4, 4), extra=[torch.zeros(2)])
    moved = move_to_device(target, torch.device("cuda"))
    assert isinstance(moved["boxes"], tv_tensors.BoundingBoxes)
    assert moved["boxes"].is_cuda and moved["boxes"].canvas_size == (4, 4)
    assert moved["labels"].is_cuda and moved["extra"][0].is_cuda and moved["image_id"] == 3


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_cuda_amp_trains_and_checkpoints_scaler(tmp_path, dtype):
    cfg = make_cfg(
        tmp_path,
        [
            "train.device=cuda",
            "train.amp=true",
            f"train.amp_dtype={dtype}",
            "train.max_iters=30",
            "train.log_period=5",
            "train.optimizer.lr=0.02",
        ],
    )
    model, train_ds, _, _ = build(cfg, dropout=0.0)
    trainer = Trainer(cfg, model, train_ds)
    assert trainer.scaler.is_enabled() == (dtype == "fp16")
    trainer.fit()
    assert model.hidden_dtype == (torch.float16 if dtype == "fp16" else torch.bfloat16)
    run = tmp_path / "toy"
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss_mse"] for r in lines if "loss_mse" in r]
    assert losses[-1] < 0.5 * losses[0]
    last = ck.load_checkpoint(run / "checkpoints" / "last.pt", map_location="cpu")
    assert bool(last["scaler"]) == (dtype == "fp16")
    assert last["rng"]["cuda"]  # CUDA RNG states are saved


def test_resume_on_cuda_matches_straight_run(tmp_path):
    over = ["train.device=cuda", "train.max_iters=6", "train.checkpoint_period=3", "train.ema=true"]
    cfg = make_cfg(tmp_path / "a", over)
    model, train_ds, _, _ = build(cfg)
    Trainer(cfg, model, train_ds).fit()
    straight = ck.load_checkpoint(tmp_path / "a" / "toy" / "checkpoints" / "last.pt")

    class Stop(Exception):
        pass

    class StopAt:
        def after_step(self, trainer):
            if trainer.iteration == 4:
                raise Stop

    cfg_b = make_cfg(tmp_path / "b", over)
    model, train_ds, _, _ = build(cfg_b)
    with pytest.raises(Stop):
        Trainer(cfg_b, model, train_ds, hooks=[StopAt()]).fit()
    cfg_b = make_cfg(tmp_path / "b", over + ["resume=true"])
    model, train_ds, _, _ = build(cfg_b)
    Trainer(cfg_b, model, train_ds).fit()
    resumed = ck.load_checkpoint(tmp_path / "b" / "toy" / "checkpoints" / "last.pt")
    for k, v in straight["model"].items():
        assert torch.allclose(resumed["model"][k], v, atol=1e-6), k
