"""A tiny Faster R-CNN and a two-image batch shared by the Faster R-CNN and RS-R-CNN tests
(timm's ``test_resnet``, 64-96 px images, 3 classes: fast on one thread)."""

from __future__ import annotations

import torch

from percepta.detection.faster_rcnn import FasterRCNN, FasterRCNNConfig, build_faster_rcnn
from percepta.structures import make_target

TINY = {
    "backbone": "test_resnet",
    "num_classes": 3,
    "class_names": ["a", "b", "c"],
    "min_size": 64,
    "max_size": 96,
    "fpn_channels": 16,
    "representation_size": 32,
    "anchor_sizes": [8, 16, 32, 64, 128],
    "box_score_thresh": 0.0,
}


def tiny_model(options: dict, seed: int = 0, **overrides) -> FasterRCNN:
    """``FasterRCNNConfig(**options, **overrides)`` built with a fixed seed."""
    torch.manual_seed(seed)
    return build_faster_rcnn(FasterRCNNConfig(**{**options, **overrides}))


def images(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        for h, w in ((64, 64), (48, 80))
    ]


def targets() -> list[dict]:
    return [
        make_target([[4, 6, 30, 40], [40, 10, 60, 60]], [0, 2], 7, (64, 64)),
        make_target([[10, 5, 70, 44]], [1], 8, (48, 80)),
    ]
