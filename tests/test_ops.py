"""percepta.ops.aligned_box_iou against the diagonal of torchvision's box_iou (a different
torchvision routine: the full pairwise matrix), including disjoint and degenerate boxes."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

from percepta.ops import aligned_box_iou


def test_aligned_box_iou_is_the_diagonal_of_box_iou():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 10
    a = torch.cat([xy, xy + torch.rand(50, 2, generator=g) * 5 + 0.1], 1)
    xy = torch.rand(50, 2, generator=g) * 10
    b = torch.cat([xy, xy + torch.rand(50, 2, generator=g) * 5 + 0.1], 1)
    b[0] = torch.tensor([100.0, 100.0, 101.0, 101.0])  # disjoint: IoU 0
    a[1] = torch.tensor([2.0, 2.0, 2.0, 2.0])  # an empty box inside b[1]'s range: IoU 0
    b[1] = torch.tensor([1.0, 1.0, 3.0, 3.0])
    expected = box_iou(a, b).diagonal()
    torch.testing.assert_close(aligned_box_iou(a, b), expected, rtol=1e-6, atol=1e-7)
    assert aligned_box_iou(a, b)[:2].tolist() == [0.0, 0.0]
