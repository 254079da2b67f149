"""RankingObjective: the classifier-loss-by-name + balanced-box-loss mechanism of every detector.

Checked against hand computations of the formulas in notes/detection.md section 3 (value-based
balancing lambda = L_cls / L_box, score-weighted mean, aLRP's localisation component and its
self-balancing update), not against the objective's own helpers. Float tolerances: 1e-12
absolute in float64, stated per assertion otherwise.
"""

from __future__ import annotations

import pytest
import torch

from percepta.errors import ConfigError
from percepta.losses.ranking import alrp_loss, ap_loss, rank_sort_loss
from percepta.losses.ranking_objective import (
    RankingBalanceConfig,
    RankingObjective,
    build_ranking_objective,
    weighted_mean,
)


def _case(seed: int = 0, n: int = 60, p: int = 6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=g, dtype=torch.float64)
    targets = torch.zeros(n, dtype=torch.float64)
    idx = torch.randperm(n, generator=g)
    targets[idx[:p]] = torch.rand(p, generator=g, dtype=torch.float64) * 0.8 + 0.2
    targets[idx[p : p + 5]] = -1.0
    box = torch.rand(p, generator=g, dtype=torch.float64) + 0.1
    scores = torch.rand(p, generator=g, dtype=torch.float64)
    return logits, targets, box, scores


def _objective(name: str, **balance) -> RankingObjective:
    return build_ranking_objective({"name": name}, RankingBalanceConfig(**balance), prefix="x_")


def test_rank_sort_value_balancing_and_score_weighting_match_the_formulas():
    logits, targets, box, scores = _case()
    box = box.clone().requires_grad_(True)
    out = _objective("rank_sort")(logits, targets, box, scores)
    assert set(out) == {"loss_x_rank", "loss_x_sort", "loss_x_box"}
    r, s = rank_sort_loss(logits, targets, 0.5)
    assert abs(out["loss_x_rank"].item() - r.item()) < 1e-12
    assert abs(out["loss_x_sort"].item() - s.item()) < 1e-12
    weighted = float((box * scores).sum().detach() / scores.sum())  # score-weighted, by hand
    lam = (r.item() + s.item()) / weighted
    assert abs(out["loss_x_box"].item() - lam * weighted) < 1e-12  # = L_rank + L_sort
    out["loss_x_box"].backward()
    torch.testing.assert_close(box.grad, lam * scores / scores.sum(), rtol=0, atol=1e-12)


def test_fixed_weight_and_uniform_weighting():
    logits, targets, box, scores = _case(1)
    out = _objective("rank_sort", task_balance="fixed", box_weight=2.5, score_weighting=False)(
        logits, targets, box, scores
    )
    assert abs(out["loss_x_box"].item() - 2.5 * box.mean().item()) < 1e-12


def test_zero_box_loss_gives_zero_weight_not_nan():
    logits, targets, box, scores = _case(2)
    out = _objective("rank_sort")(logits, targets, torch.zeros_like(box), scores)
    assert out["loss_x_box"].item() == 0.0 and torch.isfinite(out["loss_x_rank"])


def test_weighted_mean_guards_tiny_weights_and_empty_inputs():
    v = torch.tensor([1.0, 3.0], dtype=torch.float64)
    assert weighted_mean(v, torch.tensor([1e-14, 0.0], dtype=torch.float64)).item() == 1e-14
    assert weighted_mean(v, None).item() == 2.0
    empty = torch.zeros(0, requires_grad=True)
    z = weighted_mean(empty, torch.zeros(0))
    z.backward()  # stays connected to the graph
    assert z.item() == 0.0


def test_ap_loss_sees_binary_targets():
    logits, targets, box, scores = _case(3)
    out = _objective("ap_loss")(logits, targets, box, scores)
    binary = torch.where(targets > 0, 1.0, targets).double()
    assert abs(out["loss_x_ap"].item() - ap_loss(logits, binary, 1.0).item()) < 1e-12
    assert abs(out["loss_x_box"].item() - out["loss_x_ap"].item()) < 1e-12  # value balanced


def _h(x: torch.Tensor) -> torch.Tensor:  # delta = 1
    return torch.clamp(x / 2 + 0.5, 0, 1)


def test_alrp_localisation_component_matches_a_hand_loop():
    logits, targets, box, scores = _case(4)
    out = _objective("alrp", task_balance="fixed")(logits, targets, box, scores)
    pos = (targets > 0).nonzero().squeeze(1)  # order of appearance, aligned with `box`
    neg = targets == 0
    ranks = []
    for i in pos:
        others = pos[pos != i]
        ranks.append(1 + _h(logits[others] - logits[i]).sum() + _h(logits[neg] - logits[i]).sum())
    order = sorted(range(len(pos)), key=lambda k: -logits[pos[k]].item())
    cum, loc = 0.0, 0.0
    for k in order:
        cum += box[k].item()
        loc += cum / ranks[k].item()
    loc /= len(pos)
    assert abs(out["loss_x_alrp_loc"].item() - loc) < 1e-12
    binary = torch.where(targets > 0, 1.0, targets).double()
    cls = alrp_loss(logits, binary, box, 1.0)[0]
    assert abs(out["loss_x_alrp_cls"].item() - cls.item()) < 1e-12


def test_alrp_self_balancing_schedule_and_its_state():
    obj = _objective("alrp", task_balance="self", sb_init=50.0, sb_period=3)
    seen = []
    for seed in range(3):
        logits, targets, box, scores = _case(10 + seed)
        out = obj(logits.clone().requires_grad_(True), targets, box.clone().requires_grad_(True))
        loc_unweighted = out["loss_x_alrp_loc"].item() / 50.0
        seen.append((out["loss_x_alrp_cls"].item(), loc_unweighted))
    mean_cls = sum(c for c, _ in seen) / 3
    mean_loc = sum(e for _, e in seen) / 3
    expected = (mean_loc + mean_cls) / mean_loc
    assert abs(obj.sb_weight.item() - expected) < 1e-9
    assert obj.sb_steps.item() == 3 and not obj.sb_sums.any()  # sums restart after a period
    state = obj.state_dict()
    assert {"sb_weight", "sb_sums", "sb_steps"} <= set(state)
    fresh = _objective("alrp", task_balance="self", sb_period=3)
    fresh.load_state_dict(state)
    assert fresh.sb_weight.item() == obj.sb_weight.item()  # a resumed run continues exactly
    obj.eval()
    logits, targets, box, _ = _case(20)
    obj(logits, targets, box)
    assert obj.sb_steps.item() == 3  # evaluation does not advance the schedule


def test_iou_targets_are_detached_and_floored():
    obj = _objective("rank_sort", min_iou=0.05)
    iou = torch.tensor([0.0, 0.5, 1.2], requires_grad=True)
    t = obj.iou_targets(iou)
    assert not t.requires_grad and t.tolist() == pytest.approx([0.05, 0.5, 1.0])


@pytest.mark.parametrize(
    "cls_loss,balance,match",
    [
        ({"name": "smooth_ap"}, {}, "not a ranking classification loss"),
        ({"name": "centernet_focal"}, {}, "not a ranking classification loss"),
        ({"name": "rank_sort"}, {"task_balance": "auto"}, "task_balance"),
        ({"name": "rank_sort"}, {"min_iou": 1.0}, "min_iou"),
        ({"name": "alrp"}, {"task_balance": "self", "sb_period": 0}, "sb_period"),
        ({"name": "alrp"}, {"per_class": True}, "per_class"),
    ],
)
def test_bad_options_are_one_line_config_errors(cls_loss, balance, match):
    with pytest.raises(ConfigError, match=match) as e:
        build_ranking_objective(cls_loss, balance)
    assert "\n" not in str(e.value)


def test_no_cls_loss_means_no_objective_and_options_reach_the_loss():
    assert build_ranking_objective(None, None) is None
    assert build_ranking_objective({"name": ""}, None) is None
    obj = build_ranking_objective({"name": "rank_sort", "delta": 0.3}, None)
    assert obj.loss.delta == 0.3


def _rows_case(seed: int = 5, c: int = 3, m: int = 50):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(c, m, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.zeros(c, m, dtype=torch.float64)
    counts = [4, 0, 7][:c]  # a class without positives adds nothing
    for row, k in enumerate(counts):
        idx = torch.randperm(m, generator=g)
        targets[row, idx[:k]] = torch.rand(k, generator=g, dtype=torch.float64) * 0.7 + 0.3
        targets[row, idx[k : k + 3]] = -1.0
    p = sum(counts)
    box = torch.rand(p, generator=g, dtype=torch.float64) + 0.1
    scores = torch.rand(p, generator=g, dtype=torch.float64)
    return logits, targets, counts, box, scores


@pytest.mark.parametrize("name", ["rank_sort", "ap_loss"])
def test_per_class_ranks_each_row_alone_weighted_by_its_positives(name):
    logits, targets, counts, box, scores = _rows_case()
    out = _objective(name, per_class=True)(logits, targets, box, scores)
    total = sum(counts)
    want, grads = {}, torch.zeros_like(logits)
    for row, k in enumerate(counts):  # each class ranked alone by the plain loss functions
        if k == 0:
            continue
        x = logits.detach()[row].clone().requires_grad_(True)
        if name == "rank_sort":
            r, s = rank_sort_loss(x, targets[row], 0.5)
            parts = {"rank": r, "sort": s}
        else:
            parts = {"ap": ap_loss(x, torch.where(targets[row] > 0, 1.0, targets[row]), 1.0)}
        (sum(parts.values()) * k / total).backward()
        grads[row] = x.grad
        for key, v in parts.items():
            want[key] = want.get(key, 0.0) + v.item() * k / total
    for key, v in want.items():
        assert abs(out[f"loss_x_{key}"].item() - v) < 1e-12
    cls_terms = [v for key, v in out.items() if key != "loss_x_box"]
    sum(cls_terms).backward()
    torch.testing.assert_close(logits.grad, grads, rtol=0, atol=1e-12)
    assert logits.grad[1].abs().max().item() == 0.0  # the row without positives
    # joint ranking of the same entries differs (the rows interact): per_class is not a no-op
    joint = _objective(name)(logits.detach().reshape(-1), targets.reshape(-1), box, scores)
    assert abs(joint[f"loss_x_{next(iter(want))}"].item() - next(iter(want.values()))) > 1e-6
    # the box term is value balanced: it takes the value of the summed ranking terms
    assert abs(out["loss_x_box"].item() - sum(want.values())) < 1e-12


def test_per_class_without_positives_and_with_flat_logits():
    logits, targets, _, box, scores = _rows_case()
    empty = torch.zeros_like(targets)
    out = _objective("rank_sort", per_class=True)(logits, empty, box[:0], scores[:0])
    assert out["loss_x_rank"].item() == 0.0 and out["loss_x_box"].item() == 0.0
    out["loss_x_rank"].backward()  # connected, zero gradient
    assert logits.grad.abs().max().item() == 0.0
    with pytest.raises(ConfigError, match="per_class"):
        _objective("rank_sort", per_class=True)(logits.reshape(-1), targets.reshape(-1), box)
