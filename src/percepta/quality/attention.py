"""Where the quality token looks: its attention weights over the image, and a PNG overlay.

The figure of both papers (IQT, Cheon et al. 2021, Fig. 8; TRIQ, You & Korhonen 2021, Fig. 4):
take the attention weights of the **quality token** (query row 0), **averaged over the heads**,
drop the token's weight on itself, renormalise the patch weights, reshape them to the feature
grid, resize that to the image and lay it over the image. Which attention:

* **IQT**: the **cross-attention** of the decoder's quality token over the encoder output (the
  difference-feature tokens; key 0, the encoder's own quality token, is dropped). The score is
  the mean over ``test_crops`` crops on a grid (:func:`percepta.quality.iqt.grid_offsets`); each
  crop's map is resized to the crop and the maps are averaged where crops overlap. Pixels no
  crop covers (possible on images much larger than the crop) get 0. An image smaller than the
  crop is upscaled first, as the model does, and its map resized back.
* **TRIQ**: the **self-attention** row of the quality token in the encoder; the grid is the
  token grid after the released pooling rule (read from the 1x1 projection's output and the
  token count, so the pooling rule is not re-implemented here).

``layers="last"`` (default) uses the last layer; ``layers="all"`` averages the maps of every
layer, as the IQT paper's figure does.

Capture without changing the numerics: a forward hook on the watched
:class:`torch.nn.MultiheadAttention` modules receives the exact query, key, value and masks of
each call and re-runs the module's own ``forward`` with ``need_weights=True`` (the PyTorch
layers call attention with ``need_weights=False``). The hook returns nothing, so the layer's
output is its own. One side effect, harmless for the score: PyTorch's fused inference path of
``TransformerEncoderLayer`` is skipped while a hook is attached (its documented rule), so the
watched layer runs the equivalent composite ops; scores agree with an unhooked run to float
rounding (tests: 1e-5).

The overlay (:func:`save_overlay`) min-max normalises the map and either alpha-blends a
matplotlib colormap over the image (``style="heatmap"``) or multiplies the image by the map, the
papers' "attention as a mask" (``style="mask"``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from percepta.errors import DataError, PerceptaError
from percepta.quality.iqt import IQT, _fit_to_crop, grid_offsets
from percepta.quality.layers import to_unit_list, unit_to_score
from percepta.quality.triq import TRIQ

__all__ = [
    "LAYER_CHOICES",
    "OVERLAY_STYLES",
    "QualityTokenAttention",
    "attention_modules",
    "attention_map",
    "score_and_attention",
    "save_overlay",
]

LAYER_CHOICES = ("last", "all")
OVERLAY_STYLES = ("heatmap", "mask")
_QKV = ("query", "key", "value")


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, AveragedModel
        model = model.module
    return model


def attention_modules(model: nn.Module) -> list[nn.MultiheadAttention]:
    """The attention modules whose quality-token row is the map: IQT's decoder cross-attention,
    TRIQ's encoder self-attention, one per layer (first to last)."""
    model = _unwrap(model)
    if isinstance(model, IQT):
        return [layer.multihead_attn for layer in model.decoder.layers]
    if isinstance(model, TRIQ):
        return [layer.self_attn for layer in model.encoder.layers]
    raise PerceptaError(
        f"attention maps are defined for the quality transformers (IQT, TRIQ); "
        f"got a {type(model).__name__}"
    )


class QualityTokenAttention:
    """Context manager recording, for every call of the watched attention modules, the weights
    of query 0 (the quality token) averaged over the heads: ``rows[layer]`` is a list with one
    ``[B, S]`` tensor per call (``S`` keys, key 0 = the quality token).

    Args:
        model: an IQT or TRIQ (or a wrapper with ``.module``).
        layers: ``"last"`` (only the last layer is watched) or ``"all"``.
    """

    def __init__(self, model: nn.Module, layers: str = "last") -> None:
        if layers not in LAYER_CHOICES:
            raise PerceptaError(f"layers must be one of {LAYER_CHOICES}, got {layers!r}")
        mods = attention_modules(model)
        self.modules = mods[-1:] if layers == "last" else mods
        self.rows: list[list[torch.Tensor]] = [[] for _ in self.modules]
        self._handles: list[Any] = []

    def _hook(self, index: int):
        def hook(module: nn.MultiheadAttention, args: tuple, kwargs: dict, output: Any) -> None:
            given = list(args[:3])
            qkv = given + [kwargs[name] for name in _QKV[len(given) :]]
            extra = {
                k: v
                for k, v in kwargs.items()
                if k not in _QKV and k not in ("need_weights", "average_attn_weights")
            }
            extra.update(_positional_rest(args))
            # module.forward (not module(...)): the hooks are not re-entered
            _, weights = module.forward(*qkv, need_weights=True, average_attn_weights=True, **extra)
            self.rows[index].append(weights[:, 0].detach())

        return hook

    def __enter__(self) -> QualityTokenAttention:
        for i, m in enumerate(self.modules):
            self._handles.append(m.register_forward_hook(self._hook(i), with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def last_rows(self) -> torch.Tensor:
        """``[B, S]``: the last call's rows, averaged over the watched layers."""
        if not all(self.rows):
            raise PerceptaError("no attention was recorded: run the model inside the context")
        return torch.stack([r[-1] for r in self.rows]).mean(0)


def _positional_rest(args: tuple) -> dict[str, Any]:
    """Positional arguments after query, key, value, as keywords (``MultiheadAttention.forward``'s
    order); PyTorch's layers pass them by keyword, this keeps other callers working."""
    names = ("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")
    return {n: v for n, v in zip(names, args[3:]) if n not in ("need_weights",)}


def _patch_grid(row: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[B, N+1]`` quality-token rows -> ``[B, h, w]`` patch weights renormalised to sum 1."""
    patches = row[:, 1:]
    if patches.shape[1] != grid[0] * grid[1]:
        raise PerceptaError(
            f"attention over {patches.shape[1]} patches does not fit the {grid[0]}x{grid[1]} grid"
        )
    patches = patches / patches.sum(1, keepdim=True).clamp_min(1e-12)
    return patches.reshape(-1, *grid)


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, h, w]`` -> ``[B, H, W]`` (bilinear, the grid spans the whole image/crop)."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _iqt(model: IQT, image: Any, reference: Any, layers: str) -> tuple[torch.Tensor, torch.Tensor]:
    if reference is None:
        raise DataError("IQT is full-reference: give the reference image with the image")
    (dist,) = to_unit_list([torch.as_tensor(image)], "image")
    (ref,) = to_unit_list([torch.as_tensor(reference)], "reference")
    if dist.shape != ref.shape:
        raise DataError(
            f"IQT: the image is {tuple(dist.shape)} but its reference is {tuple(ref.shape)}"
        )
    device = model.pixel_mean.device
    dist, ref = dist.to(device), ref.to(device)
    size = tuple(dist.shape[-2:])
    dist, ref = _fit_to_crop(dist, ref, model.crop_size)
    c = model.crop_size
    offsets = grid_offsets(dist.shape[1], dist.shape[2], c, model.test_crops)
    d = torch.stack([dist[:, t : t + c, x : x + c] for t, x in offsets])
    r = torch.stack([ref[:, t : t + c, x : x + c] for t, x in offsets])
    with QualityTokenAttention(model, layers) as cap:
        unit = model.score_crops(d, r)
    crops = _resize(_patch_grid(cap.last_rows(), model.grid), (c, c))
    total = torch.zeros(dist.shape[-2:], device=device)
    count = torch.zeros_like(total)
    for m, (t, x) in zip(crops, offsets):
        total[t : t + c, x : x + c] += m
        count[t : t + c, x : x + c] += 1
    amap = total / count.clamp_min(1)
    if tuple(amap.shape) != size:  # upscaled to the crop: back to the image's own size
        amap = _resize(amap[None], size)[0]
    return unit_to_score(unit.mean(), model.low, model.high), amap


def _triq(model: TRIQ, image: Any, layers: str) -> tuple[torch.Tensor, torch.Tensor]:
    (x,) = to_unit_list([torch.as_tensor(image)], "image")
    if min(x.shape[-2:]) < 32:
        raise DataError(f"TRIQ: the image is {tuple(x.shape[-2:])}; it needs >= 32 px a side")
    x = x.to(model.pixel_mean.device)[None]
    shapes: list[tuple[int, int]] = []
    handle = model.proj.register_forward_hook(
        lambda mod, args, out: shapes.append(tuple(out.shape[-2:]))
    )
    try:
        with QualityTokenAttention(model, layers) as cap:
            score = model.score_batch(x)[0]
    finally:
        handle.remove()
    row = cap.last_rows()
    n = row.shape[1] - 1
    h, w = shapes[-1]
    grid = (h, w) if h * w == n else (h // 2, w // 2)  # the released 2x2 pooling (or none)
    return score, _resize(_patch_grid(row, grid), tuple(x.shape[-2:]))[0]


def score_and_attention(
    model: nn.Module, image: Any, reference: Any = None, layers: str = "last"
) -> tuple[float, np.ndarray]:
    """The model's score of one image and the quality token's attention map ``[H, W]`` (float32,
    the image's size; the patch weights sum to 1 over the grid before resizing).

    ``image`` / ``reference``: ``[3,H,W]`` ``uint8`` 0-255 or float 0-1 tensors (or arrays);
    the model runs in eval mode (restored after) without gradients.
    """
    net = _unwrap(model)
    if layers not in LAYER_CHOICES:
        raise PerceptaError(f"layers must be one of {LAYER_CHOICES}, got {layers!r}")
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            if isinstance(net, IQT):
                score, amap = _iqt(net, image, reference, layers)
            elif isinstance(net, TRIQ):
                if reference is not None:
                    raise DataError("TRIQ is no-reference: it takes no reference image")
                score, amap = _triq(net, image, layers)
            else:
                attention_modules(net)  # raises the error naming the model
                raise AssertionError  # pragma: no cover
    finally:
        net.train(was)
    return float(score), amap.float().cpu().numpy()


def attention_map(
    model: nn.Module, image: Any, reference: Any = None, layers: str = "last"
) -> np.ndarray:
    """The quality token's attention over ``image`` as an ``[H, W]`` float32 map (see
    :func:`score_and_attention`)."""
    return score_and_attention(model, image, reference, layers)[1]


def _as_hwc_uint8(image: Any) -> np.ndarray:
    """``[3,H,W]`` tensor (uint8 0-255 / float 0-1) or ``[H,W,3]`` uint8 array -> ``[H,W,3]``."""
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 3:
        return image.astype(np.uint8)
    (x,) = to_unit_list([torch.as_tensor(image)], "image")
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def save_overlay(
    image: Any,
    attention: np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
    style: str = "heatmap",
    title: str | None = None,
) -> Path:
    """Write ``image`` with ``attention`` laid over it as a PNG (folders are created).

    Args:
        image: ``[3,H,W]`` tensor (uint8 0-255 or float 0-1) or ``[H,W,3]`` uint8 array.
        attention: ``[H, W]`` map of the same size (:func:`attention_map`); min-max normalised.
        alpha: weight of the colormap in ``style="heatmap"`` (0 = image only, 1 = map only).
        cmap: a matplotlib colormap name.
        style: ``"heatmap"`` (colormap blended over the image) or ``"mask"`` (image x map).
        title: text written in the top-left corner (e.g. the score), if given.

    Returns:
        The written path.
    """
    if style not in OVERLAY_STYLES:
        raise PerceptaError(f"style must be one of {OVERLAY_STYLES}, got {style!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise PerceptaError(f"alpha must be in [0, 1], got {alpha}")
    rgb = _as_hwc_uint8(image).astype(np.float32)
    amap = np.asarray(attention, dtype=np.float32)
    if amap.shape != rgb.shape[:2]:
        raise DataError(f"attention map {amap.shape} does not match the image {rgb.shape[:2]}")
    lo, hi = float(amap.min()), float(amap.max())
    norm = (amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap)
    if style == "mask":
        out = rgb * norm[..., None]
    else:
        import matplotlib

        try:
            colours = matplotlib.colormaps[cmap]
        except KeyError:
            raise PerceptaError(f"unknown matplotlib colormap {cmap!r}") from None
        heat = colours(norm)[..., :3].astype(np.float32) * 255.0
        out = (1.0 - alpha) * rgb + alpha * heat
    from PIL import Image, ImageDraw

    pic = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    if title:
        ImageDraw.Draw(pic).text((4, 4), title, fill=(255, 255, 255))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pic.save(path, format="PNG")
    return path
