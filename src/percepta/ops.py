"""Small tensor operations shared by tasks and losses (below both in the layering).

``peak_mask`` is the one 3x3 max-pool peak picker of percepta: the CenterNet decode, the ONNX
graphs and the distillation losses' peak weights all use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["peak_mask"]


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
