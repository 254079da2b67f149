"""CenterNet model: builder/options, backbones and weight loading, letterbox maths, training
contract (incl. images without boxes), CPU overfit and eval-mode outputs in original pixels."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
import torchvision
from tests.detection.toy_scenes import toy_batch
from torch import nn
from torchvision.ops import box_iou
from torchvision.transforms.v2 import functional as TF

from percepta.detection.backbones import Backbone, build_backbone
from percepta.detection.centernet import (
    CenterNet,
    CenterNetConfig,
    build_centernet,
    time_train_step_breakdown,
)
from percepta.errors import DataError, PerceptaError
from percepta.registry import MODELS
from percepta.structures import make_target


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The test machine's 2 cores are shared; OpenMP spinning with 2 threads is ~10x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _stub(channels: int = 16) -> Backbone:
    """A one-conv stride-32 'backbone' for tests of everything around the network."""
    return Backbone(nn.Conv2d(3, channels, 32, stride=32), channels, 32, "stub")


def _stub_model(**kw) -> CenterNet:
    kw.setdefault("input_size", 64)
    kw.setdefault("neck_channels", (16, 16, 16))
    kw.setdefault("head_conv", 8)
    return CenterNet(_stub(), kw.pop("num_classes", 2), **kw)


# ----------------------------------------------------------------------------- builder/options
def test_registered_with_options() -> None:
    entry = MODELS.entry("centernet")
    assert entry.options is CenterNetConfig and entry.builder is build_centernet
    first = dataclasses.fields(CenterNetConfig)[0]
    assert first.name == "name" and first.default == "centernet"
    cfg = CenterNetConfig()
    assert (cfg.radius_formula, cfg.min_overlap, cfg.max_objs) == ("centerx", 0.3, 128)
    assert (cfg.hm_weight, cfg.wh_weight, cfg.off_weight) == (1.0, 0.1, 1.0)


def test_builder_rejects_bad_options() -> None:
    with pytest.raises(PerceptaError, match="num_classes"):
        build_centernet(CenterNetConfig(num_classes=0))
    with pytest.raises(PerceptaError, match="radius_formula"):
        _stub_model(radius_formula="cornernet")
    with pytest.raises(PerceptaError, match="input_size"):
        _stub_model(input_size=100)
    with pytest.raises(PerceptaError, match="class_names"):
        _stub_model(num_classes=2, class_names=["a"])
    with pytest.raises(PerceptaError, match="unknown timm model"):
        build_backbone("resnet1B")


# ----------------------------------------------------------------------------- backbones
def test_pretrained_timm_weights_load_from_local_file(tmp_path) -> None:
    torch.manual_seed(123)
    ref = timm.create_model("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    cfg = CenterNetConfig(
        num_classes=3,
        input_size=64,
        pretrained=True,
        pretrained_path=str(path),
        class_names=["a", "b", "c"],
    )
    model = build_centernet(cfg)
    assert model.class_names == ["a", "b", "c"]
    loaded = model.backbone.body.state_dict()
    saved = ref.state_dict()
    assert loaded and all(torch.equal(v, saved[k]) for k, v in loaded.items())
    fresh = build_centernet(dataclasses.replace(cfg, pretrained=False, pretrained_path=""))
    assert not torch.equal(fresh.backbone.body.state_dict()["conv1.weight"], saved["conv1.weight"])


def test_pretrained_without_path_refuses_to_download(tmp_path) -> None:
    with pytest.raises(PerceptaError, match="pretrained_path"):
        build_centernet(CenterNetConfig(num_classes=1, pretrained=True))
    with pytest.raises(PerceptaError, match="not found"):
        build_backbone("resnet18", True, str(tmp_path / "missing.pth"))


def test_pretrained_file_that_does_not_match_is_an_error(tmp_path) -> None:
    partial = {
        k: v
        for k, v in timm.create_model("resnet18").state_dict().items()
        if not k.startswith("layer4")
    }  # timm alone would keep layer4 random, silently
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(PerceptaError, match="layer4"):
        build_backbone("resnet18", True, str(tmp_path / "partial.pth"))
    torch.save(timm.create_model("resnet50").state_dict(), tmp_path / "r50.pth")
    with pytest.raises(PerceptaError, match="r50.pth"):  # shape mismatch (bottleneck blocks)
        build_backbone("resnet18", True, str(tmp_path / "r50.pth"))


def test_torchvision_backbone_and_weights(tmp_path) -> None:
    torch.manual_seed(7)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "tv_r18.pth"
    torch.save(net.state_dict(), path)
    bb = build_backbone("torchvision:resnet18", True, str(path))
    assert (bb.out_channels, bb.stride) == (512, 32)
    for k, v in bb.body.state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k
    assert bb(torch.zeros(1, 3, 64, 64)).shape == (1, 512, 2, 2)


@pytest.mark.parametrize("name,channels", [("resnet34", 512), ("resnet50", 2048)])
def test_timm_resnets(name: str, channels: int) -> None:
    bb = build_backbone(name)
    assert (bb.out_channels, bb.stride) == (channels, 32)
    with torch.no_grad():
        assert bb(torch.zeros(1, 3, 64, 64)).shape == (1, channels, 2, 2)


# ----------------------------------------------------------------------------- letterbox maths
def test_preprocess_letterbox_and_target_scaling() -> None:
    model = _stub_model()
    img = torch.randint(0, 256, (3, 48, 80), dtype=torch.uint8)
    batch, scales, sizes = model.preprocess([img])
    assert batch.shape == (1, 3, 64, 64) and sizes == [(48, 80)]
    assert scales.tolist() == [pytest.approx(0.8)]
    # 48 x 0.8 = 38.4 -> 38 rows of content, zero padding below
    # the same antialiased resize, here vs inside preprocess (same machine): 1e-6 relative
    # plus 1e-4 absolute on 0-255 pixel values
    torch.testing.assert_close(
        batch[0, :, :38], TF.resize(img.float(), [38, 64], antialias=True), rtol=1e-6, atol=1e-4
    )
    assert batch[0, :, 38:].abs().sum() == 0
    # a box of the original image, scaled by 0.8 and the stride 4 by hand:
    # [8, 4, 40, 44] px -> [1.6, 0.8, 8.0, 8.8] cells; centre (4.8, 4.8); size (6.4, 8.0)
    tg = model.make_targets([make_target([[8, 4, 40, 44]], [1], 0, (48, 80))], scales, (16, 16))
    assert tg["wh"][0, 0].tolist() == pytest.approx([6.4, 8.0], abs=1e-6)
    assert tg["ind"][0, 0].item() == 4 * 16 + 4
    assert tg["reg"][0, 0].tolist() == pytest.approx([0.8, 0.8], abs=1e-6)
    assert tg["heatmap"][0, 1, 4, 4] == 1.0 and tg["heatmap"][0, 0].sum() == 0
    # an image already at the input size is not resized (exact pixels)
    same = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    b2, s2, _ = model.preprocess([same, img])
    assert torch.equal(b2[0], same.float()) and s2[0].item() == 1.0


def test_postprocess_maps_to_original_pixels() -> None:
    model = _stub_model(score_threshold=0.01)
    dets = torch.tensor(
        [
            [
                [1.6, 0.8, 8.0, 8.8, 0.9, 1.0],  # -> [8, 4, 40, 44]
                [15.0, 10.0, 20.0, 14.0, 0.5, 0.0],  # -> clipped to 80 x 48
                [1.0, 1.0, 2.0, 2.0, 0.005, 0.0],
            ]
        ]
    )  # below the threshold
    (pred,) = model.postprocess(dets, torch.tensor([0.8]), [(48, 80)])
    assert pred["labels"].dtype == torch.int64 and pred["labels"].tolist() == [1, 0]
    assert torch.allclose(
        pred["boxes"], torch.tensor([[8.0, 4.0, 40.0, 44.0], [75.0, 48.0, 80.0, 48.0]]), atol=1e-5
    )
    assert pred["scores"].tolist() == pytest.approx([0.9, 0.5])


# ----------------------------------------------------------------------------- training contract
def test_images_without_boxes_train() -> None:
    torch.manual_seed(0)
    model = _stub_model()
    model.train()
    imgs = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    empty = [make_target(torch.zeros(0, 4), [], i, (64, 64)) for i in range(2)]
    losses = model(imgs, empty)
    assert losses["loss_wh"].item() == 0.0 and losses["loss_offset"].item() == 0.0
    assert losses["num_objects"].item() == 0
    total = sum(v for k, v in losses.items() if k.startswith("loss"))
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    mixed = [make_target([[4, 4, 30, 40]], [1], 0, (64, 64)), empty[1]]
    losses = model(imgs, mixed)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["num_objects"].item() == 1


def test_bad_targets_raise_data_errors() -> None:
    model = _stub_model()
    model.train()
    imgs = torch.zeros(1, 3, 64, 64)
    with pytest.raises(DataError, match="labels must be in 0..1"):
        model(imgs, [make_target([[1, 1, 9, 9]], [2], 17, (64, 64))])
    with pytest.raises(DataError, match="17"):
        model(imgs, [{"boxes": torch.zeros(2, 3), "labels": torch.zeros(2), "image_id": 17}])
    with pytest.raises(DataError, match="targets"):
        model(imgs)
    with pytest.raises(DataError, match="RGB"):
        model.eval()(torch.zeros(1, 1, 64, 64))


def test_deform_and_class_specific_sizes() -> None:
    torch.manual_seed(0)
    model = _stub_model(deform=True, cat_spec_wh=True, num_classes=3)
    assert model.head.wh[-1].out_channels == 6
    model.train()
    tg = [make_target([[4, 4, 30, 40], [30, 10, 60, 30]], [2, 0], 0, (64, 64))]
    losses = model(torch.rand(1, 3, 64, 64), tg)
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    offset_conv = model.neck[0].conv.offset_mask
    assert offset_conv.weight.grad is not None and offset_conv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        (pred,) = model([torch.rand(3, 50, 70)])
    assert pred["boxes"].shape[1] == 4 and len(pred["scores"]) <= 100


def test_time_train_step_breakdown() -> None:
    model = _stub_model()
    imgs = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    tg = [make_target([[4, 4, 30, 40]], [1], i, (64, 64)) for i in range(2)]
    res = time_train_step_breakdown(model, (imgs, tg), repeats=1, warmup=0)
    assert {
        "preprocess_s",
        "forward_s",
        "targets_s",
        "loss_s",
        "backward_s",
        "step_s",
        "targets_share",
    } <= set(res)
    assert 0 < res["targets_share"] < 1
    assert all(p.grad is None for p in model.parameters())


# ----------------------------------------------------------------------------- CPU overfit
def _centres(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


@pytest.mark.slow
def test_overfits_two_images_and_predicts_in_original_pixels() -> None:
    torch.manual_seed(0)
    model = build_centernet(CenterNetConfig(num_classes=2, input_size=64, class_names=["r", "b"]))
    imgs, targets = toy_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    history = []
    for _ in range(30):
        losses = model(imgs, targets)
        total = sum(v for k, v in losses.items() if k.startswith("loss"))
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    assert losses["num_objects"].item() == 3
    assert sum(history[-3:]) / 3 < history[0] / 8, history

    model.eval()
    with torch.no_grad():
        small = model(imgs)
        # the same image at twice the size (list input, another size than input_size):
        # letterboxed with scale 0.5, predictions must come back in the 128 x 128 pixel frame
        big = model([TF.resize(imgs[0], [128, 128], interpolation=TF.InterpolationMode.NEAREST)])
    for pred in small + big:
        assert pred["labels"].dtype == torch.int64
        assert (pred["scores"] > model.score_threshold).all() and len(pred["scores"]) <= 100
        assert torch.all(pred["scores"][:-1] >= pred["scores"][1:])
    for pred, tgt, factor in (
        (small[0], targets[0], 1),
        (small[1], targets[1], 1),
        (big[0], targets[0], 2),
    ):
        gt = tgt["boxes"].as_subclass(torch.Tensor) * factor
        n = len(gt)
        top = pred["boxes"][:n]
        assert sorted(pred["labels"][:n].tolist()) == sorted(tgt["labels"].tolist())
        match = box_iou(top, gt).argmax(dim=1)
        assert sorted(match.tolist()) == list(range(n))
        assert torch.equal(pred["labels"][:n], tgt["labels"][match])
        # centres (heat map peak + offset) are learned first: within 2 px of 64 (x factor)
        assert (_centres(top) - _centres(gt[match])).abs().max() <= 2.0 * factor
        assert box_iou(top, gt[match]).diagonal().min() > 0.3
    # scale-equivariance of the mapping back: big image predictions ~ 2 x small predictions
    assert (big[0]["boxes"][:2] - 2 * small[0]["boxes"][:2]).abs().max() < 4.0


def test_dilated_backbone_keeps_stride_four_with_fewer_neck_stages() -> None:
    """output_stride=16 (timm dilation): an 8x8 last map at 128 px, two neck stages -> stride 4."""
    bb = build_backbone("resnet18", output_stride=16)
    assert bb.stride == 16 and bb(torch.zeros(1, 3, 128, 128)).shape[-2:] == (8, 8)
    cfg = CenterNetConfig(
        num_classes=2, input_size=128, output_stride=16, neck_channels=[16, 16], head_conv=8
    )
    model = build_centernet(cfg).eval()
    assert model.stride == 4
    assert model.forward_heads(torch.zeros(1, 3, 128, 128))["heat"].shape == (1, 2, 32, 32)
    with pytest.raises(PerceptaError, match="not divisible"):  # 5 stages: 16 / 32
        build_centernet(dataclasses.replace(cfg, neck_channels=[16] * 5))
    with pytest.raises(PerceptaError, match="output_stride must be 8, 16 or 32"):
        build_backbone("resnet18", output_stride=12)
    with pytest.raises(PerceptaError, match="torchvision backbones support only 32"):
        build_backbone("torchvision:resnet18", output_stride=16)
