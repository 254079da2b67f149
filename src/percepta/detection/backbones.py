"""Feature backbones for dense detectors: the last stage of a timm or torchvision network.

* ``"resnet18"`` (any timm model name): ``timm.create_model(name, features_only=True,
  out_indices=(out_index,))`` (the last stage by default; an earlier one, e.g. ResNet ``layer3``,
  skips the later stages' compute). Random initialisation by default; ``pretrained=True`` loads a **local**
  file through timm's own loader (``pretrained_cfg_overlay=dict(file=path)``), which handles
  timm checkpoints (``.pth``/``.bin``/``.safetensors``) and drops the classifier. The file must
  hold the timm model's own keys (as ``timm.create_model(name).state_dict()`` names them); a
  backbone tensor missing from it is an error (timm alone would silently keep the random
  init). Without a path timm would download, which percepta never does, so that is an error.
* ``"torchvision:resnet18"``: a torchvision ResNet truncated after ``layer4``
  (``torchvision.models.feature_extraction.create_feature_extractor``); ``pretrained=True``
  loads a local torchvision ``state_dict`` file with ``load_state_dict`` (classifier keys
  ignored, every other key must match).

The returned module maps ``[B,3,H,W]`` normalised images to the ``[B,C,H/s,W/s]`` last feature
map and exposes ``out_channels`` and ``stride``.
"""

from __future__ import annotations

import os

import timm
import torch
import torchvision
from torch import nn

from percepta.errors import PerceptaError
from percepta.registry import suggest

__all__ = ["Backbone", "build_backbone", "load_torchvision_weights"]

_TV_PREFIX = "torchvision:"
_TV_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


class Backbone(nn.Module):
    """Wraps a feature extractor so that ``forward`` returns only the last feature map."""

    def __init__(self, body: nn.Module, out_channels: int, stride: int, name: str) -> None:
        super().__init__()
        self.body = body
        self.out_channels = int(out_channels)
        self.stride = int(stride)
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if isinstance(out, dict):
            return next(iter(out.values()))
        if isinstance(out, (list, tuple)):
            return out[-1]
        return out


def _check_path(pretrained: bool, path: str, name: str) -> None:
    if not pretrained:
        return
    if not path:
        raise PerceptaError(
            f"model.pretrained=true for backbone {name!r} needs model.pretrained_path: a local "
            "weights file (percepta never downloads weights). Pass pretrained_path=/path/to/file "
            "or set pretrained=false for a random initialisation."
        )
    if not os.path.isfile(path):
        raise PerceptaError(f"model.pretrained_path: weights file not found: {path}")


def _timm_backbone(
    name: str, pretrained: bool, path: str, output_stride: int, out_index: int = -1
) -> Backbone:
    if not timm.is_model(name):
        names = timm.list_models()
        raise PerceptaError(f"model.backbone: unknown timm model {name!r}.{suggest(name, names)}")
    kwargs: dict = {"features_only": True, "out_indices": (out_index,)}
    if output_stride != 32:
        kwargs["output_stride"] = output_stride
    if pretrained:
        kwargs["pretrained_cfg_overlay"] = {"file": os.fspath(path)}
    try:
        body = timm.create_model(name, pretrained=pretrained, **kwargs)
    except IndexError:
        raise PerceptaError(
            f"model.backbone_out_index={out_index}: {name!r} has no such feature stage"
        ) from None
    except (RuntimeError, OSError, KeyError, ValueError) as e:
        where = f" from {path}" if pretrained else ""
        raise PerceptaError(f"model.backbone {name!r}: cannot build{where}: {e}") from e
    if pretrained:
        _check_coverage(body, path, name)
    info = body.feature_info
    return Backbone(body, info.channels()[-1], info.reduction()[-1], name)


def _check_coverage(body: nn.Module, path: str, name: str) -> None:
    """timm loads feature backbones non-strictly (the classifier is dropped), so a file that
    lacks the backbone's tensors would silently leave them random: refuse that here.

    Key names are compared with '.' and '_' identified, since timm's feature wrappers flatten
    nested module names (``stages.0`` -> ``stages_0``)."""
    file_keys = {k.replace("_", ".") for k in timm.models.load_state_dict(path)}
    wanted = [k for k in body.state_dict() if not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k.replace("_", ".") not in file_keys]
    if missing:
        raise PerceptaError(
            f"model.pretrained_path {path}: not a state_dict of timm model {name!r}: "
            f"{len(missing)} of {len(wanted)} backbone tensors missing (e.g. {missing[:3]})"
        )


def load_torchvision_weights(net: nn.Module, path: str, arch: str) -> None:
    """Load a local torchvision ``state_dict`` file into ``net`` (``torch.load`` with
    ``weights_only=True``); the classifier (``fc.*``) is ignored, every other key must fit, or
    one PerceptaError names the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with code, ...
        raise PerceptaError(f"model.pretrained_path {path}: cannot read weights: {e}") from e
    if not isinstance(state, dict):
        raise PerceptaError(
            f"model.pretrained_path {path}: expected a state_dict, got {type(state).__name__}"
        )
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise PerceptaError(
            f"model.pretrained_path {path}: not a torchvision {arch} state_dict "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def _torchvision_backbone(name: str, pretrained: bool, path: str, output_stride: int) -> Backbone:
    arch = name[len(_TV_PREFIX) :]
    if output_stride != 32:
        raise PerceptaError(
            f"model.output_stride={output_stride}: torchvision backbones support "
            "only 32; use the timm backbone of the same name for dilation"
        )
    if arch not in _TV_RESNETS:
        raise PerceptaError(
            f"model.backbone: unsupported torchvision backbone {arch!r}."
            f"{suggest(arch, _TV_RESNETS)} Supported: {', '.join(_TV_RESNETS)}"
        )
    net = getattr(torchvision.models, arch)(weights=None)
    if pretrained:
        load_torchvision_weights(net, path, arch)
    from torchvision.models.feature_extraction import create_feature_extractor

    body = create_feature_extractor(net, return_nodes={"layer4": "out"})
    channels = net.fc.in_features
    return Backbone(body, channels, 32, name)


def build_backbone(
    name: str,
    pretrained: bool = False,
    pretrained_path: str = "",
    output_stride: int = 32,
    out_index: int = -1,
) -> Backbone:
    """Build a last-stage feature backbone by name (see module docstring).

    Args:
        name: a timm model name (``"resnet18"``, ``"resnet50"``, ...) or
            ``"torchvision:resnet18|34|50|101|152"``.
        pretrained: load weights from ``pretrained_path``.
        pretrained_path: local weights file (required with ``pretrained``).
        output_stride: 32 (plain), or 16/8 for timm models: the last stage(s) keep the
            resolution and dilate instead (timm's ``output_stride``), so small inputs still
            have a usable last feature map (4x4 -> 8x8 at 128 px with 16).
        out_index: the timm feature stage whose map is returned (timm's ``out_indices``):
            -1 = the last; for a ResNet 3 = ``layer3`` (stride 16), and the stages after it are
            not built, so they cost nothing (timm backbones only).
    """
    if output_stride not in (8, 16, 32):
        raise PerceptaError(f"model.output_stride must be 8, 16 or 32, got {output_stride}")
    _check_path(pretrained, pretrained_path, name)
    if name.startswith(_TV_PREFIX):
        if out_index != -1:
            raise PerceptaError(
                f"model.backbone_out_index={out_index}: torchvision backbones end at layer4 "
                "(-1); use the timm backbone of the same name for another stage"
            )
        return _torchvision_backbone(name, pretrained, pretrained_path, output_stride)
    return _timm_backbone(name, pretrained, pretrained_path, output_stride, out_index)
