"""Exact resume: N steps straight == N/2 steps, a hard kill, and a resume in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from engine_toy import build, make_cfg

from percepta.engine import checkpoint as ck
from percepta.engine.trainer import Trainer

TOY = Path(__file__).with_name("toy.py")
REPO = Path(__file__).resolve().parents[2]

OVERRIDES = [
    "train.max_iters=8", "train.checkpoint_period=4", "train.eval_period=4", "train.log_period=2",
    "train.ema=true", "train.ema_decay=0.7", "train.grad_clip=1.0",
    "train.scheduler.name=cosine", "train.scheduler.warmup_iters=3",
    "train.optimizer.name=adamw", "train.optimizer.weight_decay=0.05",
]


def _run_toy(spec: dict) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return subprocess.run([sys.executable, str(TOY), json.dumps(spec)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _assert_tensors_equal(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"differs at {where}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_tensors_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_tensors_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_resume_after_kill_is_bit_exact(tmp_path):
    # 1) uninterrupted reference run (in this process; one thread like the subprocesses, see
    #    conftest.py)
    cfg = make_cfg(tmp_path / "straight", OVERRIDES)
    model, train_ds, val_ds, evaluator = build(cfg, dropout=0.1)
    Trainer(cfg, model, train_ds, val_dataset=val_ds, evaluator=evaluator).fit()
    straight = ck.load_checkpoint(tmp_path / "straight" / "toy" / "checkpoints" / "last.pt")

    # 2) a fresh process killed (os._exit, no cleanup) at iteration 6, after the checkpoint at 4
    spec = {"output_dir": str(tmp_path / "killed"), "overrides": OVERRIDES, "dropout": 0.1,
            "kill_at": 6}
    proc = _run_toy(spec)
    assert proc.returncode == 17, proc.stderr[-3000:]
    last = tmp_path / "killed" / "toy" / "checkpoints" / "last.pt"
    assert ck.load_checkpoint(last)["iteration"] == 4

    # 3) resume in another fresh process and finish
    spec.update(kill_at=None, overrides=OVERRIDES + ["resume=true"])
    proc = _run_toy(spec)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout + proc.stderr
    resumed = ck.load_checkpoint(last)
    assert resumed["iteration"] == 8 and resumed["epoch"] == straight["epoch"] == 1

    for key in ("model", "ema", "optimizer", "scheduler", "best", "nonfinite_count"):
        _assert_tensors_equal(straight[key], resumed[key], key)
    assert not torch.equal(straight["model"]["fc1.weight"], straight["ema"]["module.fc1.weight"])

    # the killed run's log lines after iteration 4 were dropped, not duplicated
    lines = [json.loads(s) for s in
             (tmp_path / "killed" / "toy" / "metrics.jsonl").read_text().splitlines()]
    train_iters = [r["iteration"] for r in lines if "eval" not in r]
    assert train_iters == [2, 4, 6, 8]
    ref_lines = [json.loads(s) for s in
                 (tmp_path / "straight" / "toy" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("loss_mse") for r in lines] == [r.get("loss_mse") for r in ref_lines]
