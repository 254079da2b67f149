"""The detector interface of relation heads, for Faster R-CNN and CenterNet.

Coordinates are checked against hand-built feature maps (a "ramp" whose value at each cell is
the cell's column / row index, so RoIAlign's average over a box is the box centre in map units,
computed here from the box alone) and against ``torchvision.ops.roi_align`` called directly with
the scale the image's resize implies. ``detect()`` is checked against each model's own eval
output, and its ``class_logits`` against the scores that output reports.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.ops import roi_align

from percepta.detection.centernet import CenterNetConfig, build_centernet
from percepta.detection.faster_rcnn import FasterRCNN, FasterRCNNConfig, build_faster_rcnn
from percepta.detection.relation_interface import (
    LOGIT_FLOOR,
    CenterNetRelationAdapter,
    DetectorFeatures,
    FasterRCNNRelationAdapter,
    RelationDetector,
    relation_detector,
)
from percepta.errors import DataError, NotAvailableError

TOL = 1e-5


def _images(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        for h, w in ((64, 64), (48, 80))
    ]


def _frcnn(seed: int = 0) -> FasterRCNN:
    torch.manual_seed(seed)
    cfg = FasterRCNNConfig(
        backbone="test_resnet",
        num_classes=3,
        min_size=64,
        max_size=96,
        fpn_channels=16,
        representation_size=32,
        anchor_sizes=[8, 16, 32, 64, 128],
        box_score_thresh=0.0,
    )
    model = build_faster_rcnn(cfg)
    with torch.no_grad():  # spread the random scores (no near-ties in the ranking)
        model.net.roi_heads.box_predictor.cls_score.weight.mul_(10.0)
    return model.eval()


def _centernet(seed: int = 0):
    torch.manual_seed(seed)
    cfg = CenterNetConfig(
        backbone="test_resnet",
        input_size=64,
        num_classes=3,
        neck_channels=[32, 16, 8],
        head_conv=8,
        top_k=10,
        score_threshold=0.0,
    )
    return build_centernet(cfg).eval()


def _ramp(b: int, h: int, w: int, channels: int = 2) -> torch.Tensor:
    """Channel 0 = column index, channel 1 = row index, further channels copy channel 0."""
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(b, 1, h, w)
    ys = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(b, 1, h, w)
    return torch.cat([xs, ys, *([xs] * (channels - 2))], 1).contiguous()


def _centres(boxes: torch.Tensor) -> torch.Tensor:
    return torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)


# ------------------------------------------------------------------------------ dispatch
def test_relation_detector_dispatches_to_each_models_adapter():
    frcnn, centernet = _frcnn(), _centernet()
    a, b = relation_detector(frcnn), relation_detector(centernet)
    assert isinstance(a, FasterRCNNRelationAdapter) and isinstance(b, CenterNetRelationAdapter)
    assert isinstance(a, RelationDetector) and isinstance(b, RelationDetector)
    assert (a.num_classes, a.out_channels) == (3, 16)
    assert (b.num_classes, b.out_channels) == (3, 8)

    class Wrapper(nn.Module):  # DDP / AveragedModel keep the model as .module
        def __init__(self, m: nn.Module) -> None:
            super().__init__()
            self.module = m

    assert isinstance(relation_detector(Wrapper(frcnn)), FasterRCNNRelationAdapter)
    with pytest.raises(NotAvailableError, match="Linear.*relation_interface"):
        relation_detector(nn.Linear(2, 2))


@pytest.mark.parametrize("make", [_frcnn, _centernet])
def test_the_detector_stays_frozen_in_eval_mode(make):
    model = make()
    det = relation_detector(model)
    model.train()  # a parent relation model's .train() recurses into its detector
    feats = det.features(_images())
    assert not model.training
    boxes = [torch.tensor([[2.0, 3.0, 30.0, 40.0]]), torch.zeros(0, 4)]
    pooled = det.roi_features(feats, boxes)
    outs = det.detect(feats)
    assert not any(m.requires_grad for m in feats.maps)
    assert not pooled.requires_grad and not any(o["boxes"].requires_grad for o in outs)
    assert pooled.shape == (1, det.out_channels, 7, 7)
    assert det.roi_features(feats, boxes, output_size=5).shape == (1, det.out_channels, 5, 5)
    with pytest.raises(DataError, match="boxes of image 0"):
        det.roi_features(feats, [torch.zeros(3), torch.zeros(0, 4)])


# ------------------------------------------------------------------------------ Faster R-CNN
def test_faster_rcnn_detect_is_the_models_own_output_with_logits():
    model = _frcnn()
    ims = _images()
    with torch.no_grad():
        ref = model(ims)
    det = relation_detector(model)
    feats = det.features(ims)
    assert feats.image_sizes == [(64, 64), (48, 80)]
    outs = det.detect(feats)
    for o, r in zip(outs, ref):
        n = len(r["scores"])
        assert n > 0 and set(o) == {"boxes", "scores", "labels", "class_logits", "boxes_per_cls"}
        assert torch.equal(o["labels"], r["labels"])
        torch.testing.assert_close(o["boxes"], r["boxes"], atol=TOL, rtol=0)
        torch.testing.assert_close(o["scores"], r["scores"], atol=TOL, rtol=0)
        assert o["class_logits"].shape == (n, 4) and o["boxes_per_cls"].shape == (n, 4, 4)
        # each detection's score is the softmax of its own proposal's logits at its class
        probs = o["class_logits"].softmax(1)
        torch.testing.assert_close(
            probs[torch.arange(n), r["labels"] + 1], r["scores"], atol=TOL, rtol=0
        )
        picked = o["boxes_per_cls"][torch.arange(n), r["labels"] + 1]
        torch.testing.assert_close(picked, r["boxes"], atol=TOL, rtol=0)


def test_faster_rcnn_features_keep_the_padded_shape_not_the_pixels():
    # torchvision's RPN needs only the padded batch's shape (anchor strides): a feature cache
    # entry must not carry the padded image (half of a 608 px entry)
    model = _frcnn()
    ims = _images()
    padded, _ = model.net.transform([im.float() / 255 for im in ims])
    image_list = relation_detector(model).features(ims).extra["image_list"]
    assert image_list.tensors.shape == padded.tensors.shape
    assert image_list.image_sizes == padded.image_sizes
    assert image_list.tensors.untyped_storage().nbytes() <= 8


class RampBackbone(nn.Module):
    """A fake FPN: one stride-4 ramp level ('0') plus torchvision's 'pool' level."""

    out_channels = 2
    level_names = ["0", "pool"]

    def forward(self, x: torch.Tensor) -> OrderedDict:
        ramp = _ramp(x.shape[0], x.shape[-2] // 4, x.shape[-1] // 4)
        return OrderedDict([("0", ramp), ("pool", nn.functional.max_pool2d(ramp, 1, 2))])


def test_faster_rcnn_roi_features_pool_the_box_in_original_pixels():
    # a 50 x 100 image is resized by 2 (min_size 100) to 100 x 200; the map has stride 4
    model = FasterRCNN(RampBackbone(), 2, anchor_sizes=[16, 32], min_size=100, max_size=400)
    det = relation_detector(model)
    image = torch.rand(3, 50, 100)
    feats = det.features([image])
    assert feats.image_sizes == [(50, 100)]
    assert feats.extra["image_list"].image_sizes == [(100, 200)]
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0], [60.0, 20.0, 90.0, 44.0], [0.0, 0.0, 7.0, 6.0]])
    pooled = det.roi_features(feats, [boxes])
    direct = roi_align(feats.maps[0], [boxes * 2], 7, spatial_scale=0.25, sampling_ratio=2)
    torch.testing.assert_close(pooled, direct, atol=TOL, rtol=0)
    # the ramp's average over each RoI is the box centre in map units: x * 2 / 4
    means = pooled.mean((2, 3))
    torch.testing.assert_close(means, _centres(boxes) * 0.5, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------ CenterNet
def test_centernet_detect_is_the_models_own_output_with_heatmap_logits():
    model = _centernet()
    ims = _images()
    with torch.no_grad():
        ref = model(ims)
    det = relation_detector(model)
    feats = det.features(ims)
    assert feats.maps[0].shape == (2, 8, 16, 16)  # the stride-4 neck output of the 64 px canvas
    outs = det.detect(feats)
    for o, r in zip(outs, ref):
        n = len(r["scores"])
        assert n == 10
        assert torch.equal(o["labels"], r["labels"])
        torch.testing.assert_close(o["boxes"], r["boxes"], atol=TOL, rtol=0)
        assert o["class_logits"].shape == (n, 4)
        # the detected class's column holds log(score): the logits come from the peak cell
        own = o["class_logits"][torch.arange(n), r["labels"] + 1]
        torch.testing.assert_close(own, r["scores"].clamp(min=LOGIT_FLOOR).log(), atol=TOL, rtol=0)
        fg = o["class_logits"][:, 1:].exp()
        bg = o["class_logits"][:, 0].exp()
        torch.testing.assert_close(bg, 1 - fg.max(1).values, atol=TOL, rtol=0)
        assert torch.equal(o["boxes_per_cls"], r["boxes"].unsqueeze(1).expand(n, 4, 4))


class RampNeck(nn.Module):
    """Stands in for CenterNet's neck (3 up-sampling stages: stride 32 -> 4): a ramp of the
    real neck's width on the stride-4 grid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ramp(x.shape[0], x.shape[-2] * 8, x.shape[-1] * 8, self.out_channels)


def test_centernet_roi_features_pool_the_box_in_original_pixels():
    model = _centernet()
    model.neck = RampNeck(model.neck.out_channels)
    assert model.stride == 4
    det = relation_detector(model)
    # a 48 x 80 image is letterboxed into 64 x 64 with scale 0.8 (then padded)
    feats = det.features([_images()[1]])
    scale = float(feats.extra["scales"][0])
    assert scale == pytest.approx(0.8)
    # boxes well inside the 16 x 16 map (RoIAlign clamps samples beyond the last cell)
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0], [50.0, 12.0, 70.0, 40.0]])
    pooled = det.roi_features(feats, [boxes])
    direct = roi_align(feats.maps[0], [boxes], 7, spatial_scale=scale / 4, sampling_ratio=2)
    torch.testing.assert_close(pooled, direct, atol=TOL, rtol=0)
    torch.testing.assert_close(
        pooled.mean((2, 3))[:, :2], _centres(boxes) * scale / 4, atol=1e-4, rtol=0
    )


def test_detector_features_is_a_plain_dataclass():
    f = DetectorFeatures([torch.zeros(1)], [(3, 4)])
    assert f.extra == {} and f.image_sizes == [(3, 4)]


def test_centernet_classify_reads_the_heat_map_cell_of_each_box_centre():
    det = relation_detector(_centernet())
    feats = det.features([_images()[1]])  # 48 x 80 letterboxed at scale 0.8, stride 4
    heat = torch.rand_like(feats.extra["heads"]["heat"]) * 0.9 + 0.05
    feats.extra["heads"]["heat"] = heat
    # centres (20, 15) and (60, 26) px -> canvas (16, 12), (48, 20.8) -> cells (4, 3), (12, 5)
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0], [50.0, 12.0, 70.0, 40.0]])
    (logits,) = det.classify(feats, [boxes])
    s = torch.stack([heat[0, :, 3, 4], heat[0, :, 5, 12]])
    expected = torch.cat([1 - s.max(1, keepdim=True).values, s], 1).log()
    assert logits.shape == (2, det.num_classes + 1)
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=0)
