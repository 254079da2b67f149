"""Pieces the image-quality models share: image conversion, timm feature extractors built from
local weights only, and the score <-> unit-interval mapping.

* :func:`to_unit_batch` takes torchvision's image convention (``uint8`` 0-255 or float 0-1, a
  ``[B,3,H,W]`` tensor or a list of ``[3,H,W]``) and returns float32 images in 0-1.
* :func:`create_timm` builds a timm network with random weights, or with the weights of a
  **local** file (timm's own loader, ``pretrained_cfg_overlay=dict(file=path)``; percepta never
  downloads). timm loads non-strictly, so a file that lacks tensors the model runs would silently
  leave them random: :func:`check_coverage` refuses that.
* :class:`TapExtractor`: the outputs of named modules (``"repeat.1"``, ``"layer2.0"``) of a timm
  network, through timm's FX feature extraction (the mechanism behind ``features_only`` with
  ``feature_cls="fx"``). ``features_only`` alone exposes only a network's ``feature_info``
  stages, and Inception-ResNet-V2's stages do not include the block35_2/4/6/8 taps IQT needs.
  Modules after the last tap are not run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import timm
import torch
from torch import nn
from torch.nn import functional as F

from percepta.errors import DataError, PerceptaError

__all__ = [
    "FLOAT_IMAGE_MAX",
    "to_unit_batch",
    "to_unit_list",
    "create_timm",
    "check_coverage",
    "load_local",
    "TapExtractor",
    "score_to_unit",
    "unit_to_score",
    "check_score_range",
]

# A float image is 0-1; resampling may overshoot a little, anything above is 0-255 data.
FLOAT_IMAGE_MAX = 1.5


def _to_unit(image: torch.Tensor, what: str) -> torch.Tensor:
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    if not image.is_floating_point():
        raise DataError(f"{what}: dtype {image.dtype} is not supported; pass uint8 or float 0-1")
    return image.float()


def to_unit_list(
    images: torch.Tensor | Sequence[torch.Tensor], what: str = "images"
) -> list[torch.Tensor]:
    """Images (``[B,3,H,W]`` or a list of ``[3,H,W]``/``[1,3,H,W]``) -> list of float ``[3,H,W]``
    in 0-1. A float image above :data:`FLOAT_IMAGE_MAX` raises ``DataError`` (0-255 as float)."""
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = [images]
        elif images.dim() == 4:
            images = list(images.unbind(0))
        else:
            raise DataError(f"{what}: expected [B,3,H,W] or [3,H,W], got {tuple(images.shape)}")
    out = []
    for i, im in enumerate(images):
        im = torch.as_tensor(im)
        if im.dim() == 4 and im.shape[0] == 1:
            im = im[0]
        if im.dim() != 3 or im.shape[0] != 3:
            raise DataError(f"{what}[{i}]: expected an RGB [3,H,W] image, got {tuple(im.shape)}")
        out.append(_to_unit(im, f"{what}[{i}]"))
    floats = [im.amax() for im, src in zip(out, images) if torch.as_tensor(src).is_floating_point()]
    if floats:
        top = float(torch.stack(floats).max())
        if top > FLOAT_IMAGE_MAX:
            raise DataError(
                f"{what}: a float image has values up to {top:.4g}, but float images are 0-1 "
                "(torchvision's convention); pass 0-255 pixels as uint8, or divide them by 255"
            )
    return out


def to_unit_batch(images: torch.Tensor | Sequence[torch.Tensor], what: str = "images"):
    """Like :func:`to_unit_list` but stacked to ``[B,3,H,W]`` (all images the same size)."""
    items = to_unit_list(images, what)
    sizes = {tuple(im.shape) for im in items}
    if len(sizes) != 1:
        raise DataError(f"{what}: images of different sizes {sorted(sizes)} cannot be stacked")
    return torch.stack(items)


def create_timm(name: str, pretrained_path: str = "", **kwargs) -> nn.Module:
    """``timm.create_model(name, **kwargs)``, with weights from the local ``pretrained_path``
    (timm's checkpoint formats; the file holds the model's own keys) or random ones ("")."""
    if not timm.is_model(name):
        from percepta.registry import suggest

        raise PerceptaError(
            f"model.backbone: unknown timm model {name!r}.{suggest(name, timm.list_models())}"
        )
    if pretrained_path:
        if not os.path.isfile(pretrained_path):
            raise PerceptaError(f"model.pretrained_path: weights file not found: {pretrained_path}")
        kwargs["pretrained_cfg_overlay"] = {"file": os.fspath(pretrained_path)}
    try:
        return timm.create_model(name, pretrained=bool(pretrained_path), **kwargs)
    except (RuntimeError, OSError, KeyError, ValueError) as e:
        where = f" from {pretrained_path}" if pretrained_path else ""
        first = (str(e).strip().splitlines() or [""])[0]
        raise PerceptaError(f"model.backbone {name!r}: cannot build{where}: {first}") from e


def load_local(net: nn.Module, path: str, name: str) -> None:
    """Load the local weights file ``path`` into ``net`` non-strictly (a file without the
    classifier, or with extra keys, is fine); check what the model runs with
    :func:`check_coverage` afterwards. Unreadable files and shape mismatches are one-line
    errors naming the file."""
    if not os.path.isfile(path):
        raise PerceptaError(f"model.pretrained_path: weights file not found: {path}")
    try:
        state = timm.models.load_state_dict(path)
        net.load_state_dict(state, strict=False)
    except Exception as e:  # corrupt file, pickle with code, wrong shapes
        first = (str(e).strip().splitlines() or [""])[0]
        raise PerceptaError(
            f"model.pretrained_path {path}: cannot load into timm model {name!r}: {first}"
        ) from e


def check_coverage(body: nn.Module, path: str, name: str) -> None:
    """Refuse a weights file that lacks tensors of ``body`` (names compared with '.' and '_'
    identified, since timm's feature wrappers flatten nested module names)."""
    try:
        file_keys = {k.replace("_", ".") for k in timm.models.load_state_dict(path)}
    except Exception as e:  # corrupt file, pickle with code, ...
        raise PerceptaError(f"model.pretrained_path {path}: cannot read weights: {e}") from e
    wanted = [k for k in body.state_dict() if not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k.replace("_", ".") not in file_keys]
    if missing:
        raise PerceptaError(
            f"model.pretrained_path {path}: not a state_dict of timm model {name!r}: "
            f"{len(missing)} of {len(wanted)} backbone tensors missing (e.g. {missing[:3]})"
        )


class TapExtractor(nn.Module):
    """Named intermediate outputs of a timm network, concatenated along channels.

    Taps of different resolutions are average-pooled (``adaptive_avg_pool2d``) to the coarsest
    one before concatenation (IQT's Inception taps all have the same size, so nothing is pooled
    there). ``forward(x [B,3,H,W] normalised) -> [B, sum(C_tap), h, w]``.
    """

    def __init__(self, net: nn.Module, taps: Sequence[str], name: str = "") -> None:
        super().__init__()
        if not taps:
            raise PerceptaError(f"model.taps: give at least one module name of {name!r}")
        modules = dict(net.named_modules())
        unknown = [t for t in taps if t not in modules]
        if unknown:
            from percepta.registry import suggest

            raise PerceptaError(
                f"model.taps: {unknown[0]!r} is not a module of timm model {name!r}."
                f"{suggest(unknown[0], list(modules))}"
            )
        from timm.models import create_feature_extractor

        self.taps = list(taps)
        self.body = create_feature_extractor(
            net, return_nodes={t: str(i) for i, t in enumerate(taps)}
        )
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = list(self.body(x).values())
        h = min(f.shape[-2] for f in feats)
        w = min(f.shape[-1] for f in feats)
        feats = [f if f.shape[-2:] == (h, w) else F.adaptive_avg_pool2d(f, (h, w)) for f in feats]
        return torch.cat(feats, dim=1)


def check_score_range(score_range: Sequence[float], model: str) -> tuple[float, float]:
    """``[low, high]`` with ``low < high``; otherwise a one-line error naming the option."""
    if len(score_range) != 2 or not float(score_range[0]) < float(score_range[1]):
        raise PerceptaError(
            f"model.score_range must be [low, high] with low < high (got {list(score_range)}) "
            f"for {model}; it is filled from the dataset's meta['score_range'] when the model is "
            "built with a dataset, otherwise set it, e.g. model.score_range=[1.0,5.0]"
        )
    return float(score_range[0]), float(score_range[1])


def score_to_unit(score: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Dataset score -> 0-1 (``(s - low) / (high - low)``)."""
    return (score - low) / (high - low)


def unit_to_score(unit: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """0-1 -> dataset score (inverse of :func:`score_to_unit`)."""
    return low + (high - low) * unit
