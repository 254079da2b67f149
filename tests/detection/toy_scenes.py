"""The two-image, three-object toy batch (64 px, 2 classes: red and blue rectangles) that the
CenterNet overfit checks train on, focal and Rank & Sort alike."""

from __future__ import annotations

import torch

from percepta.structures import make_target


def toy_batch() -> tuple[torch.Tensor, list[dict]]:
    imgs = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    imgs[0, :, 10:30, 8:40] = torch.tensor([255, 40, 40], dtype=torch.uint8).view(3, 1, 1)
    imgs[0, :, 40:60, 44:60] = torch.tensor([40, 40, 255], dtype=torch.uint8).view(3, 1, 1)
    imgs[1, :, 20:52, 16:36] = torch.tensor([40, 40, 255], dtype=torch.uint8).view(3, 1, 1)
    targets = [
        make_target([[8, 10, 40, 30], [44, 40, 60, 60]], [0, 1], 0, (64, 64)),
        make_target([[16, 20, 36, 52]], [1], 1, (64, 64)),
    ]
    return imgs, targets
