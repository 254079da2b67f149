"""CenterNet losses: official values (float32, 1e-5 rel.), empty images, saturation, weighting."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from percepta.detection.centernet_targets import build_targets
from percepta.losses.focal import (
    CenterNetFocalLoss,
    gather_slots,
    penalty_reduced_focal_loss,
    reg_l1_loss,
)
from percepta.registry import LOSSES

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "centernet"


@pytest.fixture(scope="module")
def case() -> tuple[dict, dict, dict]:
    ref = json.loads((FIX / "targets_and_losses.json").read_text())
    inp = ref["inputs"]
    boxes = torch.tensor(inp["boxes_output_coords_xyxy"], dtype=torch.float64)
    _, h, w = inp["heatmap_shape_CHW"]
    tg = build_targets(
        [boxes],
        [torch.zeros(len(boxes), dtype=torch.long)],
        1,
        (h, w),
        max_objs=inp["max_objs"],
        radius_formula="centernet",
        min_overlap=inp["min_overlap"],
    )
    out = {
        "heat": torch.tensor(inp["pred_heatmap_after_sigmoid_clamp"]),
        "wh": torch.tensor(inp["pred_wh"]),
        "reg": torch.tensor(inp["pred_reg"]),
    }
    return ref["expected"], tg, out


# float32, the same operations as the official code (bit-identical on the machine that made the
# reference), but the sums over the 24x32 map are SIMD reductions whose order (and the vectorised
# log / pow) differ between CPUs: rounding ~sqrt(n) * eps32 ~ 2e-6 relative, bounded by 1e-5.
REL_F32_SUM = 1e-5


def test_official_loss_values(case: tuple[dict, dict, dict]) -> None:
    exp, tg, out = case
    focal = penalty_reduced_focal_loss(out["heat"], tg["heatmap"])
    assert focal.item() == pytest.approx(exp["focal_loss_neg_loss"], rel=REL_F32_SUM)
    wh = reg_l1_loss(out["wh"], tg["mask"], tg["ind"], tg["wh"])
    assert wh.item() == pytest.approx(exp["wh_l1_loss_unweighted"], rel=REL_F32_SUM)
    off = reg_l1_loss(out["reg"], tg["mask"], tg["ind"], tg["reg"])
    assert off.item() == pytest.approx(exp["off_l1_loss_unweighted"], rel=REL_F32_SUM)
    assert focal.item() + 0.1 * wh.item() + off.item() == pytest.approx(
        exp["total_with_default_weights"], rel=REL_F32_SUM
    )
    # registered module form: the same code on the same machine (1e-6 relative)
    assert LOSSES.build("centernet_focal")(out["heat"], tg["heatmap"]).item() == pytest.approx(
        focal.item(), rel=1e-6
    )


def test_model_loss_weighting(case: tuple[dict, dict, dict]) -> None:
    from percepta.detection.backbones import Backbone
    from percepta.detection.centernet import CenterNet

    exp, tg, out = case
    stub = Backbone(torch.nn.Conv2d(3, 8, 1), 8, 32, "stub")
    model = CenterNet(stub, 1, input_size=64, wh_weight=0.1, off_weight=1.0, hm_weight=1.0)
    losses = model.compute_losses(out, tg)
    assert losses["loss_heatmap"].item() == pytest.approx(
        exp["focal_loss_neg_loss"], rel=REL_F32_SUM
    )
    assert losses["loss_offset"].item() == pytest.approx(
        exp["off_l1_loss_unweighted"], rel=REL_F32_SUM
    )
    # 0.1 * float32 value (weight applied in float32, reference sum in float64)
    assert losses["loss_wh"].item() == pytest.approx(
        0.1 * exp["wh_l1_loss_unweighted"], rel=REL_F32_SUM
    )
    total = sum(v.item() for v in losses.values())
    assert total == pytest.approx(exp["total_with_default_weights"], rel=REL_F32_SUM)


def test_focal_matches_formula_by_hand() -> None:
    gt = torch.tensor([1.0, 0.5, 0.0, 1.0])
    p = torch.tensor([0.8, 0.3, 0.1, 0.6], dtype=torch.float64)
    pos = math.log(0.8) * 0.2**2 + math.log(0.6) * 0.4**2
    neg = math.log(0.7) * 0.3**2 * 0.5**4 + math.log(0.9) * 0.1**2
    got = penalty_reduced_focal_loss(p, gt.double())
    assert got.item() == pytest.approx(-(pos + neg) / 2, rel=1e-12)
    # no positive: plain negative sum, not divided
    got0 = penalty_reduced_focal_loss(p[1:3], gt[1:3].double())
    assert got0.item() == pytest.approx(-neg, rel=1e-12)


def test_focal_is_finite_when_sigmoid_saturates() -> None:
    pred = torch.tensor([1.0, 0.0, 1.0, 0.0], requires_grad=True)
    gt = torch.tensor([1.0, 1.0, 0.0, 0.0])
    loss = penalty_reduced_focal_loss(pred, gt)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_empty_targets_give_exact_zero_regression_losses() -> None:
    tg = build_targets(
        [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2, 2, (8, 8), max_objs=4
    )
    wh_pred = torch.randn(2, 2, 8, 8, requires_grad=True)
    heat = torch.rand(2, 2, 8, 8, requires_grad=True)
    wh = reg_l1_loss(wh_pred, tg["mask"], tg["ind"], tg["wh"])
    focal = penalty_reduced_focal_loss(heat, tg["heatmap"])
    assert wh.item() == 0.0
    (wh + focal).backward()
    assert torch.isfinite(focal) and focal.item() > 0
    assert torch.isfinite(heat.grad).all() and torch.isfinite(wh_pred.grad).all()
    assert wh_pred.grad.abs().sum() == 0


def test_norm_wh_is_relative_error() -> None:
    target = torch.tensor([[[10.0, 30.0], [2.0, 2.0]]])
    pred = torch.tensor([[[12.0, 30.0], [3.0, 2.0]]])
    mask = torch.ones(1, 2)
    got = reg_l1_loss(pred, mask, torch.zeros(1, 2, dtype=torch.long), target, norm_wh=True)
    want = (2 / (20 + 1e-4) + 1 / (2 + 1e-4)) / (4 + 1e-4)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_gather_slots_layout() -> None:
    feat = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    ind = torch.tensor([[0, 7], [19, 6]])  # y*W + x
    got = gather_slots(feat, ind)
    assert got.shape == (2, 2, 3)
    assert torch.equal(got[0, 1], feat[0, :, 1, 2]) and torch.equal(got[1, 0], feat[1, :, 3, 4])


def test_focal_module_options() -> None:
    m = CenterNetFocalLoss(alpha=2.0, beta=4.0)
    assert m(torch.full((1, 4), 0.5), torch.tensor([[1.0, 0, 0, 0]])).item() > 0
