"""Ignore regions end to end: COCO ``iscrowd`` and Pascal VOC "difficult" objects.

* evaluation: detections on an ignore region are neither true nor false positives and the region
  is never a miss, in COCO AP (faster-coco-eval) and in optimal LRP; the numbers of a hand-made
  case are computed by hand below, and COCO AP is checked against pycocotools' ``COCOeval`` run
  directly on the same json file (an independent implementation);
* training: the CenterNet heat-map loss has no negative term inside an ignore box and ignore
  boxes get no positive target;
* VOC: ``difficult`` survives ``convert -> COCO json -> CocoDetection -> evaluator`` as an ignore
  region.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from percepta.detection.backbones import Backbone
from percepta.detection.centernet import CenterNet
from percepta.detection.centernet_targets import build_targets, ignore_mask
from percepta.detection.evaluation import AP_KEYS, evaluate_results
from percepta.losses.focal import penalty_reduced_focal_loss
from percepta.registry import EVALUATORS
from percepta.structures import make_target

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:The image decoding and encoding capabilities:DeprecationWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
    ),
]
NAN = float("nan")


# ============================================================================ evaluation, by hand
def _hand_case() -> tuple[dict, list[dict]]:
    """One 100x100 image, one category: GT ``A`` and a crowd region ``C``; four detections.

    * ``c1`` [55,55,20,20] score 0.95 and ``c2`` [60,60,25,25] score 0.92: inside ``C``
      (overlap with a crowd = intersection / detection area = 1);
    * ``a`` [10,10,20,15.5] score 0.9 on ``A`` [10,10,20,20]: IoU = 20*15.5 / 400 = 0.775;
    * ``fp`` [0,70,10,10] score 0.5: overlaps nothing.
    """
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [10, 10, 20, 20],
                "area": 400.0,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 1,
                "bbox": [50, 50, 40, 40],
                "area": 1600.0,
                "iscrowd": 1,
            },
        ],
    }
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [55, 55, 20, 20], "score": 0.95},
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 25, 25], "score": 0.92},
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 15.5], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [0, 70, 10, 10], "score": 0.5},
    ]
    return gt, dets


# By hand. Crowd detections drop out, leaving the ranking a (TP while t <= 0.775), fp.
# * AP@t = 1 for t in .50 ... .75 (precision 1 at recall 1), 0 for t in .80 ... .95 (a misses A
#   and overlaps no crowd, so it is a false positive): AP = 6/10; AP50 = AP75 = 1. A is small
#   (area 400 < 32^2): APs = 0.6; no non-crowd GT is medium or large: APm = APl = undefined.
# * AR100 = AR10 = 6/10 (recall 1 at six thresholds); AR1 = 0: the image's top detection is c1,
#   which is ignored, so the top-1 list holds no true positive.
# * oLRP (tau 0.5), cumulative over the score-sorted list c1, c2, a, fp with G = 1:
#   at c1, c2: (0 + 0 + 1) / 1 = 1; at a: ((1 - 0.775) / 0.5 + 0 + 0) / 1 = 0.45;
#   at fp: (0.45 + 1 + 0) / 2 = 0.725 -> oLRP 0.45 at threshold 0.9, Loc 0.225, FP 0, FN 0.
HAND_AP = {
    "AP": 0.6,
    "AP50": 1.0,
    "AP75": 1.0,
    "APs": 0.6,
    "APm": NAN,
    "APl": NAN,
    "AR1": 0.0,
    "AR10": 0.6,
    "AR100": 0.6,
    "ARs": 0.6,
    "ARm": NAN,
    "ARl": NAN,
}
HAND_LRP = {"oLRP": 0.45, "oLRP_loc": 0.225, "oLRP_fp": 0.0, "oLRP_fn": 0.0}


def _close(a: float, b: float, tol: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def test_crowd_case_ap_and_olrp_by_hand():
    gt, dets = _hand_case()
    m = evaluate_results(gt, dets)
    for k, v in HAND_AP.items():
        assert _close(m[k], v, 1e-9), (k, m[k], v)
    for k, v in HAND_LRP.items():
        assert _close(m[k], v, 1e-9), (k, m[k], v)
    row = m["per_class"][0]
    assert row["threshold"] == pytest.approx(0.9, abs=1e-12)
    assert row["AP"] == pytest.approx(0.6, abs=1e-9)
    assert row["oLRP"] == pytest.approx(0.45, abs=1e-9)


def test_same_case_without_the_crowd_flag_differs():
    """Sanity check of the hand case: as an ordinary GT, C is a miss and c1, c2 are false
    positives (standard IoU 400/1600 and 625/1600 < 0.5), so the ranking is fp, fp, a, fp with
    G = 2: precision 1/3 at recall 1/2 -> AP@.5 = 51/101 * 1/3 (COCO's 101 recall points)."""
    gt, dets = _hand_case()
    gt["annotations"][1]["iscrowd"] = 0
    m = evaluate_results(gt, dets)
    assert m["AP50"] == pytest.approx(51 / 101 / 3, abs=1e-9)
    # oLRP: best at a: ((0.45) + 2 FP + 1 FN) / (1 + 2 + 1) = 3.45 / 4
    assert m["oLRP"] == pytest.approx(3.45 / 4, abs=1e-9)


def _pycocotools_stats(gt_path: Path, dets: list[dict]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO(str(gt_path))
        ev = COCOeval(cg, cg.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [NAN if s == -1 else float(s) for s in ev.stats]


def _crowded_random_case(seed: int) -> tuple[dict, list[dict]]:
    """Random GT with ~30% crowd regions and detections thrown at crowds and objects."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for img_id in range(1, 16):
        images.append({"id": img_id, "width": 400, "height": 300})
        for _ in range(rng.integers(1, 6)):
            w, h = np.exp(rng.uniform(np.log(8), np.log(200), 2))
            x, y = rng.uniform(0, 400 - w), rng.uniform(0, 300 - h)
            cat = int(rng.integers(1, 3))
            crowd = int(rng.random() < 0.3)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": crowd,
                }
            )
            for _ in range(rng.integers(0, 4)):  # detections near / inside the object
                dx, dy = rng.normal(0, 0.15, 2) * (w, h)
                sw, sh = np.exp(rng.normal(0, 0.3, 2))
                label = cat if rng.random() < 0.9 else 3 - cat  # a few wrong-class detections
                dets.append(
                    {
                        "image_id": img_id,
                        "category_id": label,
                        "bbox": [x + dx, y + dy, w * sw * (0.5 if crowd else 1), h * sh],
                        "score": float(rng.random()),
                    }
                )
        for _ in range(rng.integers(0, 3)):  # background false positives
            dets.append(
                {
                    "image_id": img_id,
                    "category_id": int(rng.integers(1, 3)),
                    "bbox": [*rng.uniform(0, 250, 2), *rng.uniform(5, 80, 2)],
                    "score": float(rng.random()),
                }
            )
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    return {"images": images, "annotations": anns, "categories": cats}, dets


@pytest.mark.parametrize("case", ["hand", 0, 1, 2])
def test_crowd_ap_agrees_with_pycocotools_on_the_same_json(case, tmp_path):
    gt, dets = _hand_case() if case == "hand" else _crowded_random_case(case)
    assert any(a["iscrowd"] for a in gt["annotations"])
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    ours = evaluate_results(str(path), dets, olrp=False)
    ref = _pycocotools_stats(path, dets)
    for k, v in zip(AP_KEYS, ref):
        assert _close(ours[k], v, 1e-6), (case, k, ours[k], v)


# ============================================================================ training targets
def test_ignore_mask_cells_by_hand():
    # box [2.5, 1.0, 5.0, 3.2] covers columns floor(2.5)=2 .. ceil(5.0)-1=4 and rows 1 .. 3;
    # the zero-width box covers nothing; the second image's box is clipped to the 6x8 map
    mask = ignore_mask(
        [
            torch.tensor([[2.5, 1.0, 5.0, 3.2], [6.5, 0.0, 6.5, 4.0]]),
            torch.tensor([[6.2, 4.9, 20.0, 9.0]]),
        ],
        2,
        (6, 8),
    )
    assert mask.shape == (2, 1, 6, 8) and mask.dtype == torch.bool
    cells0 = {(r, c) for r in (1, 2, 3) for c in (2, 3, 4)}
    cells1 = {(r, c) for r in (4, 5) for c in (6, 7)}
    assert {tuple(x) for x in mask[0, 0].nonzero().tolist()} == cells0
    assert {tuple(x) for x in mask[1, 0].nonzero().tolist()} == cells1
    assert not ignore_mask(None, 2, (6, 8)).any()


def _focal_by_hand(p: np.ndarray, y: np.ndarray, ign: np.ndarray) -> float:
    """CornerNet eq. 1 written directly: positives where y == 1, negatives elsewhere unless
    ignored, normalised by the number of positives."""
    p = np.clip(p, 1e-4, 1 - 1e-4)
    pos = y == 1
    neg = (y < 1) & ~ign
    total = (np.log(p[pos]) * (1 - p[pos]) ** 2).sum()
    total += (np.log(1 - p[neg]) * p[neg] ** 2 * (1 - y[neg]) ** 4).sum()
    return -total / max(int(pos.sum()), 1)


def test_focal_loss_has_no_negative_term_inside_ignore_cells():
    torch.manual_seed(0)
    tg = build_targets(
        [torch.tensor([[1.0, 1.0, 5.0, 6.0]], dtype=torch.float64)],
        [torch.tensor([1])],
        2,
        (12, 12),
        ignore_boxes=[torch.tensor([[6.0, 5.0, 12.0, 10.0]])],
    )
    ign = tg["ignore"]
    assert int(ign.sum()) == 6 * 5  # columns 6..11, rows 5..9
    pred = torch.rand(1, 2, 12, 12, dtype=torch.float64) * 0.98 + 0.01
    loss = penalty_reduced_focal_loss(pred, tg["heatmap"].double(), ignore=ign)
    by_hand = _focal_by_hand(
        pred.numpy(), tg["heatmap"].double().numpy(), np.broadcast_to(ign.numpy(), pred.shape)
    )
    assert loss.item() == pytest.approx(by_hand, rel=1e-12)
    # predictions inside the ignore box do not change the loss (any class channel)
    pred2 = pred.clone()
    pred2[..., 5:10, 6:12] = 0.999
    loss2 = penalty_reduced_focal_loss(pred2, tg["heatmap"].double(), ignore=ign)
    assert loss2.item() == loss.item()
    # without the mask they do: the test can fail
    assert penalty_reduced_focal_loss(pred2, tg["heatmap"].double()).item() > loss.item() + 1.0


def _stub_centernet() -> CenterNet:
    stub = Backbone(torch.nn.Conv2d(3, 8, 1), 8, 32, "stub")
    return CenterNet(stub, 2, input_size=64, neck_channels=(16, 16, 16), head_conv=8)


def test_centernet_training_targets_ignore_crowd_boxes():
    """Through CenterNet.make_targets / compute_losses: on a 64 px canvas with stride 4 the
    ignore box [32, 32, 64, 48] px is cells [8, 8, 16, 12] -> columns 8..15, rows 8..11."""
    model = _stub_centernet()
    t = make_target(
        [[4, 4, 20, 20]], [0], 1, (64, 64), ignore_boxes=torch.tensor([[32.0, 32.0, 64.0, 48.0]])
    )
    scales = torch.ones(1, dtype=torch.float64)
    tg = model.make_targets([t], scales, (16, 16))
    assert tg["num_objects"] == 1  # the ignore box is no object ...
    assert tg["heatmap"][0, :, 8:12, 8:16].max() < 1.0  # ... and has no peak of its own
    expect = torch.zeros(16, 16, dtype=torch.bool)
    expect[8:12, 8:16] = True
    assert torch.equal(tg["ignore"][0, 0], expect)

    torch.manual_seed(1)
    heat = (torch.rand(1, 2, 16, 16) * 0.9 + 0.05).requires_grad_(True)
    out = {"heat": heat, "wh": torch.rand(1, 2, 16, 16), "reg": torch.rand(1, 2, 16, 16)}
    model.compute_losses(out, tg)["loss_heatmap"].backward()
    g = heat.grad[0]
    assert (g[:, 8:12, 8:16] == 0).all()  # no (negative) loss inside the ignore box
    assert (g[:, expect.logical_not()] != 0).all()  # every other cell still trains

    # the same target without its ignore box trains those cells as background
    plain = model.make_targets([make_target([[4, 4, 20, 20]], [0], 1, (64, 64))], scales, (16, 16))
    heat.grad = None
    model.compute_losses(out, plain)["loss_heatmap"].backward()
    assert (heat.grad[0][:, 8:12, 8:16] != 0).all()


def test_centernet_ignore_boxes_scale_with_the_letterbox():
    """A 32x16 image on the 64 canvas: scale 2, so ignore box [4, 2, 12, 6] px -> canvas
    [8, 4, 24, 12] -> cells [2, 1, 6, 3] (stride 4): columns 2..5, rows 1..2."""
    model = _stub_centernet()
    img = torch.zeros(3, 16, 32, dtype=torch.uint8)
    _, scales, _ = model.preprocess([img])
    assert scales.tolist() == [2.0]
    t = make_target(
        torch.zeros(0, 4), [], 1, (16, 32), ignore_boxes=torch.tensor([[4.0, 2, 12, 6]])
    )
    ign = model.make_targets([t], scales, (16, 16))["ignore"][0, 0]
    cells = {(r, c) for r in (1, 2) for c in range(2, 6)}
    assert {tuple(x) for x in ign.nonzero().tolist()} == cells


# ============================================================================ VOC round trip
VOC_XML = """<annotation><filename>{fn}</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"""
VOC_OBJ = """<object><name>dog</name><truncated>0</truncated><difficult>{d}</difficult>
  <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"""


def test_voc_difficult_round_trip_convert_dataset_evaluator(tmp_path):
    """A dog (VOC 1-based (11,11)-(30,30) -> COCO [10,10,20,20]) and a difficult dog
    ((51,41)-(90,80) -> [50,40,40,40]) on a 100x80 image. Detections: the dog exactly (0.9) and
    a box inside the difficult dog (0.95; standard IoU 225/1600 < 0.5, crowd overlap 1).
    VOC protocol: the difficult dog is no miss and the detection on it no false positive, so
    AP = AR100 = 1 and oLRP = 0 (1 TP with IoU 1, no FP, no FN). Counted as an ordinary object it
    would be a miss (recall 1/2) and the detection a false positive (both fail below)."""
    from percepta.data.coco import CocoDetection
    from percepta.data.convert import voc_to_coco
    from percepta.evaluator import Evaluator

    src = tmp_path / "VOC2007"
    (src / "Annotations").mkdir(parents=True)
    (src / "JPEGImages").mkdir()
    Image.new("RGB", (100, 80), (5, 5, 5)).save(src / "JPEGImages" / "000001.jpg")
    objects = VOC_OBJ.format(d=0, x0=11, y0=11, x1=30, y1=30) + VOC_OBJ.format(
        d=1, x0=51, y0=41, x1=90, y1=80
    )
    (src / "Annotations" / "000001.xml").write_text(
        VOC_XML.format(fn="000001.jpg", w=100, h=80, objects=objects)
    )
    out = tmp_path / "voc.json"
    voc_to_coco(src, out)

    raw = json.loads(out.read_text())
    by_flag = {a["difficult"]: a for a in raw["annotations"]}
    assert by_flag[1]["iscrowd"] == 1 and by_flag[1]["bbox"] == [50, 40, 40, 40]
    assert by_flag[0]["iscrowd"] == 0 and by_flag[0]["bbox"] == [10, 10, 20, 20]

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "ordinary object" warning either
        ds = CocoDetection(out)
    _, t = ds[0]
    assert t["boxes"].tolist() == [[10, 10, 30, 30]] and t["labels"].tolist() == [0]
    assert t["ignore_boxes"].tolist() == [[50, 40, 90, 80]]

    ev = EVALUATORS.build("coco", None, ds)
    assert isinstance(ev, Evaluator)
    pred = {
        "boxes": torch.tensor([[10.0, 10, 30, 30], [60, 50, 75, 65]]),
        "scores": torch.tensor([0.9, 0.95]),
        "labels": torch.tensor([0, 0]),
    }
    ev.update([pred], [t])
    m = ev.compute()
    assert m["AP"] == pytest.approx(1.0, abs=1e-9) and m["AR100"] == pytest.approx(1.0, abs=1e-9)
    assert m["oLRP"] == pytest.approx(0.0, abs=1e-9)
    assert m["oLRP_fp"] == pytest.approx(0.0, abs=1e-9)
    assert m["oLRP_fn"] == pytest.approx(0.0, abs=1e-9)
    # the json file, scored directly (``percepta score`` path), gives the same numbers
    rows = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [60, 50, 15, 15], "score": 0.95},
    ]
    direct = evaluate_results(str(out), rows)
    assert direct["AP"] == pytest.approx(1.0, abs=1e-9)
    assert direct["oLRP"] == pytest.approx(0.0, abs=1e-9)
