"""CenterNet decoding: 3x3 max-pool peak picking, two-stage top-K, box assembly.

Equal to the official ``ctdet_decode`` (xingyizhou/CenterNet 4c50fd3a, ``src/lib/models/
decode.py``; pinned by ``tests/fixtures/centernet/decode_basic.json``):

1. keep a pixel iff it equals its 3x3 max-pooled value (plateaus keep every tied pixel);
2. top-K inside each class plane, then top-K over the ``C*K`` candidates; class = candidate // K;
3. add the gathered sub-pixel offset (or 0.5 without an offset head), gather the size
   (``cat_spec_wh``: channels ``2c, 2c+1`` of the detected class);
4. boxes ``(x - w/2, y - h/2, x + w/2, y + h/2)`` in output-map units.

Written with tensor ops only (``max_pool2d``, ``topk``, ``gather``; no data-dependent Python
control flow, no modulo: ``aten.remainder`` on a symbolic width has no ONNX translation in the
``torch.export`` path) so that it traces into an ONNX graph. ``K`` is capped by the map size, so on tiny
maps fewer than ``k`` rows come back. Mapping back to image pixels is the model's job
(``CenterNet.postprocess``).
"""

from __future__ import annotations

import torch

from percepta.ops import peak_mask

__all__ = ["peak_mask", "decode"]


def decode(
    heat: torch.Tensor,
    wh: torch.Tensor,
    reg: torch.Tensor | None = None,
    k: int = 100,
    cat_spec_wh: bool = False,
) -> torch.Tensor:
    """Detections from CenterNet head outputs.

    Args:
        heat: ``[B,C,H,W]`` class probabilities (sigmoid already applied, no clamp).
        wh: ``[B,2,H,W]`` box sizes in output-map units (``[B,2C,H,W]`` with ``cat_spec_wh``).
        reg: ``[B,2,H,W]`` sub-pixel centre offsets, or None (centre + 0.5).
        k: number of detections per image.
        cat_spec_wh: class-specific sizes.

    Returns:
        ``[B,K,6]`` float: ``x1, y1, x2, y2, score, class`` in output-map units, sorted by score.
    """
    bsz, num_cls, height, width = heat.shape
    k1 = min(k, height * width)
    k2 = min(k, num_cls * k1)
    heat = peak_mask(heat)
    scores, inds = torch.topk(heat.reshape(bsz, num_cls, -1), k1)  # [B,C,k1]
    ys_int = torch.div(inds, width, rounding_mode="floor")
    ys_all = ys_int.to(heat.dtype)
    xs_all = (inds - ys_int * width).to(heat.dtype)  # = inds % width, without a modulo op
    top_score, top_ind = torch.topk(scores.reshape(bsz, -1), k2)  # [B,k2]
    clses = torch.div(top_ind, k1, rounding_mode="floor")
    inds = inds.reshape(bsz, -1).gather(1, top_ind)
    ys = ys_all.reshape(bsz, -1).gather(1, top_ind).unsqueeze(2)
    xs = xs_all.reshape(bsz, -1).gather(1, top_ind).unsqueeze(2)

    if reg is not None:
        off = _gather(reg, inds)
        xs = xs + off[:, :, 0:1]
        ys = ys + off[:, :, 1:2]
    else:
        xs = xs + 0.5
        ys = ys + 0.5
    size = _gather(wh, inds)
    if cat_spec_wh:
        size = size.reshape(bsz, k2, num_cls, 2)
        size = size.gather(2, clses.reshape(bsz, k2, 1, 1).expand(bsz, k2, 1, 2)).reshape(
            bsz, k2, 2
        )
    half_w, half_h = size[..., 0:1] / 2, size[..., 1:2] / 2
    boxes = torch.cat([xs - half_w, ys - half_h, xs + half_w, ys + half_h], dim=2)
    return torch.cat([boxes, top_score.unsqueeze(2), clses.unsqueeze(2).to(heat.dtype)], dim=2)


def _gather(feat: torch.Tensor, inds: torch.Tensor) -> torch.Tensor:
    """``[B,C,H,W]`` at flat indices ``[B,K]`` -> ``[B,K,C]``."""
    b, c = feat.shape[:2]
    flat = feat.reshape(b, c, -1)
    return flat.gather(2, inds.unsqueeze(1).expand(b, c, inds.shape[1])).permute(0, 2, 1)
