"""Detection augmentations: boxes, ignore boxes, masks and labels stay in step with the image."""

from __future__ import annotations

import warnings

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from percepta.data.coco import CocoDetection
from percepta.data.transforms import DetectionAugment, _labels_and_area, build_transforms

# library deprecations outside our control (torchvision.io -> torchcodec; pycocotools + numpy 2)
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:The image decoding and encoding capabilities:DeprecationWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
    ),
]


def _target(h=40, w=60):
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[5.0, 5, 25, 30], [30, 10, 58, 20]]), format="XYXY", canvas_size=(h, w)
    )
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    masks[0, 5:30, 5:25] = 1
    masks[1, 10:20, 30:58] = 1
    return {
        "boxes": boxes,
        "labels": torch.tensor([0, 2]),
        "image_id": 1,
        "orig_size": (h, w),
        "area": torch.tensor([500.0, 280.0]),
        "ignore_boxes": torch.tensor([[0.0, 0, 10, 8]]),
        "masks": tv_tensors.Mask(masks),
    }


def test_val_is_identity():
    assert build_transforms(train=False, augment=True) is None
    assert build_transforms(train=True, augment=False) is None
    assert build_transforms(train=True, augment=True) is not None


def test_flip_moves_ignore_boxes_and_masks():
    aug = DetectionAugment(v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.SanitizeBoundingBoxes()]))
    img = torch.zeros(3, 40, 60, dtype=torch.uint8)
    img[:, :, :10] = 255
    out_img, t = aug(img, _target())
    assert type(out_img) is torch.Tensor and out_img.dtype == torch.uint8
    assert out_img[:, :, 50:].eq(255).all() and out_img[:, :, :50].eq(0).all()
    assert t["boxes"].tolist() == [[35, 5, 55, 30], [2, 10, 30, 20]]
    assert t["ignore_boxes"].tolist() == [[50, 0, 60, 8]]
    assert t["labels"].tolist() == [0, 2] and t["area"].tolist() == [500.0, 280.0]
    assert isinstance(t["masks"], tv_tensors.Mask) and t["masks"].shape == (2, 40, 60)
    ys, xs = torch.nonzero(t["masks"][0], as_tuple=True)
    assert (xs.min().item(), xs.max().item() + 1) == (35, 55)


def test_sanitize_drops_labels_area_masks_together():
    t0 = _target()
    t0["boxes"] = tv_tensors.BoundingBoxes(
        torch.tensor([[5.0, 5, 25, 30], [30, 10, 30.5, 20]]), format="XYXY", canvas_size=(40, 60)
    )  # 2nd < 1 px wide
    aug = DetectionAugment(v2.Compose([v2.SanitizeBoundingBoxes(labels_getter=_labels_and_area)]))
    out_img, t = aug(torch.zeros(3, 40, 60, dtype=torch.uint8), t0)
    assert t["labels"].tolist() == [0] and t["area"].tolist() == [500.0]
    assert t["boxes"].shape == (1, 4) and t["masks"].shape[0] == 1
    assert t["ignore_boxes"].tolist() == [[0, 0, 10, 8]]


def test_train_pipeline_keeps_targets_consistent(tiny_coco):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = CocoDetection(tiny_coco, transforms=build_transforms(True, True), with_masks=True)
    torch.manual_seed(0)
    sizes = set()
    for _ in range(15):
        for i in range(len(ds)):
            img, t = ds[i]
            assert img.dtype == torch.uint8 and img.shape[0] == 3
            h, w = img.shape[-2:]
            sizes.add((i, h, w))
            b = t["boxes"]
            assert tuple(b.canvas_size) == (h, w)
            assert len(b) == len(t["labels"]) == len(t["area"]) == len(t["masks"])
            if len(b):
                assert (
                    (b[:, 0] >= 0).all()
                    and (b[:, 2] <= w).all()
                    and (b[:, 1] >= 0).all()
                    and (b[:, 3] <= h).all()
                )
                assert ((b[:, 2] - b[:, 0]) >= 1).all() and ((b[:, 3] - b[:, 1]) >= 1).all()
            assert t["labels"].min().item() >= 0 if len(b) else True
            assert t["ignore_boxes"].shape[-1] == 4
            assert t["orig_size"] == (ds.image_info(i)["height"], ds.image_info(i)["width"])
    # the scale jitter changes image sizes sometimes but never resizes to one fixed size
    assert len({(h, w) for _, h, w in sizes}) > 3
