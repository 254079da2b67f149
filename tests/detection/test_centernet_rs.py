"""RS-CenterNet (:mod:`percepta.detection.centernet_rs`): positives, IoU targets, ignored cells
and box losses against hand-worked numbers; value balancing; the focal default unchanged;
config sections; a batch without objects; a tiny learning check and its ONNX export."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from tests.detection.toy_scenes import toy_batch
from torch import nn

from percepta import config
from percepta.detection.backbones import Backbone
from percepta.detection.centernet import CenterNet, CenterNetConfig, build_centernet
from percepta.detection.centernet_rs import centernet_ranking_losses, expand_positive_cells
from percepta.detection.centernet_targets import build_targets
from percepta.errors import ConfigError
from percepta.losses.focal import penalty_reduced_focal_loss, reg_l1_loss
from percepta.losses.ranking import rank_sort_loss
from percepta.losses.ranking_objective import RankingBalanceConfig, build_ranking_objective
from percepta.structures import make_target

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _stub_model(**kw) -> CenterNet:
    backbone = Backbone(nn.Conv2d(3, 16, 32, stride=32), 16, 32, "stub")
    kw.setdefault("input_size", 64)
    kw.setdefault("neck_channels", (16, 16, 16))
    kw.setdefault("head_conv", 8)
    return CenterNet(backbone, kw.pop("num_classes", 2), **kw)


def _rs_model(**kw) -> CenterNet:
    kw.setdefault("cls_loss", {"name": "rank_sort"})
    # an untrained size head predicts (near-)empty boxes: IoU 0 would make every object a
    # negative (no positive at all, so no gradient); the preset floors the targets at 0.05
    kw.setdefault("ranking", {"min_iou": 0.05})
    return _stub_model(**kw)


def _terms(losses: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in losses.items() if k.startswith("loss")}


class _Spy:
    """Wraps an objective and records what the head hands it."""

    def __init__(self, objective) -> None:
        self.objective, self.calls = objective, []
        self.per_class = objective.per_class

    def iou_targets(self, iou):
        return self.objective.iou_targets(iou)

    def __call__(self, logits, targets, box_losses, box_scores=None):
        self.calls.append((logits, targets, box_losses, box_scores))
        return self.objective(logits, targets, box_losses, box_scores)


# ----------------------------------------------------------------------------- hand-made case
# 8x8 map, C=2, two images; boxes in output-map units (centre, floored cell, wh, offset):
#   image 0: A class 0 [1,1,5,4]       centre (3.0,2.5) cell (3,2) wh (4,3)     reg (0,0.5)
#            B class 1 [4,4,7,7]       centre (5.5,5.5) cell (5,5) wh (3,3)     reg (.5,.5)
#            C class 0 [2,1.5,4.6,3.9] centre (3.3,2.7) cell (3,2) wh (2.6,2.4) reg (.3,.7)
#            ignore [0,5.2,2,8] -> columns 0-1, rows 5-7
#   image 1: D class 1 [.5,.5,2.5,6.5] centre (1.5,3.5) cell (1,3) wh (2,6)     reg (.5,.5)
#            E class 0 [5,0,7,.5]      centre (6,.25)   cell (6,0) wh (2,.5)    reg (0,.25)
#            ignore [1,3,2,4] -> the cell (1,3) only (D's: it stays positive in class 1)
# Predictions: offset 0.5 everywhere; size (3,2) in image 0, (2,3) in image 1 except (-1,2)
# at E's cell (clamped to an empty box).
#   A/C share cell (3,2): predicted box [2,1.5,5,3.5] (area 6); IoU with A = 6/12 = 0.5,
#       with C = 5.2/7.04 -> C wins (the later slot: highest IoU, not first).
#   B: predicted [4,4.5,7,6.5], IoU 6/9. D: predicted [.5,2,2.5,5], IoU 6/12.
#   E: empty predicted box, IoU 0 -> floored at min_iou = 0.05.
H = W = 8
BOXES = [
    [[1.0, 1.0, 5.0, 4.0], [4.0, 4.0, 7.0, 7.0], [2.0, 1.5, 4.6, 3.9]],
    [[0.5, 0.5, 2.5, 6.5], [5.0, 0.0, 7.0, 0.5]],
]
LABELS = [[0, 1, 0], [1, 0]]
IGNORE = [[[0.0, 5.2, 2.0, 8.0]], [[1.0, 3.0, 2.0, 4.0]]]
# per positive, by hand: (image, class, x, y, IoU target, gt wh, gt reg, predicted wh)
POSITIVES = [
    (0, 0, 3, 2, 5.2 / 7.04, (2.6, 2.4), (0.3, 0.7), (3.0, 2.0)),  # C (beats A)
    (0, 1, 5, 5, 6.0 / 9.0, (3.0, 3.0), (0.5, 0.5), (3.0, 2.0)),  # B
    (1, 0, 6, 0, 0.05, (2.0, 0.5), (0.0, 0.25), (-1.0, 2.0)),  # E (floored)
    (1, 1, 1, 3, 6.0 / 12.0, (2.0, 6.0), (0.5, 0.5), (2.0, 3.0)),  # D
]


def _hand_case() -> tuple[dict, dict]:
    tg = build_targets(
        [torch.tensor(b, dtype=torch.float64) for b in BOXES],
        [torch.tensor(lab) for lab in LABELS],
        2,
        (H, W),
        max_objs=8,
        ignore_boxes=[torch.tensor(b, dtype=torch.float64) for b in IGNORE],
    )
    torch.manual_seed(3)
    wh = torch.empty(2, 2, H, W)
    wh[0, 0], wh[0, 1] = 3.0, 2.0
    wh[1, 0], wh[1, 1] = 2.0, 3.0
    wh[1, :, 0, 6] = torch.tensor([-1.0, 2.0])
    out = {
        "logits": torch.randn(2, 2, H, W, requires_grad=True),
        "wh": wh.requires_grad_(),
        "reg": torch.full((2, 2, H, W), 0.5, requires_grad=True),
    }
    out["heat"] = torch.sigmoid(out["logits"])
    return out, tg


def _expected_targets() -> torch.Tensor:
    """Plain loops over every cell: -1 in ignore regions, the IoU target at positives, else 0."""
    exp = torch.zeros(2, 2, H, W, dtype=torch.float64)
    for b, boxes in enumerate(IGNORE):
        for x1, y1, x2, y2 in boxes:
            for y in range(H):
                for x in range(W):
                    if math.floor(x1) <= x < math.ceil(x2) and math.floor(y1) <= y < math.ceil(y2):
                        exp[b, :, y, x] = -1
    for b, c, x, y, iou, *_ in POSITIVES:
        exp[b, c, y, x] = iou
    return exp.reshape(-1)


def test_positives_iou_targets_and_ignored_cells_match_hand_computation() -> None:
    out, tg = _hand_case()
    objective = build_ranking_objective({"name": "rank_sort"}, RankingBalanceConfig(min_iou=0.05))
    spy = _Spy(objective)
    losses = centernet_ranking_losses(spy, out, tg, num_classes=2, wh_weight=0.1, off_weight=1.0)
    ((logits, targets, box_losses, scores),) = spy.calls
    torch.testing.assert_close(targets.double(), _expected_targets(), rtol=0, atol=1e-6)
    # the positives are exactly the cells whose target heat is 1 (shared cell counted once)
    assert torch.equal(
        (targets > 0).nonzero().squeeze(1), tg["heatmap"].reshape(-1).eq(1).nonzero().squeeze(1)
    )
    # box losses and score weights in the positives' order of appearance (ascending flat index)
    exp_box, exp_flat = [], []
    for b, c, x, y, _iou, gwh, greg, pwh in POSITIVES:
        size = (abs(pwh[0] - gwh[0]) + abs(pwh[1] - gwh[1])) / 2
        off = (abs(0.5 - greg[0]) + abs(0.5 - greg[1])) / 2
        exp_box.append(0.1 * size + 1.0 * off)
        exp_flat.append(((b * 2 + c) * H + y) * W + x)
    assert exp_flat == sorted(exp_flat)
    torch.testing.assert_close(
        box_losses.double(), torch.tensor(exp_box, dtype=torch.float64), rtol=1e-6, atol=1e-6
    )
    exp_scores = torch.sigmoid(out["logits"].detach().reshape(-1)[exp_flat])
    torch.testing.assert_close(scores, exp_scores, rtol=1e-6, atol=0)
    assert logits.dtype == torch.float32 and logits.shape == (2 * 2 * H * W,)
    assert set(losses) == {"loss_rank", "loss_sort", "loss_box"}


def test_per_class_ranks_each_class_channel_alone() -> None:
    # ranking.per_class: the head hands the objective one row per class channel, [C, B*H*W],
    # and the losses are each channel's own RS loss weighted by its share of the positives
    out, tg = _hand_case()
    balance = RankingBalanceConfig(min_iou=0.05, per_class=True)
    spy = _Spy(build_ranking_objective({"name": "rank_sort"}, balance))
    losses = centernet_ranking_losses(spy, out, tg, num_classes=2, wh_weight=0.1, off_weight=1.0)
    ((logits, targets, _, _),) = spy.calls
    exp = _expected_targets().view(2, 2, H, W)  # [B, C, H, W] by plain loops
    want_logits = out["logits"].detach()
    for c in range(2):
        channel = torch.cat([want_logits[b, c].reshape(-1) for b in range(2)])
        assert torch.equal(logits[c].detach(), channel)
        channel_t = torch.cat([exp[b, c].reshape(-1) for b in range(2)])
        torch.testing.assert_close(targets[c].double(), channel_t, rtol=0, atol=1e-6)
    counts = [(exp[:, c] > 0).sum().item() for c in range(2)]
    want = sum(
        rank_sort_loss(logits[c].detach(), targets[c], 0.5)[0].item() * counts[c] / sum(counts)
        for c in range(2)
        if counts[c]
    )
    assert abs(losses["loss_rank"].item() - want) < 1e-6


@pytest.mark.parametrize("radius", [1, 2])
def test_ignore_radius_ignores_the_cells_around_each_peak_in_its_channel(radius) -> None:
    out, tg = _hand_case()
    objective = build_ranking_objective({"name": "rank_sort"}, RankingBalanceConfig(min_iou=0.05))
    spy = _Spy(objective)
    centernet_ranking_losses(spy, out, tg, num_classes=2, ignore_radius=radius)
    exp = _expected_targets().reshape(2, 2, H, W)
    for b, c, x, y, *_ in POSITIVES:  # plain loops: Chebyshev distance <= radius, same channel
        for yy in range(max(0, y - radius), min(H, y + radius + 1)):
            for xx in range(max(0, x - radius), min(W, x + radius + 1)):
                if exp[b, c, yy, xx] <= 0:
                    exp[b, c, yy, xx] = -1
    torch.testing.assert_close(spy.calls[0][1].double(), exp.reshape(-1), rtol=0, atol=1e-6)


def test_ignore_heat_ignores_the_gaussian_cells_above_the_threshold() -> None:
    # one big object (a Gaussian of radius > 0) on a 16 x 16 map, class 1 of 2
    tg = build_targets(
        [torch.tensor([[1.0, 2.0, 13.0, 12.0]], dtype=torch.float64)],
        [torch.tensor([1])],
        2,
        (16, 16),
        max_objs=4,
    )
    out = {
        "logits": torch.randn(1, 2, 16, 16),
        "wh": torch.full((1, 2, 16, 16), 10.0),
        "reg": torch.full((1, 2, 16, 16), 0.5),
    }
    objective = build_ranking_objective({"name": "rank_sort"}, RankingBalanceConfig(min_iou=0.05))
    spy = _Spy(objective)
    centernet_ranking_losses(spy, out, tg, num_classes=2, ignore_heat=0.3)
    targets = spy.calls[0][1]
    heat = tg["heatmap"].reshape(-1)
    assert int((heat >= 0.3).sum()) > 1  # the Gaussian spans several cells: the test bites
    for k in range(heat.numel()):  # plain loop over cells
        if heat[k] == 1:
            assert targets[k] > 0  # the peak stays a positive
        elif heat[k] >= 0.3:
            assert targets[k] == -1
        else:
            assert targets[k] == 0


def test_positive_radius_makes_every_cell_near_a_centre_a_positive_of_the_same_box() -> None:
    # objects centred at (3.2, 3.7) (interior) and (0.6, 0.4) (a corner) on an 8 x 8 map
    boxes = torch.tensor([[1.2, 1.7, 5.2, 5.7], [0.0, 0.0, 1.2, 0.8]], dtype=torch.float64)
    tg = build_targets([boxes], [torch.tensor([0, 1])], 2, (8, 8), max_objs=4)
    big = expand_positive_cells(tg, 1)
    valid = big["mask"].reshape(-1).bool()
    cells = big["ind"].reshape(-1)[valid].tolist()
    # plain loops: the 3 x 3 cells around (3, 3) and the 4 inside the map around (0, 0)
    expected = [y * 8 + x for y in (2, 3, 4) for x in (2, 3, 4)]
    expected += [y * 8 + x for y in (0, 1) for x in (0, 1)]
    assert sorted(cells) == sorted(expected)
    for cell, reg, wh in zip(
        big["ind"].reshape(-1)[valid],
        big["reg"].reshape(-1, 2)[valid],
        big["wh"].reshape(-1, 2)[valid],
    ):
        cx, cy = int(cell) % 8 + float(reg[0]), int(cell) // 8 + float(reg[1])
        centres = ((3.2, 3.7, 4.0, 4.0), (0.6, 0.4, 1.2, 0.8))  # every copy: the same object
        assert min(abs(cx - a) + abs(cy - b) + abs(float(wh[0]) - w) + abs(float(wh[1]) - h)
                   for a, b, w, h in centres) < 1e-5  # fmt: skip
    assert expand_positive_cells(tg, 0) is tg
    out = {
        "logits": torch.randn(1, 2, 8, 8),
        "wh": torch.full((1, 2, 8, 8), 2.0),
        "reg": torch.full((1, 2, 8, 8), 0.5),
    }
    spy = _Spy(build_ranking_objective({"name": "rank_sort"}, RankingBalanceConfig(min_iou=0.05)))
    centernet_ranking_losses(spy, out, tg, num_classes=2, positive_radius=1)
    targets = spy.calls[0][1]
    pos = (targets > 0).nonzero().squeeze(1).tolist()
    assert sorted(pos) == sorted([c for c in expected[:9]] + [64 + c for c in expected[9:]])


def test_official_min_iou_zero_turns_an_empty_box_into_a_negative() -> None:
    out, tg = _hand_case()
    spy = _Spy(build_ranking_objective({"name": "rank_sort"}, RankingBalanceConfig()))
    centernet_ranking_losses(spy, out, tg, num_classes=2)
    targets = spy.calls[0][1]
    e_flat = ((1 * 2 + 0) * H + 0) * W + 6
    assert targets[e_flat].item() == 0.0 and int((targets > 0).sum()) == 3


def test_giou_box_loss_adds_the_generalised_iou_by_hand() -> None:
    out, tg = _hand_case()
    spy = _Spy(build_ranking_objective({"name": "rank_sort"}, RankingBalanceConfig(min_iou=0.05)))
    centernet_ranking_losses(spy, out, tg, num_classes=2, box_loss="giou")
    spy_l1 = _Spy(
        build_ranking_objective({"name": "rank_sort"}, RankingBalanceConfig(min_iou=0.05))
    )
    centernet_ranking_losses(spy_l1, out, tg, num_classes=2, box_loss="l1")
    # 1 - GIoU = 1 - IoU + (enclosing - union) / enclosing; enclosing box by hand
    #   C: pred [2,1.5,5,3.5], gt [2,1.5,4.6,3.9] -> enclosing [2,1.5,5,3.9] = 7.2, union 7.04
    #   B: enclosing = gt (9) = union;  D: enclosing = gt (12) = union
    #   E: pred [6.5,-.5,6.5,1.5] (w clamped to 0): IoU 0, enclosing [5,-.5,7,1.5] = 4, union 1
    giou = [
        1 - 5.2 / 7.04 + (7.2 - 7.04) / 7.2,
        1 - 6 / 9,
        1 - 0 + (4 - 1) / 4,
        1 - 6 / 12,
    ]
    diff = spy.calls[0][2] - spy_l1.calls[0][2]
    torch.testing.assert_close(
        diff.double(), torch.tensor(giou, dtype=torch.float64), rtol=1e-5, atol=1e-5
    )


# ----------------------------------------------------------------------------- model contract
def _batch() -> tuple[torch.Tensor, list[dict]]:
    torch.manual_seed(0)
    imgs = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    tg = [
        make_target([[4, 4, 30, 40], [30, 10, 60, 30]], [1, 0], 0, (64, 64)),
        make_target([[10, 20, 50, 60]], [1], 1, (64, 64)),
    ]
    return imgs, tg


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("rank_sort", {"loss_rank", "loss_sort", "loss_box"}),
        ("ap_loss", {"loss_ap", "loss_box"}),
        ("alrp", {"loss_alrp_cls", "loss_alrp_loc"}),
    ],
)
def test_loss_keys_finite_and_backward(name: str, keys: set[str]) -> None:
    torch.manual_seed(0)
    model = _rs_model(cls_loss={"name": name}).train()
    imgs, tg = _batch()
    losses = model(imgs, tg)
    assert set(_terms(losses)) == keys and losses["num_objects"].item() == 3
    total = sum(_terms(losses).values())
    assert all(torch.isfinite(v) for v in losses.values())
    total.backward()
    for branch in (model.head.cls, model.head.wh, model.head.reg):
        g = branch[-1].weight.grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_batch_without_objects_gives_zero_finite_losses() -> None:
    model = _rs_model().train()
    imgs = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    empty = [make_target(torch.zeros(0, 4), [], i, (64, 64)) for i in range(2)]
    losses = model(imgs, empty)
    assert losses["num_objects"].item() == 0
    assert all(v.item() == 0.0 for v in _terms(losses).values())
    sum(_terms(losses).values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_value_balancing_box_term_equals_rank_plus_sort() -> None:
    torch.manual_seed(1)
    model = _rs_model().train()
    imgs, tg = _batch()
    losses = model(imgs, tg)
    rs = losses["loss_rank"].item() + losses["loss_sort"].item()
    assert rs > 0
    assert losses["loss_box"].item() == pytest.approx(rs, rel=1e-6)


def test_l1_box_losses_average_to_centernets_size_and_offset_terms() -> None:
    """Uniform weights, fixed balance: loss_box = wh_weight * L1(wh) + off_weight * L1(off)."""
    torch.manual_seed(2)
    model = _stub_model(
        cls_loss={"name": "rank_sort"},
        ranking={"task_balance": "fixed", "score_weighting": False},
        wh_weight=0.25,
        off_weight=0.5,
        norm_wh=True,
    ).train()
    imgs, targets = _batch()
    x, scales, _ = model.preprocess(imgs)
    out = model.forward_heads(x)
    tg = model.make_targets(targets, scales, tuple(out["heat"].shape[-2:]))
    got = model.compute_losses(out, tg)["loss_box"]
    wh = reg_l1_loss(out["wh"].float(), tg["mask"], tg["ind"], tg["wh"], norm_wh=True)
    off = reg_l1_loss(out["reg"].float(), tg["mask"], tg["ind"], tg["reg"])
    # reg_l1_loss divides by 2n + 1e-4 (n = 3): 1e-4 / 6 relative
    assert got.item() == pytest.approx(0.25 * wh.item() + 0.5 * off.item(), rel=5e-5)


def test_focal_default_is_unchanged() -> None:
    torch.manual_seed(4)
    model = _stub_model(wh_weight=0.2).train()
    assert model.ranking_objective is None
    assert not any(k.startswith("ranking_objective") for k in model.state_dict())
    imgs, targets = _batch()
    targets[0]["ignore_boxes"] = torch.tensor([[40.0, 40.0, 60.0, 60.0]])
    x, scales, _ = model.preprocess(imgs)
    out = model.forward_heads(x)
    tg = model.make_targets(targets, scales, tuple(out["heat"].shape[-2:]))
    got = model.compute_losses(out, tg)
    assert set(got) == {"loss_heatmap", "loss_wh", "loss_offset"}
    exp = {
        "loss_heatmap": penalty_reduced_focal_loss(out["heat"], tg["heatmap"], ignore=tg["ignore"]),
        "loss_wh": 0.2 * reg_l1_loss(out["wh"], tg["mask"], tg["ind"], tg["wh"]),
        "loss_offset": reg_l1_loss(out["reg"], tg["mask"], tg["ind"], tg["reg"]),
    }
    for k, v in exp.items():  # the same operations on the same inputs: identical numbers
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)


def test_distillation_terms_are_added_alongside() -> None:
    from percepta.detection.distill import Teacher, attach_distiller
    from percepta.losses.distill import TeacherConfig

    torch.manual_seed(6)
    student = _rs_model(class_names=["a", "b"]).train()
    teacher = _stub_model(class_names=["a", "b"]).eval()
    attach_distiller(student, [Teacher("t", "t.pt", teacher, TeacherConfig(), ["a", "b"])])
    imgs, tg = _batch()
    losses = student(imgs, tg)
    kd = {k for k in losses if k.startswith("loss_kd_")}
    assert kd and {"loss_rank", "loss_sort", "loss_box"} <= set(losses)
    assert set(_terms(losses)) == kd | {"loss_rank", "loss_sort", "loss_box"}
    sum(_terms(losses).values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)


def test_logits_recovered_from_heat_when_the_head_gives_none() -> None:
    out, tg = _hand_case()
    obj = build_ranking_objective({"name": "rank_sort"}, RankingBalanceConfig(min_iou=0.05))
    with_logits = centernet_ranking_losses(obj, out, tg, num_classes=2)
    no_logits = centernet_ranking_losses(
        obj, {k: v for k, v in out.items() if k != "logits"}, tg, num_classes=2
    )
    for k, v in with_logits.items():
        assert no_logits[k].item() == pytest.approx(v.item(), rel=1e-4, abs=1e-6)


def test_bf16_autocast_keeps_the_ranking_logits_in_float32() -> None:
    torch.manual_seed(5)
    model = _rs_model().train()
    spy = _Spy(model.ranking_objective)
    imgs, tg = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x, scales, _ = model.preprocess(imgs)
        out = model.forward_heads(x)
        t = model.make_targets(tg, scales, tuple(out["heat"].shape[-2:]))
        assert out["wh"].dtype == torch.bfloat16
        losses = centernet_ranking_losses(spy, out, t, num_classes=2)
    logits, targets, box, scores = spy.calls[0]
    assert logits.dtype == torch.float32 and box.dtype == torch.float32
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


# ----------------------------------------------------------------------------- config
def test_config_section_loads_and_builds(tmp_path) -> None:
    path = tmp_path / "rs.yaml"
    path.write_text(
        "model: {name: centernet, cls_loss: {name: rank_sort, delta: 0.5}, num_classes: 2,\n"
        "        input_size: 64, neck_channels: [16, 16, 16], head_conv: 8}\n"
    )
    cfg = config.load(path, ["model.ranking.min_iou=0.05", "model.cls_loss.delta=0.25"])
    assert cfg.model.cls_loss.name == "rank_sort" and cfg.model.cls_loss.delta == 0.25
    model = build_centernet(config.section_object(cfg.model))
    assert model.ranking_objective.kind == "rank_sort"
    assert model.ranking_objective.loss.delta == 0.25
    assert model.ranking_objective.balance.min_iou == 0.05


def test_config_from_dict_nested_section_and_errors() -> None:
    base = {"model": {"name": "centernet", "cls_loss": {"name": "rank_sort", "delta": 0.5}}}
    cfg = config.from_dict(base)
    assert cfg.model.cls_loss.delta == 0.5 and cfg.model.cls_loss.name == "rank_sort"
    assert config.from_dict({"model": {"name": "centernet"}}).model.cls_loss is None
    with pytest.raises(ConfigError, match="cls_loss"):
        config.from_dict({"model": {"name": "centernet", "cls_loss": {"name": "rank_srot"}}})
    with pytest.raises(ConfigError, match="cls_loss"):
        config.from_dict(
            {"model": {"name": "centernet", "cls_loss": {"name": "rank_sort", "deltaa": 1}}}
        )
    # a registered loss that is not a ranking loss: refused when the model is built
    opts = dataclasses.replace(
        CenterNetConfig(num_classes=1, input_size=64, neck_channels=[16, 16, 16], head_conv=8),
        cls_loss={"name": "centernet_focal"},
    )
    with pytest.raises(ConfigError, match="cls_loss"):
        build_centernet(opts)
    with pytest.raises(ConfigError, match="rs_box_loss"):
        _rs_model(rs_box_loss="iou")
    for option, bad in (
        ("rs_ignore_radius", -1),
        ("rs_ignore_heat", 1.5),
        ("rs_positive_radius", -2),
    ):
        with pytest.raises(ConfigError, match=option) as e:
            _rs_model(**{option: bad})
        assert "\n" not in str(e.value)


def test_preset_differs_from_the_focal_recipe_only_in_the_loss() -> None:
    focal = config.to_dict(config.load(REPO / "configs/detection/centernet_r18_builtin.yaml"))
    rs = config.to_dict(config.load(REPO / "configs/detection/rs_centernet_r18_builtin.yaml"))
    assert rs["model"]["cls_loss"] == {"name": "rank_sort", "delta": 2.0}
    assert rs["model"]["ranking"]["min_iou"] == 0.05
    assert focal["model"]["cls_loss"] is None
    assert rs["train"] == focal["train"] and rs["data"] == focal["data"]
    differ = {k for k in focal["model"] if focal["model"][k] != rs["model"][k]}
    assert differ == {"cls_loss", "rs_ignore_radius"}  # min_iou 0.05: CenterNet's default too
    assert {k for k in focal if focal[k] != rs[k]} == {"name", "model"}


# ----------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def trained() -> tuple[CenterNet, torch.Tensor, list[dict], list[float]]:
    torch.manual_seed(0)
    cfg = CenterNetConfig(
        num_classes=2,
        input_size=64,
        class_names=["r", "b"],
        neck_channels=[32, 32, 32],
        head_conv=16,
        cls_loss={"name": "rank_sort"},
        ranking=RankingBalanceConfig(min_iou=0.05),
    )
    model = build_centernet(cfg).train()
    imgs, targets = toy_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        losses = model(imgs, targets)
        total = sum(_terms(losses).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(losses["loss_rank"].item())
    return model, imgs, targets, history


def test_learns_each_object_peak_as_the_top_cell(trained) -> None:
    model, imgs, targets, history = trained
    assert history[0] > 0.5 and history[-1] < 0.05, history
    model.eval()
    with torch.no_grad():
        x, scales, _ = model.preprocess(imgs)
        heat = model.forward_heads(x)["heat"]
        preds = model(imgs)
    tg = model.make_targets(targets, scales, tuple(heat.shape[-2:]))
    for b, t in enumerate(targets):
        n = len(t["labels"])
        for k in range(n):
            c, ind = int(tg["cls"][b, k]), int(tg["ind"][b, k])
            assert int(heat[b, c].reshape(-1).argmax()) == ind, (b, k)
        # the decode's top-n detections are the objects, with their labels
        assert sorted(preds[b]["labels"][:n].tolist()) == sorted(t["labels"].tolist())
        centres = (preds[b]["boxes"][:n, :2] + preds[b]["boxes"][:n, 2:]) / 2
        gt = t["boxes"].as_subclass(torch.Tensor)
        gt_c = (gt[:, :2] + gt[:, 2:]) / 2
        assert torch.cdist(centres, gt_c).min(dim=1).values.max() <= 4.0  # one stride


def test_rs_trained_model_exports_to_onnx_unchanged(trained, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from percepta.export.onnx import check_parity, export_onnx

    model, imgs, _, _ = trained
    path = export_onnx(model, tmp_path / "rs.onnx")
    res = check_parity(model, path, list(imgs))
    assert res["ok"], res
