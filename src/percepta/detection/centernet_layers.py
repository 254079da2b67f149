"""CenterNet / centerX neck and heads.

Neck (centerX ``CenternetDeconv``, from CenterNet-better): three up-sampling stages, each
``3x3 conv -> BN -> ReLU -> ConvTranspose2d(k4, s2, p1) -> BN -> ReLU``; the 3x3 conv is a
modulated deformable conv (``torchvision.ops.DeformConv2d`` with a zero-initialised offset/mask
conv, DCNv2) when ``deform=True``. Deformable convs do not export to ONNX, so keep them off for
export. The transposed conv is initialised as an exact per-channel bilinear up-sampler.
Deliberate difference: CenterNet's ``fill_up_weights`` writes the bilinear kernel only into
``weight[c, 0]`` of a full (non-grouped) transposed conv and leaves every other entry at its
random init; here each channel maps to itself (identity-bilinear), the other entries are 0.

Heads: ``3x3 conv(head_conv) -> ReLU -> 1x1 conv``; the class head's last bias is -2.19
(prior 0.1), the size/offset heads use CenterNet's ``fill_fc_weights`` (normal std 0.001, bias 0).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import DeformConv2d

__all__ = ["ModulatedDeformConv", "UpStage", "CenterNetNeck", "CenterNetHead", "bilinear_kernel"]


def bilinear_kernel(size: int) -> torch.Tensor:
    """The ``size x size`` bilinear up-sampling kernel (FCN / CenterNet ``fill_up_weights``)."""
    f = math.ceil(size / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    r = 1 - (torch.arange(size, dtype=torch.float64) / f - c).abs()
    return (r[:, None] * r[None, :]).float()


class ModulatedDeformConv(nn.Module):
    """DCNv2 3x3: an ordinary conv predicts 2*9 offsets and 9 masks (sigmoid) for
    :class:`torchvision.ops.DeformConv2d`; zero-initialised, so it starts as a plain conv
    with mask 0.5."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3) -> None:
        super().__init__()
        k2 = kernel_size * kernel_size
        self.offset_mask = nn.Conv2d(in_ch, 3 * k2, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        self.conv = DeformConv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1, o2, mask = self.offset_mask(x).chunk(3, dim=1)
        return self.conv(x, torch.cat([o1, o2], dim=1), torch.sigmoid(mask))


class UpStage(nn.Module):
    """One up-sampling stage: conv (or DCN) -> BN -> ReLU -> deconv x2 -> BN -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, deform: bool = False) -> None:
        super().__init__()
        if deform:
            self.conv: nn.Module = ModulatedDeformConv(in_ch, out_ch)
        else:
            self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.up = nn.ConvTranspose2d(out_ch, out_ch, 4, stride=2, padding=1, bias=False)
        with torch.no_grad():
            self.up.weight.zero_()
            kernel = bilinear_kernel(4)
            for ch in range(out_ch):
                self.up.weight[ch, ch] = kernel
        self.up_bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        return self.relu(self.up_bn(self.up(x)))


class CenterNetNeck(nn.Sequential):
    """Stack of :class:`UpStage` (x2 resolution each): stride 32 -> 4 with three stages."""

    def __init__(self, in_ch: int, channels: list[int], deform: bool = False) -> None:
        stages = []
        for ch in channels:
            stages.append(UpStage(in_ch, ch, deform))
            in_ch = ch
        super().__init__(*stages)
        self.out_channels = in_ch


class CenterNetHead(nn.Module):
    """``cls`` (C), ``wh`` (2 or 2C) and ``reg`` (2) branches on the stride-4 map."""

    def __init__(
        self,
        in_ch: int,
        num_classes: int,
        head_conv: int = 64,
        cat_spec_wh: bool = False,
        prior_bias: float = -2.19,
    ) -> None:
        super().__init__()
        self.cls = self._branch(in_ch, head_conv, num_classes)
        self.wh = self._branch(in_ch, head_conv, 2 * num_classes if cat_spec_wh else 2)
        self.reg = self._branch(in_ch, head_conv, 2)
        nn.init.constant_(self.cls[-1].bias, prior_bias)
        for branch in (self.wh, self.reg):
            for m in branch.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=0.001)
                    nn.init.zeros_(m.bias)

    @staticmethod
    def _branch(in_ch: int, mid: int, out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(in_ch, mid, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(mid, out, 1)
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns ``heat`` (sigmoid probabilities, float32 even under autocast), ``wh``, ``reg``
        and ``logits`` (the class map before the sigmoid, float32; the ranking losses use it)."""
        logits = self.cls(x).float()
        return {
            "heat": torch.sigmoid(logits),
            "wh": self.wh(x),
            "reg": self.reg(x),
            "logits": logits,
        }
