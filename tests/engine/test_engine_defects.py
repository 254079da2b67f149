"""Engine defects of issue 10, each pinned by a test that failed before its fix.

- a fresh run with an existing run name replaced the trained ``last.pt``;
- SIGINT/SIGTERM lost everything since the last checkpoint;
- the EMA moved after an fp16 step that the ``GradScaler`` skipped;
- fixed-value loss balancing used each rank's own loss values under DDP (2 processes != 1),
  and BatchNorm statistics were per rank (``train.sync_bn``);
- files the engine writes (``config.yaml``, ``metrics.jsonl`` rewrites) were written in place;
- ``percepta train`` with no config reported ``num_classes`` instead of the missing config.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from engine_toy import ToyModel, build, make_cfg, run_ranks

from percepta import config as config_lib
from percepta.engine import checkpoint as ck
from percepta.engine.launch import train
from percepta.engine.logging import truncate_jsonl
from percepta.engine.trainer import Trainer, TrainingInterrupted
from percepta.errors import ConfigError, PerceptaError

TOY = Path(__file__).with_name("toy.py")
REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------ run folder reuse
def test_fresh_run_refuses_to_replace_a_trained_checkpoint(tmp_path):
    last = tmp_path / "runs" / "mine" / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"trained weights")
    cfg = config_lib.load(
        None, [f"output_dir={tmp_path / 'runs'}", "name=mine", "data.train.ann_file=none.json"]
    )
    with pytest.raises(PerceptaError) as e:
        train(cfg)
    msg = str(e.value)
    assert "resume=true" in msg and "overwrite=true" in msg and "name=" in msg
    assert last.read_bytes() == b"trained weights"  # untouched


def test_train_without_a_config_names_the_missing_config(capsys):
    from percepta.cli import main

    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert "no config given" in err and "num_classes" not in err


# ------------------------------------------------------------------------ interrupts
class SignalAt:
    """Hook: the process sends itself ``signum`` right after iteration ``at``."""

    def __init__(self, at: int, signum: int) -> None:
        self.at, self.signum = at, signum

    def after_step(self, trainer) -> None:
        if trainer.iteration == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_last_checkpoint_and_resume_is_exact(tmp_path, capsys, signum):
    # a background job starts with SIGINT ignored (and the trainer respects that): make it
    # deliverable for this test, as in an interactive shell
    previous = signal.signal(
        signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler
    )
    try:
        _interrupt_and_resume(tmp_path, signum)
    finally:
        signal.signal(signum, previous)


def _interrupt_and_resume(tmp_path, signum):
    over = ["train.max_iters=6", "train.checkpoint_period=0"]
    cfg = make_cfg(tmp_path / "a", over)
    model, train_ds, val_ds, ev = build(cfg, dropout=0.0)
    with pytest.raises(TrainingInterrupted) as e:
        Trainer(
            cfg, model, train_ds, val_dataset=val_ds, evaluator=ev, hooks=[SignalAt(3, signum)]
        ).fit()
    assert e.value.exit_code == 128 + signum
    assert "resume=true" in str(e.value) and "iteration 3/6" in str(e.value)
    saved = ck.load_checkpoint(tmp_path / "a" / "toy" / "checkpoints" / "last.pt")
    assert saved["iteration"] == 3  # checkpoint_period=0: only the interrupt wrote it
    assert signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler)  # restored

    resumed_cfg = make_cfg(tmp_path / "a", [*over, "resume=true"])
    model2, train2, val2, ev2 = build(resumed_cfg, dropout=0.0)
    Trainer(resumed_cfg, model2, train2, val_dataset=val2, evaluator=ev2).fit()

    ref_cfg = make_cfg(tmp_path / "b", over)
    ref, train3, val3, ev3 = build(ref_cfg, dropout=0.0)
    Trainer(ref_cfg, ref, train3, val_dataset=val3, evaluator=ev3).fit()
    for k, v in ref.state_dict().items():  # same machine, same kernels: 1e-6 is generous
        torch.testing.assert_close(model2.state_dict()[k], v, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------ AMP + EMA
class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


class InfGradAt(ToyModel):
    """A finite loss whose gradient is inf on the given 1-based training calls (what an fp16
    overflow produces): the GradScaler must skip those steps."""

    def __init__(self, bad_calls: set[int]) -> None:
        super().__init__(dropout=0.0)
        self.bad_calls = bad_calls

    def forward(self, images, targets=None):
        out = super().forward(images, targets)
        if self.training and self.calls in self.bad_calls:
            out["loss_mse"] = _InfGrad.apply(out["loss_mse"])
        return out


def test_ema_does_not_move_after_a_step_the_grad_scaler_skipped(tmp_path):
    cfg = make_cfg(tmp_path, ["train.ema=true", "train.ema_decay=0.5", "train.max_iters=3"])
    _, train_ds, _, _ = build(cfg)
    torch.manual_seed(0)
    model = InfGradAt({3})
    trainer = Trainer(cfg, model, train_ds)
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=True)  # an fp16-style loss scaler
    images, targets = zip(*[train_ds[i] for i in range(4)])
    for _ in range(2):
        trainer.run_step(list(images), list(targets))
        assert trainer.step_applied
        trainer.ema_hook.after_step(trainer)
    ema_before = {k: v.clone() for k, v in trainer.ema.module.state_dict().items()}
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    scale = trainer.scaler.get_scale()
    trainer.run_step(list(images), list(targets))
    trainer.ema_hook.after_step(trainer)
    assert trainer.step_finite and not trainer.step_applied
    assert trainer.scaler.get_scale() < scale  # the scaler saw inf gradients and backed off
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights_before[k]), k  # the optimizer step was skipped
    for k, v in trainer.ema.module.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(v, ema_before[k]), k  # ... and so was the EMA update


# ------------------------------------------------------------------------ atomic writes
def test_config_and_jsonl_rewrites_are_atomic(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text("old: 1\n")
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in (1, 2, 3)))

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        config_lib.save(cfg, path)
    with pytest.raises(OSError):
        truncate_jsonl(log, 2)
    monkeypatch.undo()
    assert path.read_text() == "old: 1\n"  # the old content survived the failed write
    assert len(log.read_text().splitlines()) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no debris
    truncate_jsonl(log, 2)
    assert [json.loads(x)["iteration"] for x in log.read_text().splitlines()] == [1, 2]


# ------------------------------------------------------------------------ DDP equivalence
BALANCED_BN = [
    "train.max_iters=4",
    "train.batch_size=8",
    "train.log_period=4",
    "train.checkpoint_period=0",
    "train.optimizer.name=sgd",
    "train.optimizer.lr=0.1",
    "train.optimizer.momentum=0.0",
    "train.optimizer.weight_decay=0.0",
    "train.scheduler.name=constant",
    "train.loss_balance.enabled=true",
    "train.loss_balance.targets={mse: 1.0, aux: 0.5}",
    "train.sync_bn=true",
]


@pytest.mark.dist
def test_two_processes_with_balancing_and_sync_bn_match_one(tmp_path):
    spec = {
        "output_dir": str(tmp_path),
        "overrides": BALANCED_BN,
        "dropout": 0.0,
        "norm": "batch",
        "n_train": 16,
        "n_val": 4,
        "evaluator": "metric",
        "run_dir": str(tmp_path / "rank{rank}"),
    }
    results = run_ranks(spec)
    assert all(rc == 0 for rc, _ in results), results
    ddp = ck.load_checkpoint(tmp_path / "rank0" / "checkpoints" / "last.pt")["model"]

    cfg = make_cfg(tmp_path / "single", BALANCED_BN)
    model, train_ds, val_ds, ev = build(
        cfg, dropout=0.0, n_train=16, n_val=4, evaluator="metric", norm="batch"
    )
    init = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(cfg, model, train_ds, val_dataset=val_ds, evaluator=ev).fit()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, init[k])}
    # (fc1.bias gets no gradient: the BatchNorm after it removes any per-channel shift)
    assert {"fc1.weight", "norm.weight", "norm.running_mean", "fc2.weight"} <= changed
    for k, v in model.state_dict().items():
        # float32 sums in another order (per-rank partial sums): 1e-5 absolute
        torch.testing.assert_close(ddp[k].float(), v.float(), rtol=0, atol=1e-5, msg=k)


def test_sync_bn_is_plain_batchnorm_in_one_process():
    from percepta.engine.sync_bn import CpuSyncBatchNorm, convert_sync_batchnorm

    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    conv = convert_sync_batchnorm(ToyModel(norm="batch"))
    assert isinstance(conv.norm, CpuSyncBatchNorm)
    sync = convert_sync_batchnorm(ref)
    x = torch.randn(6, 4)
    # not distributed: the converted layer computes exactly torch's BatchNorm (same weights)
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    torch.testing.assert_close(sync(x), plain(x), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------ tasks and configs
def test_unknown_task_and_task_model_mismatch_are_errors():
    with pytest.raises(ConfigError, match="'segmentation' is not a task"):
        config_lib.load(None, ["task=segmentation"])
    with pytest.raises(ConfigError, match="Did you mean 'detection'"):
        config_lib.load(None, ["task=detectoin"])
    assert config_lib.load(None, []).task == "detection"  # empty task = the model's task
    # (a known task whose model differs: tests/engine/test_task_contract.py, with test tasks)


def test_nested_list_sections_suggest_the_nearest_key():
    with pytest.raises(ConfigError) as e:
        config_lib.load(None, ["model.distill.teachers=[{checkpoin: t.pt}]"])
    assert "'checkpoin' in a TeacherConfig entry" in str(e.value)
    assert "Did you mean 'checkpoint'?" in str(e.value)
    with pytest.raises(ConfigError, match="Did you mean 'without_labels'"):
        config_lib.load(None, ["model.distill.without_label=true"])
    with pytest.raises(ConfigError, match="unknown config key 'distill'"):
        config_lib.load(None, ["distill.without_labels=true"])  # moved into the model section


def test_an_ignored_sigint_stays_ignored(tmp_path):
    """A background job (SIGINT ignored, as shells start them) is not made interruptible."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        cfg = make_cfg(tmp_path, ["train.max_iters=4", "train.checkpoint_period=0"])
        model, train_ds, val_ds, ev = build(cfg, dropout=0.0)
        Trainer(cfg, model, train_ds, hooks=[SignalAt(2, signal.SIGINT)]).fit()  # no raise
        assert ck.load_checkpoint(tmp_path / "toy" / "checkpoints" / "last.pt")["iteration"] == 4
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.dist
def test_a_data_error_on_one_rank_stops_every_rank(tmp_path):
    """Rank 1 cannot read its images: both processes stop with the error (no rank is left
    waiting in a collective until a time-out)."""
    spec = {
        "output_dir": str(tmp_path),
        "overrides": ["train.max_iters=3", "train.batch_size=4"],
        "n_train": 16,
        "n_val": 4,
        "run_dir": str(tmp_path / "rank{rank}"),
        "bad_on_ranks": [1],
    }
    results = run_ranks(spec, timeout=90)
    assert all(rc != 0 for rc, _ in results), results
    assert "unreadable" in results[1][1] and "samples" in results[1][1]
    assert "another process hit a data error" in results[0][1]
