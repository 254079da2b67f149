"""Faster R-CNN (torchvision's) behind percepta's detector contract.

The references are independent of the wrapper: torchvision's own ``FasterRCNN`` called directly
(``model.net``) with torchvision's label convention (1..C, 0 = background), torchvision's own
``resnet_fpn_backbone`` for which stages train, the weights files written here, and
onnxruntime for the export. Tiny sizes (timm's ``test_resnet``, 64-96 px) keep the file fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from tests.detection.tiny_faster_rcnn import TINY, images, targets, tiny_model
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from percepta import config
from percepta.detection.faster_rcnn import (
    FasterRCNN,
    FasterRCNNConfig,
    build_fpn_backbone,
    to_torchvision_targets,
)
from percepta.engine.build import build_model
from percepta.errors import ConfigError, DataError, PerceptaError
from percepta.registry import MODELS
from percepta.structures import make_target

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-6


def tiny(seed: int = 0, **overrides) -> FasterRCNN:
    return tiny_model(TINY, seed, **overrides)


def unit(ims: list[torch.Tensor]) -> list[torch.Tensor]:
    return [im.float() / 255 for im in ims]


# ------------------------------------------------------------------------------ registration
def test_registered_as_a_detection_model():
    entry = MODELS.entry("faster_rcnn")
    assert entry.task == "detection" and entry.options is FasterRCNNConfig


def test_cpu_preset_config_builds_the_documented_model():
    cfg = config.load(
        REPO / "configs" / "detection" / "faster_rcnn_r18_builtin.yaml", ["model.num_classes=6"]
    )
    model = build_model(cfg)
    net = model.net
    assert isinstance(model, FasterRCNN) and model.num_classes == 6
    assert net.roi_heads.box_predictor.cls_score.out_features == 7  # C + background
    assert net.backbone.out_channels == cfg.model.fpn_channels
    assert list(net.roi_heads.box_roi_pool.featmap_names) == ["0", "1", "2", "3"]
    sizes = [s[0] for s in net.rpn.anchor_generator.sizes]
    assert sizes == list(cfg.model.anchor_sizes)
    assert net.transform.min_size == (128,) and net.transform.max_size == 128


# ------------------------------------------------------------------------------ the boundary
def test_targets_shift_labels_by_one_and_drop_degenerate_boxes():
    t = make_target([[1, 2, 5, 9], [3, 3, 3, 8], [0, 0, 4, 4]], [0, 1, 2], 5, (10, 10))
    (out,) = to_torchvision_targets([t], 3, 1, torch.device("cpu"))
    assert torch.equal(out["labels"], torch.tensor([1, 3]))  # the zero-width box is dropped
    assert type(out["boxes"]) is torch.Tensor and out["boxes"].dtype == torch.float32
    assert torch.equal(out["boxes"], torch.tensor([[1.0, 2, 5, 9], [0, 0, 4, 4]]))


def test_train_losses_are_torchvisions_with_labels_plus_one():
    model = tiny().train()
    ims, tg = images(), targets()
    torch.manual_seed(3)
    ours = model(ims, tg)
    assert set(ours) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    tv_targets = [
        {"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"] + 1} for t in tg
    ]
    torch.manual_seed(3)
    ref = model.net(unit(ims), tv_targets)
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], atol=TOL, rtol=0)
    # the mistake the boundary prevents: percepta's label 0 would be torchvision's background
    unshifted = [{"boxes": t["boxes"], "labels": t["labels"] - 1} for t in tv_targets]
    torch.manual_seed(3)
    wrong = model.net(unit(ims), unshifted)
    assert abs(float((wrong["loss_classifier"] - ours["loss_classifier"]).detach())) > 1e-4


def test_eval_output_is_torchvisions_with_labels_minus_one():
    model = tiny().eval()
    ims = images()
    with torch.no_grad():
        ours = model(ims)
        ref = model.net(unit(ims))
    for p, r, im in zip(ours, ref, ims):
        assert set(p) == {"boxes", "scores", "labels"}
        assert len(p["scores"]) > 0 and p["labels"].dtype == torch.int64
        assert torch.equal(p["labels"], r["labels"] - 1)
        assert int(p["labels"].min()) >= 0 and int(p["labels"].max()) < 3
        torch.testing.assert_close(p["scores"], r["scores"], atol=TOL, rtol=0)
        h, w = im.shape[-2:]
        clipped = r["boxes"].clone()
        clipped[:, 0::2] = clipped[:, 0::2].clamp(0, w)
        clipped[:, 1::2] = clipped[:, 1::2].clamp(0, h)
        torch.testing.assert_close(p["boxes"], clipped, atol=TOL, rtol=0)


def test_uint8_and_unit_float_images_and_a_batch_tensor_agree():
    model = tiny().eval()
    ims = images()
    same = [ims[0], ims[0].flip(-1)]
    with torch.no_grad():
        a, b = model(ims), model(unit(ims))
        c, d = model(same), model(torch.stack(same))
    for p, q in [*zip(a, b), *zip(c, d)]:
        torch.testing.assert_close(p["boxes"], q["boxes"], atol=1e-4, rtol=0)
        torch.testing.assert_close(p["scores"], q["scores"], atol=1e-5, rtol=0)
        assert torch.equal(p["labels"], q["labels"])


def test_images_without_objects_train_with_zero_box_losses():
    model = tiny().train()
    empty = [make_target([], [], 0, (64, 64)), make_target([], [], 1, (48, 80))]
    losses = model(images(1), empty)
    assert losses["loss_box_reg"].item() == 0.0 and losses["loss_rpn_box_reg"].item() == 0.0
    mixed = model(images(1), [empty[0], targets()[1]])
    total = sum(mixed.values())
    assert torch.isfinite(total)
    total.backward()


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("build", "error", "words"),
    [
        (lambda: tiny(anchor_sizes=[8, 16]), ConfigError, "anchor_sizes"),
        (lambda: tiny(backbone="resnet_18x"), ConfigError, "model.backbone"),
        (lambda: tiny(backbone="torchvision:resnet19"), ConfigError, "resnet18"),
        (lambda: tiny(trainable_layers=7), ConfigError, "trainable_layers"),
        (lambda: tiny(min_size=200), ConfigError, "max_size"),
        (lambda: tiny(num_classes=0), ConfigError, "num_classes"),
        (lambda: tiny(pretrained=True), PerceptaError, "pretrained_path"),
    ],
)
def test_bad_options_raise_one_line_errors(build, error, words):
    with pytest.raises(error, match=words) as info:
        build()
    assert "\n" not in str(info.value)


def test_bad_inputs_raise_data_errors_naming_the_image():
    model = tiny().train()
    bad = targets()
    bad[1] = make_target([[1, 1, 9, 9]], [3], 42, (48, 80))
    with pytest.raises(DataError, match="image 42.*0..2"):
        model(images(), bad)
    with pytest.raises(DataError, match="needs targets"):
        model(images())
    with pytest.raises(DataError, match="float images are 0-1"):
        model.eval()([images()[0].float()])


# ------------------------------------------------------------------------------ backbones
def _trainable(module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("layers", [0, 3, 5])
def test_trainable_layers_follow_torchvision(layers):
    ours = build_fpn_backbone("torchvision:resnet18", trainable_layers=layers)
    ref = resnet_fpn_backbone(
        backbone_name="resnet18",
        weights=None,
        trainable_layers=layers,
        norm_layer=torch.nn.BatchNorm2d,  # random weights: trainable batch norm, as ours
    )
    assert _trainable(ours) == _trainable(ref)
    assert set(dict(ours.named_parameters())) == set(dict(ref.named_parameters()))


def test_local_torchvision_weights_load_with_frozen_batch_norm(tmp_path):
    import torchvision

    torch.manual_seed(123)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    bb = build_fpn_backbone("torchvision:resnet18", pretrained=True, pretrained_path=str(path))
    torch.testing.assert_close(bb.body.conv1.weight, net.conv1.weight, atol=0, rtol=0)
    torch.testing.assert_close(bb.body.layer3[0].bn1.running_var, net.layer3[0].bn1.running_var)
    assert isinstance(bb.body.bn1, FrozenBatchNorm2d)
    # torchvision's default with trained weights: the top 3 stages train
    assert (
        not bb.body.conv1.weight.requires_grad and not bb.body.layer1[0].conv1.weight.requires_grad
    )
    assert bb.body.layer2[0].conv1.weight.requires_grad


def test_local_timm_weights_load_and_incomplete_files_are_refused(tmp_path):
    torch.manual_seed(5)
    net = timm.create_model("test_resnet")
    path = tmp_path / "test_resnet.pth"
    torch.save(net.state_dict(), path)
    bb = build_fpn_backbone("test_resnet", pretrained=True, pretrained_path=str(path))
    ours, ref = bb.body.state_dict(), net.state_dict()
    wanted = [k for k in ref if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert any(k.startswith("layer4") for k in wanted)
    assert all(torch.equal(ours[k], ref[k]) for k in wanted)
    partial = {k: v for k, v in net.state_dict().items() if not k.startswith("layer4")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(PerceptaError, match="missing"):
        build_fpn_backbone(
            "test_resnet", pretrained=True, pretrained_path=str(tmp_path / "partial.pth")
        )


# ------------------------------------------------------------------------------ ONNX export
def _separated(model: FasterRCNN) -> FasterRCNN:
    """Spread the random classifier's logits so that scores are far from ties (a trained
    detector's are; near-equal random scores would make NMS order a float-noise question)."""
    with torch.no_grad():
        model.net.roi_heads.box_predictor.cls_score.weight.mul_(10.0)
    return model.eval()


def test_onnx_export_matches_pytorch_one_image_at_a_time(tmp_path):
    from percepta.export.onnx import parity_images
    from percepta.export.onnx_faster_rcnn import (
        FasterRCNNOnnxPredictor,
        export_faster_rcnn,
        is_faster_rcnn_onnx,
    )
    from percepta.export.runtime import compare_predictions

    model = _separated(tiny(box_score_thresh=0.05))
    path = export_faster_rcnn(model, tmp_path / "frcnn.onnx", top_k=50)
    assert is_faster_rcnn_onnx(path)
    predictor = FasterRCNNOnnxPredictor(path)
    assert predictor.class_names == ["a", "b", "c"] and predictor.top_k == 50
    ims = parity_images(64, n=3)  # square, wide (padding only), tall (resized)
    ours = predictor(ims)
    model.net.roi_heads.detections_per_img = 50
    with torch.no_grad():
        ref = [model([im])[0] for im in ims]
    res = compare_predictions(
        ref, ours, box_tol=1e-3, score_tol=1e-5, score_threshold=0.05, top_k=50
    )
    assert res["ok"] and res["detections"] > 0, res
    for p, im in zip(ours, ims):
        assert p["labels"].dtype == torch.int64 and int(p["labels"].max()) < 3
        assert (p["boxes"][:, 2] <= im.shape[-1]).all() and (p["boxes"][:, 3] <= im.shape[-2]).all()


def test_percepta_export_and_predict_take_a_faster_rcnn_checkpoint(tmp_path):
    import percepta
    from percepta.detection.predict import load_detector
    from percepta.engine.checkpoint import FORMAT, VERSION, save_checkpoint
    from percepta.export.onnx import ExportError, export_checkpoint
    from percepta.export.runtime import compare_predictions

    overrides = [f"model.{k}={v}" for k, v in TINY.items() if k != "class_names"]
    cfg = config.load(
        None,
        [
            "name=frcnn_export",
            "task=detection",
            "model.name=faster_rcnn",
            *overrides,
            "model.class_names=[a,b,c]",
            "model.category_ids=[2,4,9]",
        ],
    )
    torch.manual_seed(0)
    model = _separated(build_model(cfg))
    ckpt = save_checkpoint(
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
    info = export_checkpoint(ckpt, top_k=40)
    assert Path(info["path"]) == tmp_path / "last.onnx" and info["decode"] == "full"
    assert info["parity"]["ok"] and info["parity"]["images"] == 3, info["parity"]
    det = load_detector(info["path"], "cpu")  # `percepta predict` on the export
    assert det.class_names == ["a", "b", "c"] and det.category_ids == [2, 4, 9]
    (pred,) = det.run([images()[0]])
    with torch.no_grad():
        model.net.roi_heads.detections_per_img = 40
        (ref,) = model([images()[0]])
    res = compare_predictions([ref], [pred], box_tol=1e-3, score_tol=1e-5, top_k=40)
    assert res["ok"] and res["detections"] == len(ref["scores"]) > 0, res
    with pytest.raises(ExportError, match="decode=full only"):
        export_checkpoint(ckpt, decode="peaks")
