"""RS-R-CNN (Rank & Sort loss in torchvision's Faster R-CNN): percepta.detection.rs_rcnn.

The references are independent of the heads under test: anchors are labelled by a plain re-write
of the max-IoU rule on ``torchvision.ops.box_iou``, proposals matched the same way, predicted
boxes decoded with torchvision's ``BoxCoder`` called here, IoUs taken as the diagonal of
``box_iou``, GIoU losses as ``1 - diag(generalized_box_iou)``, weighted means written out. The
heads' inputs and outputs are read with forward hooks. Tiny sizes (timm's ``test_resnet``,
64-80 px, few proposals) keep the file fast on one thread.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from tests.detection.tiny_faster_rcnn import TINY as BASE
from tests.detection.tiny_faster_rcnn import images, targets, tiny_model
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.ops import box_iou, generalized_box_iou

from percepta import config
from percepta.detection.faster_rcnn import FasterRCNN
from percepta.detection.relation_interface import relation_detector
from percepta.detection.rs_rcnn import RankBasedPredictor, RankBasedRoIHeads, RankBasedRPN
from percepta.engine.build import build_model
from percepta.errors import ConfigError
from percepta.structures import make_target

REPO = Path(__file__).resolve().parents[2]
C = 3
RS_KEYS = {
    "loss_rpn_rank",
    "loss_rpn_sort",
    "loss_rpn_box",
    "loss_roi_rank",
    "loss_roi_sort",
    "loss_roi_box",
}
TINY = {
    **BASE,
    "rpn_pre_nms_top_n_train": 100,
    "rpn_post_nms_top_n_train": 30,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 30,
    "cls_loss": {"name": "rank_sort"},
}


def tiny(seed: int = 0, **overrides) -> FasterRCNN:
    return tiny_model(TINY, seed, **overrides)


def _loss_values(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in losses.items()}


@contextlib.contextmanager
def captured(model: FasterRCNN):
    """What the heads see and produce in one forward: RPN inputs (resized images, features,
    torchvision targets), head outputs, proposals, predictor outputs, objective inputs."""
    net, out, handles = model.net, {}, []

    def keep(name):
        return lambda _m, args, *rest: out.__setitem__(name, rest[0] if rest else args)

    handles.append(net.rpn.register_forward_pre_hook(keep("rpn_in")))
    handles.append(net.rpn.register_forward_hook(keep("rpn_out")))
    handles.append(net.rpn.head.register_forward_hook(keep("rpn_head")))
    handles.append(net.roi_heads.box_predictor.register_forward_hook(keep("predictor")))
    if hasattr(net.rpn, "objective"):
        handles.append(net.rpn.objective.register_forward_pre_hook(keep("rpn_objective")))
        handles.append(net.roi_heads.objective.register_forward_pre_hook(keep("roi_objective")))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def _match(gt: torch.Tensor, boxes: torch.Tensor, fg: float, bg: float, low_quality: bool):
    """Plain max-IoU labelling: (label 1 / 0 / -1 per box, index of its best GT)."""
    if len(gt) == 0:
        return torch.zeros(len(boxes)), torch.zeros(len(boxes), dtype=torch.long)
    iou = box_iou(gt, boxes)  # [G, N]
    best, idx = iou.max(0)
    label = torch.full((len(boxes),), -1.0)
    label[best < bg] = 0.0
    label[best >= fg] = 1.0
    if low_quality:  # each GT's best boxes are positives (matched to their own best GT)
        for g in range(len(gt)):
            label[iou[g] == iou[g].max()] = 1.0
    return label, idx


def rpn_reference(model: FasterRCNN, cap: dict) -> dict[str, torch.Tensor]:
    """Expected RPN objective inputs: targets over all anchors, box losses, weights."""
    image_list, features, tv_targets = cap["rpn_in"]
    anchors = model.net.rpn.anchor_generator(image_list, list(features.values()))
    objectness, deltas = concat_box_prediction_layers(*cap["rpn_head"])
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))  # the official RS RPN's stds 0.1/0.1/0.2/0.2
    labels, gts = [], []
    for anc, t in zip(anchors, tv_targets):
        lab, idx = _match(t["boxes"], anc, 0.7, 0.3, low_quality=True)
        labels.append(lab)
        gts.append(t["boxes"][idx] if len(t["boxes"]) else torch.zeros(len(anc), 4))
    labels = torch.cat(labels)
    pos = labels == 1
    pred = coder.decode_single(deltas.detach(), torch.cat(anchors))[pos]
    gt = torch.cat(gts)[pos]
    expected = labels.clone()
    expected[pos] = box_iou(pred, gt).diagonal()
    return {
        "logits": objectness.detach().reshape(-1),
        "targets": expected,
        "giou": 1 - generalized_box_iou(pred, gt).diagonal(),
        "weights": torch.sigmoid(objectness.detach().reshape(-1)[pos]),
        "anchors": torch.tensor(sum(len(a) for a in anchors)),
    }


def roi_reference(cap: dict, fg: float = 0.5, bg: float = 0.5) -> dict[str, torch.Tensor]:
    """Expected RoI objective inputs over proposals + GT boxes x C classes (the whole row of
    an RoI between ``bg`` and ``fg`` is ignored: -1)."""
    _, _, tv_targets = cap["rpn_in"]
    proposals, _ = cap["rpn_out"]
    class_logits, box_regression = (t.detach() for t in cap["predictor"])
    rois, cls, gts, ignored = [], [], [], []
    for p, t in zip(proposals, tv_targets):
        r = torch.cat([p, t["boxes"]])
        lab, idx = _match(t["boxes"], r, fg, bg, low_quality=False)
        rois.append(r)
        ignored.append(lab < 0)
        cls.append(torch.where(lab > 0, t["labels"][idx] if len(t["boxes"]) else 0, 0))
        gts.append(t["boxes"][idx] if len(t["boxes"]) else torch.zeros(len(r), 4))
    rois, cls, gts = torch.cat(rois), torch.cat(cls).long(), torch.cat(gts)
    pos = torch.where(cls > 0)[0]
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    deltas = box_regression.reshape(len(rois), C + 1, 4)[pos, cls[pos]]
    pred = coder.decode_single(deltas, rois[pos])
    expected = torch.zeros(len(rois), C)
    expected[torch.cat(ignored)] = -1.0
    expected[pos, cls[pos] - 1] = box_iou(pred, gts[pos]).diagonal()
    return {
        "rois": torch.tensor(len(rois)),
        "logits": class_logits[:, 1:].reshape(-1),
        "targets": expected.reshape(-1),
        "giou": 1 - generalized_box_iou(pred, gts[pos]).diagonal(),
        "weights": torch.sigmoid(class_logits[pos, 1:]).max(1).values,
    }


def _shift_boxes(model: FasterRCNN, seed: int = 1) -> FasterRCNN:
    """A constructed case: class-specific deltas far from 0, so IoU targets differ per RoI."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bias = model.net.roi_heads.box_predictor.bbox_pred.bias
        bias.copy_(torch.randn(bias.shape, generator=g) * 2.0)
    return model


# ------------------------------------------------------------------------------ training
def test_training_step_gives_the_rs_terms_and_changes_the_weights():
    model = tiny().train()
    assert isinstance(model.net.rpn, RankBasedRPN)
    assert isinstance(model.net.roi_heads, RankBasedRoIHeads)
    losses = model(images(), targets())
    assert set(losses) == RS_KEYS
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    values = _loss_values(losses)
    assert values["loss_roi_rank"] > 0 and values["loss_rpn_rank"] > 0
    params = {
        "predictor": model.net.roi_heads.box_predictor.cls_score.weight,
        "regressor": model.net.roi_heads.box_predictor.bbox_pred.weight,
        "rpn": model.net.rpn.head.cls_logits.weight,
        "rpn_box": model.net.rpn.head.bbox_pred.weight,
        "backbone": next(model.net.backbone.parameters()),
    }
    before = {k: p.detach().clone() for k, p in params.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()
    for k, p in params.items():
        assert not torch.equal(p.detach(), before[k]), k


def test_no_sampling_every_anchor_and_every_roi_enters_the_losses():
    model = tiny().train()
    with captured(model) as cap:
        model(images(), targets())
    rpn = rpn_reference(model, cap)
    logits, tgt, box_losses, _ = cap["rpn_objective"]
    assert logits.numel() == tgt.numel() == int(rpn["anchors"])  # all images x levels x anchors
    assert torch.equal(tgt >= 0, rpn["targets"] >= 0)  # every non-ignored anchor counts
    n_counted = int((tgt >= 0).sum())
    assert n_counted > 2 * 256  # more than a 256-per-image sampler could pick
    assert int((tgt > 0).sum()) == box_losses.numel() == int((rpn["targets"] > 0).sum())
    proposals, _ = cap["rpn_out"]
    n_gt = [len(t["boxes"]) for t in cap["rpn_in"][2]]
    rois = sum(len(p) for p in proposals) + sum(n_gt)
    logits, tgt, _, _ = cap["roi_objective"]
    assert logits.numel() == tgt.numel() == rois * C  # all proposals + GT boxes, C classes
    assert cap["predictor"][0].shape == (rois, C + 1)


@pytest.mark.parametrize("roi_bg", [0.5, 0.02])  # 0.02: random proposals get ignored
def test_iou_targets_and_box_losses_match_an_independent_computation(roi_bg):
    model = _shift_boxes(tiny(box_bg_iou_thresh=roi_bg)).train()
    with captured(model) as cap:
        model(images(), targets())
    rpn, roi = rpn_reference(model, cap), roi_reference(cap, 0.5, roi_bg)
    n_ignored = int((roi["targets"] < 0).sum())
    assert (n_ignored > 0) == (roi_bg < 0.5)
    for name, ref in (("rpn_objective", rpn), ("roi_objective", roi)):
        logits, tgt, box_losses, scores = cap[name]
        torch.testing.assert_close(logits.detach(), ref["logits"], atol=1e-6, rtol=0)
        torch.testing.assert_close(tgt, ref["targets"], atol=1e-5, rtol=0)
        torch.testing.assert_close(box_losses.detach(), ref["giou"], atol=1e-5, rtol=0)
        torch.testing.assert_close(scores, ref["weights"], atol=1e-6, rtol=0)
    positives = roi["targets"][roi["targets"] > 0]
    assert len(positives) >= 3 and float(positives.max() - positives.min()) > 0.05
    assert int((rpn["targets"] > 0).sum()) >= 3


def test_value_balancing_and_rpn_head_weight():
    losses = _loss_values(tiny().train()(images(), targets()))
    for head in ("rpn", "roi"):
        cls = losses[f"loss_{head}_rank"] + losses[f"loss_{head}_sort"]
        assert losses[f"loss_{head}_box"] > 0
        assert losses[f"loss_{head}_box"] == pytest.approx(cls, rel=1e-6)
    full = _loss_values(tiny(rpn_head_weight=1.0).train()(images(), targets()))
    for k in ("loss_rpn_rank", "loss_rpn_sort", "loss_rpn_box"):
        assert losses[k] == pytest.approx(0.2 * full[k], rel=1e-5)
    for k in ("loss_roi_rank", "loss_roi_sort", "loss_roi_box"):
        assert losses[k] == pytest.approx(full[k], rel=1e-5)


@pytest.mark.parametrize("score_weighting", [True, False])
def test_box_terms_are_the_score_weighted_mean_of_giou_losses(score_weighting):
    ranking = {"task_balance": "fixed", "box_weight": 1.0, "score_weighting": score_weighting}
    model = _shift_boxes(tiny(ranking=ranking)).train()
    with captured(model) as cap:
        losses = _loss_values(model(images(), targets()))
    rpn, roi = rpn_reference(model, cap), roi_reference(cap)
    for key, ref, weight in (("loss_rpn_box", rpn, 0.2), ("loss_roi_box", roi, 1.0)):
        w = ref["weights"] if score_weighting else torch.ones_like(ref["giou"])
        hand = float((w * ref["giou"]).sum() / w.sum())
        assert losses[key] == pytest.approx(weight * hand, rel=1e-5), key


def test_images_without_objects_give_finite_zero_losses():
    model = tiny().train()
    empty = [make_target([], [], 0, (64, 64)), make_target([], [], 1, (48, 80))]
    losses = model(images(1), empty)
    assert set(losses) == RS_KEYS
    assert all(v.item() == 0.0 for v in losses.values()), _loss_values(losses)
    sum(losses.values()).backward()
    with captured(model) as cap:
        mixed = model(images(1), [empty[0], targets()[1]])
    assert all(torch.isfinite(v) for v in mixed.values())
    ref = rpn_reference(model, cap)  # the empty image's anchors are all negatives
    torch.testing.assert_close(cap["rpn_objective"][1], ref["targets"], atol=1e-5, rtol=0)
    assert _loss_values(mixed)["loss_roi_rank"] > 0
    sum(mixed.values()).backward()


# ------------------------------------------------------------------------------ eval
def test_eval_output_contract_with_sigmoid_scores():
    model = tiny().eval()
    ims = images()
    with torch.no_grad(), captured(model) as cap:
        preds = model(ims)
    proposals, _ = cap["rpn_out"]
    logits = cap["predictor"][0].split([len(p) for p in proposals])
    for p, lg, im in zip(preds, logits, ims):
        assert set(p) == {"boxes", "scores", "labels"} and len(p["scores"]) > 0
        assert p["labels"].dtype == torch.int64
        assert int(p["labels"].min()) >= 0 and int(p["labels"].max()) < C
        assert float(p["scores"].min()) >= 0 and float(p["scores"].max()) <= 1
        h, w = im.shape[-2:]
        b = p["boxes"]
        assert (b >= 0).all() and (b[:, 0::2] <= w).all() and (b[:, 1::2] <= h).all()
        sig = torch.sigmoid(lg[:, 1:])  # [R, C]: every score is a sigmoid of its class column
        for score, label in zip(p["scores"], p["labels"]):
            assert float((sig[:, label] - score).abs().min()) < 1e-6
        assert float(p["scores"][0]) == pytest.approx(float(sig.max()), abs=1e-6)
        soft = torch.softmax(lg, -1)[:, 1:]  # what a CE head would report: not this
        assert float((soft.max() - p["scores"][0]).abs()) > 1e-3


def test_relation_adapter_detects_with_the_rs_models_own_output():
    model = tiny()
    adapter = relation_detector(model)
    ims = images()
    with torch.no_grad():
        dets = adapter.detect(adapter.features(ims))
        ref = model.eval()(ims)
    for d, r in zip(dets, ref):
        assert len(d["labels"]) > 0 and int(d["labels"].max()) < C
        assert torch.equal(d["labels"], r["labels"])
        torch.testing.assert_close(d["scores"], r["scores"], atol=1e-6, rtol=0)
        torch.testing.assert_close(d["boxes"], r["boxes"], atol=1e-4, rtol=0)
        n = len(d["labels"])
        assert d["class_logits"].shape == (n, C + 1) and d["boxes_per_cls"].shape == (n, C + 1, 4)
        picked = d["class_logits"][torch.arange(n), d["labels"] + 1].exp()  # log of the sigmoid
        torch.testing.assert_close(picked, d["scores"], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ variants
def test_ap_loss_variant_trains_one_step():
    model = tiny(cls_loss={"name": "ap_loss"}).train()
    losses = model(images(), targets())
    assert set(losses) == {"loss_rpn_ap", "loss_rpn_box", "loss_roi_ap", "loss_roi_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    w = model.net.roi_heads.box_predictor.cls_score.weight
    before = w.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sum(losses.values()).backward()
    opt.step()
    assert not torch.equal(w.detach(), before)


def test_alrp_variant_trains_and_keeps_self_balancing_state_in_the_state_dict():
    ranking = {"task_balance": "self", "sb_period": 100}
    model = tiny(cls_loss={"name": "alrp"}, ranking=ranking).train()
    losses = model(images(), targets())
    assert set(losses) == {
        "loss_rpn_alrp_cls",
        "loss_rpn_alrp_loc",
        "loss_roi_alrp_cls",
        "loss_roi_alrp_loc",
    }
    assert all(torch.isfinite(v) for v in losses.values())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sum(losses.values()).backward()
    opt.step()
    state = model.state_dict()
    for head, scale in (("rpn", 0.2), ("roi_heads", 1.0)):
        prefix = f"net.{head}.objective."
        assert {prefix + k for k in ("sb_weight", "sb_sums", "sb_steps")} <= set(state)
        assert int(state[prefix + "sb_steps"]) == 1
        short = "rpn" if head == "rpn" else "roi"
        cls = float(losses[f"loss_{short}_alrp_cls"].detach()) / scale  # unweighted value
        assert float(state[prefix + "sb_sums"][0]) == pytest.approx(cls, rel=1e-6)
        assert float(state[prefix + "sb_weight"]) == 50.0  # initial w until the period ends
    fresh = tiny(seed=3, cls_loss={"name": "alrp"}, ranking=ranking)
    fresh.load_state_dict(state)
    assert int(fresh.net.roi_heads.objective.sb_steps) == 1


def test_tiny_learning_check_lowers_the_total_loss():
    model = tiny(seed=2).train()
    ims, tg = images(4), targets()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    totals = []
    for _ in range(30):
        total = sum(model(ims, tg).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    assert sum(totals[-3:]) / 3 < 0.5 * sum(totals[:3]) / 3, totals


# ------------------------------------------------------------------------------ CE default
def test_without_cls_loss_the_model_is_torchvisions():
    model = tiny(cls_loss=None).train()
    net = model.net
    assert type(net.rpn) is RegionProposalNetwork and type(net.roi_heads) is RoIHeads
    assert type(net.roi_heads.box_predictor) is FastRCNNPredictor
    assert net.roi_heads.box_predictor.cls_score.out_features == C + 1
    assert net.rpn.box_coder.weights == (1.0, 1.0, 1.0, 1.0)
    assert not any("objective" in k for k in model.state_dict())
    assert not model.sigmoid_classifier
    logits = torch.randn(5, C + 1)
    torch.testing.assert_close(model.class_probabilities(logits), logits.softmax(-1))
    losses = model(images(), targets())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    rs = tiny()
    assert isinstance(rs.net.roi_heads.box_predictor, RankBasedPredictor)
    assert rs.net.rpn.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    probs = rs.class_probabilities(logits)
    assert torch.equal(probs[:, 0], torch.zeros(5))
    torch.testing.assert_close(probs[:, 1:], torch.sigmoid(logits[:, 1:]))


# ------------------------------------------------------------------------------ config
def _write(tmp_path: Path, cls_loss: str) -> Path:
    tiny_keys = "\n".join(
        f"  {k}: {v}" for k, v in TINY.items() if k not in ("cls_loss", "class_names")
    )
    path = tmp_path / "rs.yaml"
    path.write_text(f"task: detection\nmodel:\n  name: faster_rcnn\n{tiny_keys}\n{cls_loss}\n")
    return path


def test_config_yaml_builds_the_rs_model_and_validates_cls_loss(tmp_path):
    cfg = config.load(_write(tmp_path, "  cls_loss: {name: rank_sort, delta: 0.3}"))
    model = build_model(cfg)
    assert isinstance(model.net.roi_heads, RankBasedRoIHeads)
    assert model.net.rpn.objective.loss.delta == 0.3
    assert model.net.roi_heads.objective.loss.delta == 0.3
    with pytest.raises(ConfigError, match="cls_loss.detla.*'delta'") as info:
        config.load(_write(tmp_path, "  cls_loss: {name: rank_sort, detla: 0.3}"))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="rank_sort"):
        config.load(_write(tmp_path, "  cls_loss: {name: rank_srot}"))
    cfg = config.load(_write(tmp_path, "  cls_loss: {name: smooth_ap}"))
    with pytest.raises(ConfigError, match="not a ranking classification loss"):
        build_model(cfg)
    per_class = "  cls_loss: {name: rank_sort}\n  ranking: {per_class: true}"
    with pytest.raises(ConfigError, match="per_class") as info:
        build_model(config.load(_write(tmp_path, per_class)))
    assert "\n" not in str(info.value)


def test_a_checkpoint_rebuilds_the_rs_model(tmp_path):
    import percepta
    from percepta.checkpoints import FORMAT, VERSION, load_model, save_checkpoint

    cfg = config.load(_write(tmp_path, "  cls_loss: {name: rank_sort, delta: 0.4}"))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    path = save_checkpoint(
        {
            "format": FORMAT,
            "version": VERSION,
            "percepta_version": percepta.__version__,
            "task": "detection",
            "config": config.to_dict(cfg),
            "model": model.state_dict(),
            "iteration": 0,
        },
        tmp_path / "last.pt",
    )
    loaded = load_model(path)
    assert isinstance(loaded.net.rpn, RankBasedRPN) and loaded.net.rpn.objective.loss.delta == 0.4
    with torch.no_grad():
        a, b = model(images()), loaded(images())
    for p, q in zip(a, b):
        assert torch.equal(p["labels"], q["labels"])
        torch.testing.assert_close(p["scores"], q["scores"], atol=0, rtol=0)


def test_presets_load_and_build():
    cpu = config.load(
        REPO / "configs" / "detection" / "rs_faster_rcnn_r18_builtin.yaml", ["model.num_classes=6"]
    )
    ce = config.load(
        REPO / "configs" / "detection" / "faster_rcnn_r18_builtin.yaml", ["model.num_classes=6"]
    )
    assert cpu.model.cls_loss.name == "rank_sort" and cpu.model.rpn_head_weight == 0.2
    assert cpu.train == ce.train  # same optimizer, lr and schedule as the CE preset
    model = build_model(cpu)
    assert isinstance(model.net.roi_heads, RankBasedRoIHeads)
    assert model.net.roi_heads.box_predictor.cls_score.out_features == 6  # no background
    coco = config.load(
        REPO / "configs" / "detection" / "rs_faster_rcnn_r50_coco.yaml",
        ["model.num_classes=80", "model.pretrained=false", "model.backbone=test_resnet"],
    )
    m = coco.model
    assert (m.min_size, m.max_size, m.box_score_thresh) == (800, 1333, 0.40)
    opt = coco.train.optimizer
    assert (opt.name, opt.lr, opt.momentum, opt.weight_decay) == ("sgd", 0.012, 0.9, 1e-4)
    assert coco.train.batch_size == 16 and coco.data.root == "data/coco"
    big = build_model(coco)
    assert isinstance(big.net.rpn, RankBasedRPN) and big.net.roi_heads.score_thresh == 0.40


def test_onnx_export_of_an_rs_model_keeps_its_sigmoid_scores(tmp_path):
    from percepta.export.onnx import parity_images
    from percepta.export.onnx_faster_rcnn import FasterRCNNOnnxPredictor, export_faster_rcnn
    from percepta.export.runtime import compare_predictions

    model = tiny(box_score_thresh=0.05).eval()
    with torch.no_grad():  # spread the scores away from ties (NMS order), as a trained model's
        model.net.roi_heads.box_predictor.cls_score.weight.mul_(10.0)
    predictor = FasterRCNNOnnxPredictor(export_faster_rcnn(model, tmp_path / "rs.onnx", top_k=50))
    ims = parity_images(64, n=3)
    model.net.roi_heads.detections_per_img = 50
    with torch.no_grad():
        ref = [model([im])[0] for im in ims]
    res = compare_predictions(
        ref, predictor(ims), box_tol=1e-3, score_tol=1e-5, score_threshold=0.05, top_k=50
    )
    assert res["ok"] and res["detections"] > 0, res
