"""Optimizer parameter groups and the lr schedule against closed-form values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from percepta.config import ConfigError
from percepta.engine.optim import build_optimizer, build_scheduler, param_groups
from percepta.engine.options import OptimizerConfig, SchedulerConfig


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 2, bias=False)
        self.ln = nn.LayerNorm(2)
        self.head = nn.Linear(2, 1)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_no_decay_on_norm_and_bias():
    net = Net()
    opt = build_optimizer(net, OptimizerConfig(name="adamw", lr=0.1, weight_decay=0.05))
    assert isinstance(opt, torch.optim.AdamW)
    by_wd = {g["weight_decay"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    assert set(by_wd) == {0.05, 0.0}
    decay = {id(net.conv.weight), id(net.fc.weight), id(net.head.weight)}
    no_decay = {
        id(p)
        for p in (
            net.conv.bias,
            net.bn.weight,
            net.bn.bias,
            net.gn.weight,
            net.gn.bias,
            net.ln.weight,
            net.ln.bias,
            net.head.bias,
        )
    }
    assert by_wd[0.05] == decay
    assert by_wd[0.0] == no_decay
    assert all(id(p) not in decay | no_decay for p in net.frozen.parameters())


def test_decay_everywhere_when_disabled_and_sgd_options():
    net = Net()
    opt = build_optimizer(
        net,
        OptimizerConfig(
            name="sgd",
            lr=0.2,
            weight_decay=0.01,
            momentum=0.5,
            nesterov=True,
            no_decay_norm_and_bias=False,
        ),
    )
    assert isinstance(opt, torch.optim.SGD)
    assert len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert g["weight_decay"] == 0.01 and g["momentum"] == 0.5 and g["nesterov"] and g["lr"] == 0.2
    n_trainable = sum(1 for p in net.parameters() if p.requires_grad)
    assert len(g["params"]) == n_trainable


def test_no_decay_group_really_does_not_decay():
    """With zero gradients AdamW only applies weight decay: biases must not move."""
    net = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    opt = build_optimizer(net, OptimizerConfig(name="adamw", lr=0.5, weight_decay=0.5))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = net.state_dict()
    assert torch.allclose(after["0.weight"], before["0.weight"] * (1 - 0.5 * 0.5))
    for k in ("0.bias", "1.weight", "1.bias"):
        assert torch.equal(after[k], before[k])


def test_shared_parameter_appears_once():
    a = nn.Linear(2, 2)
    net = nn.ModuleDict({"a": a, "b": a})
    groups = param_groups(net, 0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == 2


def _lrs(sched_cfg: SchedulerConfig, max_iters: int, base_lr: float = 0.1) -> list[float]:
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = build_scheduler(opt, sched_cfg, max_iters)
    out = []
    for _ in range(max_iters):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_with_linear_warmup_closed_form():
    lr, W, f0, T, m = 0.1, 5, 0.01, 40, 0.05
    got = _lrs(
        SchedulerConfig(name="cosine", warmup_iters=W, warmup_factor=f0, min_lr_factor=m), T, lr
    )
    for t, value in enumerate(got):
        cos = m + (1 - m) * (1 + math.cos(math.pi * t / T)) / 2
        warm = f0 + (1 - f0) * t / W if t < W else 1.0
        assert value == pytest.approx(lr * cos * warm, rel=1e-12, abs=1e-15), t
    assert got[0] == pytest.approx(lr * f0)


def test_step_with_warmup_and_constant():
    got = _lrs(
        SchedulerConfig(
            name="step", warmup_iters=3, warmup_factor=0.1, milestones=[6, 10], gamma=0.5
        ),
        14,
        1.0,
    )
    expected = [
        (0.1 + 0.9 * t / 3 if t < 3 else 1.0) * 0.5 ** ((t >= 6) + (t >= 10)) for t in range(14)
    ]
    assert got == pytest.approx(expected, rel=1e-12)
    assert _lrs(SchedulerConfig(name="constant"), 5, 0.3) == [0.3] * 5


def test_scheduler_resume_is_exact():
    cfg = SchedulerConfig(name="cosine", warmup_iters=4)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    s1 = build_scheduler(opt, cfg, 20)
    for _ in range(7):
        opt.step()
        s1.step()
    state, opt_state = s1.state_dict(), opt.state_dict()
    ref = []
    for _ in range(6):
        opt.step()
        s1.step()
        ref.append(opt.param_groups[0]["lr"])
    p2 = nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.SGD([p2], lr=0.1)
    s2 = build_scheduler(opt2, cfg, 20)
    opt2.load_state_dict(opt_state)
    s2.load_state_dict(state)
    got = []
    for _ in range(6):
        opt2.step()
        s2.step()
        got.append(opt2.param_groups[0]["lr"])
    # the same float64 schedule code on the same machine after a state round trip: bit-identical
    # in practice; asserted to 1e-12 relative
    assert got == pytest.approx(ref, rel=1e-12)


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="train.optimizer.name.*'adamm'"):
        build_optimizer(nn.Linear(1, 1), OptimizerConfig(name="adamm"))
    with pytest.raises(ConfigError, match="train.scheduler.name.*'poly'"):
        build_scheduler(
            torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1), SchedulerConfig(name="poly"), 10
        )
