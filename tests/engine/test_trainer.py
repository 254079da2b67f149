"""The training loop in one process: non-finite steps, AMP, clipping, EMA, logging, run folder."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from engine_toy import ToyDataset, ToyModel, build, make_cfg
from omegaconf import OmegaConf

from percepta.config import ConfigError
from percepta.engine import checkpoint as ck
from percepta.engine import trainer as trainer_mod
from percepta.engine.distributed import DistInfo
from percepta.engine.trainer import Trainer, TrainingError
from percepta.structures import collate


class Snapshots:
    """Hook: the model weights after every iteration."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.events: list[str] = []

    def before_train(self, trainer) -> None:
        self.events.append("before_train")
        self.weights[trainer.iteration] = _clone(trainer.model)

    def after_step(self, trainer) -> None:
        self.weights[trainer.iteration] = _clone(trainer.model)

    def after_eval(self, trainer, metrics) -> None:
        self.events.append(f"after_eval@{trainer.iteration}:{float(metrics['neg_mse']):.6f}")

    def after_train(self, trainer) -> None:
        self.events.append("after_train")


def _clone(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def _lines(run_dir):
    return [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_nonfinite_steps_are_skipped_and_count_resets(tmp_path):
    cfg = make_cfg(tmp_path, ["train.max_iters=7", "train.max_nonfinite=3", "train.log_period=1"])
    model, train_ds, _, _ = build(cfg)
    model.poison = {2, 3, 5, 6}  # never three in a row
    snaps = Snapshots()
    trainer = Trainer(cfg, model, train_ds, hooks=[snaps])
    trainer.fit()
    w = snaps.weights
    for skipped in (2, 3, 5, 6):
        assert _same(w[skipped], w[skipped - 1]), f"weights changed at skipped iteration {skipped}"
    for stepped in (1, 4, 7):
        assert not _same(w[stepped], w[stepped - 1]), f"no update at iteration {stepped}"
    assert trainer.nonfinite_count == 4 and trainer.nonfinite_in_row == 0
    skipped_lines = [r for r in _lines(tmp_path / "toy") if r.get("skipped")]
    assert [r["iteration"] for r in skipped_lines] == [2, 3, 5, 6]
    assert all(r["nonfinite_terms"] == ["loss_mse"] for r in skipped_lines)
    assert math.isfinite(w[7]["fc1.weight"].sum().item())


def test_nonfinite_in_a_row_stops_with_clear_error_and_keeps_checkpoint(tmp_path):
    cfg = make_cfg(
        tmp_path, ["train.max_iters=10", "train.max_nonfinite=3", "train.checkpoint_period=2"]
    )
    model, train_ds, _, _ = build(cfg)
    model.poison = {4, 5, 6}
    snaps = Snapshots()
    with pytest.raises(TrainingError) as info:
        Trainer(cfg, model, train_ds, hooks=[snaps]).fit()
    msg = str(info.value)
    assert "iteration 6" in msg and "3 iterations in a row" in msg and "loss_mse" in msg
    assert "last.pt is unchanged" in msg
    last = ck.load_checkpoint(tmp_path / "toy" / "checkpoints" / "last.pt")
    assert last["iteration"] == 4  # written before the stop, never after
    assert _same(last["model"], snaps.weights[3])  # the last good weights
    assert "after_train" not in snaps.events


def test_amp_bf16_on_cpu_trains(tmp_path):
    cfg = make_cfg(
        tmp_path,
        ["train.amp=true", "train.max_iters=30", "train.log_period=5", "train.optimizer.lr=0.02"],
    )
    model, train_ds, _, _ = build(cfg, dropout=0.0)
    trainer = Trainer(cfg, model, train_ds)
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    trainer.fit()
    assert model.hidden_dtype == torch.bfloat16  # autocast was really on
    losses = [r["loss_mse"] for r in _lines(tmp_path / "toy") if "loss_mse" in r]
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0]


def test_fp16_on_cpu_is_a_config_error(tmp_path):
    cfg = make_cfg(tmp_path, ["train.amp=true", "train.amp_dtype=fp16"])
    model, train_ds, _, _ = build(cfg)
    with pytest.raises(ConfigError, match="amp_dtype=fp16"):
        Trainer(cfg, model, train_ds)


def _batch(ds, idx):
    return collate([ds[i] for i in idx])


def _grads(model, images, targets):
    """Gradient of the toy's total loss, computed independently of the trainer."""
    model.zero_grad()
    out = model.fc2(torch.relu(model.norm(model.fc1(torch.stack(images).flatten(1) / 255 - 0.5))))
    y = torch.stack([t["y"] for t in targets])
    (F.mse_loss(out, y) + 0.1 * (out - y).abs().mean()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_clipping_scales_to_max_norm(tmp_path):
    cfg = make_cfg(
        tmp_path,
        [
            "train.grad_clip=0.05",
            "train.optimizer.name=sgd",
            "train.optimizer.lr=1.0",
            "train.optimizer.momentum=0.0",
            "train.optimizer.weight_decay=0.0",
        ],
    )
    model, train_ds, _, _ = build(cfg, dropout=0.0)
    images, targets = _batch(train_ds, [0, 1, 2, 3])
    ref = ToyModel(0.0)
    ref.load_state_dict(model.state_dict())
    g = _grads(ref, images, targets)
    norm = torch.sqrt(sum((v**2).sum() for v in g.values()))
    assert norm > 0.05 * 4  # clipping is active
    before = _clone(model)
    trainer = Trainer(cfg, model, train_ds)
    trainer.run_step(images, targets)
    for n, p in model.named_parameters():
        expected = before[n] - g[n] * (0.05 / norm)
        assert torch.allclose(p.detach(), expected, atol=1e-6), n
    delta = torch.sqrt(
        sum(((p.detach() - before[n]) ** 2).sum() for n, p in model.named_parameters())
    )
    assert delta == pytest.approx(0.05, rel=1e-4)


def test_ema_follows_closed_form_and_is_used_for_evaluation(tmp_path):
    decay = 0.6
    cfg = make_cfg(tmp_path, ["train.ema=true", f"train.ema_decay={decay}"])
    model, train_ds, val_ds, evaluator = build(cfg, dropout=0.0)
    trainer = Trainer(cfg, model, train_ds, val_dataset=val_ds, evaluator=evaluator)
    ema = None
    for it in range(4):
        trainer.run_step(*_batch(train_ds, [4 * it + j for j in range(4)]))
        trainer.ema_hook.after_step(trainer)  # the EMA hook runs after each applied step
        w = _clone(model)
        ema = w if ema is None else {k: decay * ema[k] + (1 - decay) * w[k] for k in w}
    for k, v in trainer.ema.module.state_dict().items():
        assert torch.allclose(v, ema[k], atol=1e-6), k
    metrics = trainer.evaluate()
    ref = ToyModel(0.0)
    ref.load_state_dict(ema)
    ref.eval()
    with torch.no_grad():
        pred = torch.stack([p["score"] for p in ref([img for img, _ in val_ds])])
    mse = F.mse_loss(pred.double(), val_ds.y.double()).item()
    assert float(metrics["neg_mse"]) == pytest.approx(-mse, rel=1e-6)
    raw = trainer.evaluate(model=trainer.model)
    assert float(raw["neg_mse"]) != pytest.approx(float(metrics["neg_mse"]), rel=1e-6)
    assert model.training  # evaluation restored train mode


def test_run_folder_metrics_tensorboard_best_and_hooks(tmp_path):
    cfg = make_cfg(
        tmp_path,
        [
            "train.tensorboard=true",
            "train.eval_period=3",
            "train.max_iters=9",
            "train.log_period=3",
            "train.scheduler.name=cosine",
            "train.scheduler.warmup_iters=4",
            "train.progress=true",
        ],
    )
    model, train_ds, val_ds, evaluator = build(cfg)
    snaps = Snapshots()
    metrics = Trainer(
        cfg, model, train_ds, val_dataset=val_ds, evaluator=evaluator, hooks=[snaps]
    ).fit()
    run = tmp_path / "toy"
    assert OmegaConf.to_container(OmegaConf.load(run / "config.yaml")) == OmegaConf.to_container(
        cfg
    )
    lines = _lines(run)
    train_lines = [r for r in lines if "eval" not in r]
    eval_lines = [r for r in lines if "eval" in r]
    assert [r["iteration"] for r in train_lines] == [3, 6, 9]
    for r in train_lines:
        for key in ("lr", "loss_mse", "loss_aux", "mae", "total_loss", "time", "images_per_s"):
            assert key in r, key
        assert r["total_loss"] == pytest.approx(r["loss_mse"] + r["loss_aux"], rel=1e-5)
        t = r["iteration"] - 1  # the lr the logged step used: closed form of warm-up x cosine
        warm = 0.001 + 0.999 * t / 4 if t < 4 else 1.0
        assert r["lr"] == pytest.approx(0.01 * warm * (1 + math.cos(math.pi * t / 9)) / 2)
    assert [r["iteration"] for r in eval_lines] == [3, 6, 9]
    assert set(eval_lines[-1]["eval"]) == {"neg_mse", "count", "nested/mse"}  # scalars only
    assert eval_lines[-1]["eval"]["neg_mse"] == pytest.approx(float(metrics["neg_mse"]))
    full = json.loads((run / "eval" / "metrics_9.json").read_text())
    assert len(full["per_dim"]) == 2 and len(full["per_dim_list"]) == 2
    best_value = max(r["eval"]["neg_mse"] for r in eval_lines)
    best_iter = [r["iteration"] for r in eval_lines if r["eval"]["neg_mse"] == best_value][0]
    best = ck.load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["best"]["value"] == pytest.approx(best_value)
    assert best["iteration"] == best["best"]["iteration"] == best_iter
    assert ck.load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 9
    assert snaps.events[0] == "before_train" and snaps.events[-1] == "after_train"
    assert sum(e.startswith("after_eval") for e in snaps.events) == 3

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((run / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/total_loss", "train/lr", "train/images_per_s", "eval/neg_mse"} <= tags
    assert [e.step for e in acc.Scalars("train/total_loss")] == [3, 6, 9]


def test_loss_transform_replaces_the_sum(tmp_path):
    seen = []

    def only_mse(loss_dict, trainer):
        seen.append(trainer.iteration)
        return loss_dict["loss_mse"] * 2

    cfg = make_cfg(tmp_path, ["train.max_iters=2", "train.log_period=1"])
    model, train_ds, _, _ = build(cfg)
    Trainer(cfg, model, train_ds, loss_transform=only_mse).fit()
    assert seen == [0, 1]
    for r in _lines(tmp_path / "toy"):  # the optimised total is logged beside the raw sum
        assert r["optimized_loss"] == pytest.approx(2 * r["loss_mse"], rel=1e-6)
        raw = sum(v for k, v in r.items() if k.startswith("loss"))
        assert r["total_loss"] == pytest.approx(raw, rel=1e-6)


def test_fixed_value_balance_from_config_pins_the_optimised_total(tmp_path):
    cfg = make_cfg(
        tmp_path,
        [
            "train.max_iters=3",
            "train.log_period=1",
            "train.loss_balance.enabled=true",
            "train.loss_balance.default_target=0.25",
        ],
    )
    model, train_ds, _, _ = build(cfg)
    trainer = Trainer(cfg, model, train_ds)
    trainer.fit()
    rows = _lines(tmp_path / "toy")
    terms = [k for k in rows[0] if k.startswith("loss")]
    for r in rows:  # every (unmatched) term pinned to 0.25; raw terms logged unchanged
        assert r["optimized_loss"] == pytest.approx(0.25 * len(terms), rel=1e-5)
        assert r["total_loss"] == pytest.approx(sum(r[k] for k in terms), rel=1e-6)


def test_resume_without_checkpoint_starts_fresh_with_notice(tmp_path, capsys):
    cfg = make_cfg(tmp_path, ["resume=true", "train.max_iters=2"])
    model, train_ds, _, _ = build(cfg)
    trainer = Trainer(cfg, model, train_ds)
    trainer.fit()
    out = capsys.readouterr()
    assert "no checkpoint at" in out.out + out.err and "starting from scratch" in out.out + out.err
    assert trainer.iteration == 2


def test_global_batch_must_divide_by_world_size(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod.pdist, "info", lambda: DistInfo(0, 3, 0, "gloo"))
    cfg = make_cfg(tmp_path, ["train.batch_size=4"])
    model, train_ds, _, _ = build(cfg)
    with pytest.raises(ConfigError, match=r"train.batch_size=4 .*global batch.*\(3\)"):
        Trainer(cfg, model, train_ds)


def test_too_small_dataset_and_missing_loss_terms(tmp_path):
    cfg = make_cfg(tmp_path, ["train.batch_size=8"])
    with pytest.raises(Exception, match="fewer than one global batch"):
        Trainer(cfg, ToyModel(), ToyDataset(5))
    cfg = make_cfg(tmp_path, ["train.max_iters=1"])
    model, train_ds, _, _ = build(cfg)
    with pytest.raises(TrainingError, match=r"at least one 'loss\*' term.*\['mae'\]"):
        Trainer(cfg, model, train_ds, loss_transform=None, hooks=[]).run_step(
            *_patched_batch(model, train_ds)
        )


def _patched_batch(model, ds):
    model.forward = lambda images, targets=None: {"mae": torch.tensor(1.0)}
    return _batch(ds, [0, 1, 2, 3])


def test_evaluation_only_trainer(tmp_path, capsys):
    """``percepta eval`` builds a Trainer without training data and calls ``evaluate()``."""
    cfg = make_cfg(tmp_path, ["train.batch_size=3"])
    model, _, val_ds, evaluator = build(cfg)
    trainer = Trainer(cfg, model, None, val_dataset=val_ds, evaluator=evaluator)
    metrics = trainer.evaluate()
    assert int(metrics["count"]) == len(val_ds)
    assert "neg_mse" not in capsys.readouterr().out  # the caller prints the table
    assert not (tmp_path / "toy").exists()  # nothing written outside fit
    with pytest.raises(TrainingError, match="no training dataset"):
        trainer.fit()
    assert Trainer(cfg, ToyModel(), None).evaluate() == {}


def test_fresh_run_in_an_old_run_folder_keeps_the_old_log_aside(tmp_path):
    cfg = make_cfg(tmp_path, ["train.max_iters=2", "train.log_period=1"])
    model, train_ds, _, _ = build(cfg)
    Trainer(cfg, model, train_ds).fit()
    first = (tmp_path / "toy" / "metrics.jsonl").read_text()
    model, train_ds, _, _ = build(cfg)
    Trainer(cfg, model, train_ds).fit()  # not resume: a new run, its own log
    assert (tmp_path / "toy" / "metrics.prev.jsonl").read_text() == first
    iters = [r["iteration"] for r in _lines(tmp_path / "toy") if "total_loss" in r]
    assert iters == [1, 2]
