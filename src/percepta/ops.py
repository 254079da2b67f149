"""Small tensor operations shared by tasks and losses (below both in the layering).

``peak_mask`` is the one 3x3 max-pool peak picker of percepta: the CenterNet decode, the ONNX
graphs and the distillation losses' peak weights all use it. ``aligned_box_iou`` is the paired
IoU the ranking-loss heads take their targets from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops._utils import _loss_inter_union

__all__ = ["peak_mask", "aligned_box_iou"]


def aligned_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of ``boxes1[i]`` with ``boxes2[i]`` (``[N,4]`` XYXY each) -> ``[N]``: the diagonal of
    ``torchvision.ops.box_iou`` without the ``N x N`` matrix (torchvision's own aligned
    intersection / union, the one its GIoU loss uses; a private helper of torchvision)."""
    inter, union = _loss_inter_union(boxes1, boxes2)
    return inter / union.clamp(min=torch.finfo(union.dtype).eps)


def peak_mask(heat: torch.Tensor, kernel: int = 3, *, equality_free: bool = False) -> torch.Tensor:
    """``heat`` with every pixel that is not a local maximum of its ``kernel`` window set to 0.

    The one max-pool peak picker of percepta: the CenterNet decode (hence the PyTorch model, the
    exported ``decode="full"`` graph and the onnxruntime path of a ``decode="peaks"`` export)
    :class:`percepta.export.onnx.PeaksGraph` and the distillation peak weights all call it.

    * default: keep a pixel iff it equals its max-pooled value (the official rule; plateaus keep
      every tied pixel);
    * ``equality_free=True``: centerX's ``==``-free form ``heat * relu(heat - hmax + 1e-9) * 1e9``
      for converters without ``Equal``, always computed in float32 (in fp16, 1e-9 rounds to 0
      and 1e9 overflows: ``0 * inf = NaN``). It equals the default mask bit for bit for every
      score >= 2**-6 and leaks at most ~0.0042 below (see :mod:`percepta.export.onnx`).
    """
    if equality_free:
        heat = heat.float()
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=(kernel - 1) // 2)
    if equality_free:
        return heat * (torch.relu(heat - hmax + 1e-9) * 1e9)
    return heat * (hmax == heat).to(heat.dtype)
