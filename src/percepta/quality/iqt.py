"""IQT, "Perceptual Image Quality Assessment with Transformers" (Cheon et al., CVPRW 2021),
the full-reference NTIRE 2021 winner. There is no official code; the anchor is the unofficial
``anse3832/IQT`` (see ``../shared/notes/iqa.md`` section 1 for every number below).

Architecture: reference and distorted crops go separately through a CNN (the paper's
Inception-ResNet-V2, taps ``mixed_5b, block35_2, block35_4, block35_6, block35_8, block35_10``,
timm names ``mixed_5b, repeat.1, repeat.3, repeat.5, repeat.7, repeat.9``; 6 x 320 = 1920
channels), ``f_diff = f_ref - f_dist``; two 1x1 convolutions project ``f_diff`` (encoder input)
and ``f_ref`` (decoder input) to ``D``; each stream gets its own learnable quality token and
position table (as the reference code); a **post-LN** transformer encoder-decoder
(``torch.nn.TransformerEncoder``/``Decoder`` with ``norm_first=False``, GELU FFN, LayerNorm eps
1e-12, dropout 0.1, embedding dropout 0.1); the decoder output at the quality token goes through
``Linear(D, D_head, bias=False) -> ReLU -> Linear(D_head, 1, bias=False)``.

Presets (registered models): ``iqt`` (LIVE/CSIQ/TID: crop 256, L=2, D=256, H=4, FFN 1024, head
512) and ``iqt_c`` (NTIRE/PIPAL: crop 192, L=1, D=128, head 128). A light CPU preset is the
``backbone`` option: ``resnet18`` (taps ``layer2.0, layer2.1``, stride 8) or timm's
``test_resnet`` (for tests); other timm models work with explicit ``taps``.

Deliberate deviations from the reference code, stated up front:

* **Standard multi-head attention**: per-head width ``D / H``. The reference code uses a
  per-head width of ``D`` (Q/K/V project ``D -> H*D``, the output ``H*D -> D``), which roughly
  doubles the transformer's parameters (9.97 M vs 5.23 M for IQT); we do not copy that quirk.
* **No causal mask** in the decoder self-attention (the reference inherits one from an NLP
  template; it makes the decoder quality token attend only to itself). The paper describes none.
* Quality tokens and position tables start from ``N(0, 0.02^2)`` (ViT's convention) instead of
  ``torch.randn``; the random-crop offset includes the last position (the reference's
  ``randint(0, h - crop)`` never picks it and fails when ``h == crop``).
* Training targets are mapped to 0-1 with ``score_range`` (``(s - low) / (high - low)``) and the
  loss is the MSE there; predictions are mapped back, so outputs are on the dataset's scale.

Backbone weights load from a **local** file only (``pretrained_path``, the timm model's own
keys, loaded non-strictly, then every tensor of the tapped modules must have been in the file); with them the backbone is frozen and kept in eval mode (``freeze_backbone``, as the
reference optimiser sees only the transformer), without them it trains from scratch.

Model contract (torchvision style; ``inference_inputs = ("reference",)``):

* ``model(images, targets)`` in training mode -> ``{"loss_score"}``; each target has ``score``
  (dataset scale, higher is better) and ``reference`` (the pristine image, same size). One random
  ``crop_size`` crop per pair, at the same place in both images.
* ``model(images, inputs)`` in eval mode (``inputs[i]["reference"]``) -> ``[{"score": []}, ...]``:
  the mean over ``test_crops`` crops laid on a deterministic uniform grid (pyiqa's layout:
  ``ceil(sqrt(M))^2`` positions, the first ``M`` kept); all crops of all images go through the
  network as one batch.
* ``images``: ``uint8`` 0-255 or float 0-1, ``[B,3,H,W]`` or a list of ``[3,H,W]`` of any sizes;
  an image smaller than the crop is first upscaled (bilinear) so its short side is the crop.
  Normalisation (the backbone's mean/std) happens inside; :meth:`IQT.score_crops` (what ONNX
  export traces) takes ``crop_size`` crops as float 0-1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from percepta.errors import DataError, PerceptaError
from percepta.quality.layers import (
    TapExtractor,
    check_coverage,
    check_score_range,
    create_timm,
    load_local,
    score_to_unit,
    to_unit_list,
    unit_to_score,
)
from percepta.registry import MODELS

__all__ = ["IQTConfig", "IQTCConfig", "IQT", "build_iqt", "grid_offsets", "PRESET_TAPS"]

# The taps per backbone when ``taps`` is left empty.
PRESET_TAPS: dict[str, tuple[str, ...]] = {
    "inception_resnet_v2": ("mixed_5b", "repeat.1", "repeat.3", "repeat.5", "repeat.7", "repeat.9"),
    "resnet18": ("layer2.0", "layer2.1"),
    "resnet50": ("layer2.1", "layer2.2", "layer2.3"),
    "test_resnet": ("layer1", "layer2"),
}


@dataclass
class IQTConfig:
    """Options of IQT (``model:`` section, ``name: iqt``; defaults = the paper's IQT)."""

    name: str = "iqt"
    backbone: str = "inception_resnet_v2"  # timm name; "resnet18" / "test_resnet" for CPU
    taps: list[str] = field(default_factory=list)  # [] = PRESET_TAPS[backbone]
    pretrained_path: str = ""  # local timm weights file; "" = random init (backbone trains)
    freeze_backbone: bool = True  # with pretrained_path: frozen, eval mode (the reference)
    crop_size: int = 256
    d_model: int = 256
    num_layers: int = 2  # encoder layers = decoder layers
    num_heads: int = 4
    ffn_dim: int = 1024
    head_dim: int = 512
    dropout: float = 0.1
    test_crops: int = 20  # M crops averaged at evaluation
    score_range: list[float] = field(default_factory=list)  # [] = the dataset's meta


@dataclass
class IQTCConfig(IQTConfig):
    """Options of IQT-C (``name: iqt_c``), the NTIRE 2021 / PIPAL variant."""

    name: str = "iqt_c"
    crop_size: int = 192
    d_model: int = 128
    num_layers: int = 1
    head_dim: int = 128


def grid_offsets(height: int, width: int, crop: int, count: int) -> list[tuple[int, int]]:
    """``count`` crop corners ``(top, left)`` on a uniform grid: ``n = ceil(sqrt(count))``
    evenly spaced offsets per axis from 0 to ``side - crop`` (rounded), row-major, first
    ``count`` kept."""
    n = math.ceil(math.sqrt(count))
    tops = torch.linspace(0, height - crop, n).round().long().tolist()
    lefts = torch.linspace(0, width - crop, n).round().long().tolist()
    return [(t, left) for t in tops for left in lefts][:count]


def _fit_to_crop(a: torch.Tensor, b: torch.Tensor, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Upscale both ``[3,H,W]`` images (bilinear) so the short side is at least ``crop``."""
    h, w = a.shape[-2:]
    if min(h, w) >= crop:
        return a, b
    s = crop / min(h, w)
    size = (max(crop, math.ceil(h * s)), max(crop, math.ceil(w * s)))
    up = F.interpolate(torch.stack([a, b]), size=size, mode="bilinear", align_corners=False)
    return up[0], up[1]


class IQT(nn.Module):
    """IQT full-reference scorer; see the module docstring for the contract.

    Args:
        backbone: module mapping normalised ``[B,3,S,S]`` to ``[B,C,h,w]`` features
            (:class:`~percepta.quality.layers.TapExtractor`).
        mean, std: the backbone's input normalisation (RGB, 0-1 units).
        score_range: ``(low, high)`` of the dataset scores.
        freeze_backbone: no gradients into the backbone, which stays in eval mode.
        Remaining arguments: as in :class:`IQTConfig`.
    """

    inference_inputs = ("reference",)

    def __init__(
        self,
        backbone: nn.Module,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        score_range: Sequence[float],
        crop_size: int = 256,
        d_model: int = 256,
        num_layers: int = 2,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        head_dim: int = 512,
        dropout: float = 0.1,
        test_crops: int = 20,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        self.low, self.high = check_score_range(score_range, "iqt")
        if d_model % num_heads:
            raise PerceptaError(f"model.d_model={d_model} must be divisible by num_heads")
        if test_crops < 1 or crop_size < 1:
            raise PerceptaError("model.test_crops and model.crop_size must be >= 1")
        self.backbone = backbone
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.crop_size, self.test_crops = int(crop_size), int(test_crops)
        self.freeze_backbone = bool(freeze_backbone)
        if self.freeze_backbone:
            self.backbone.requires_grad_(False)
        channels, self.grid = self._probe_backbone()
        tokens = self.grid[0] * self.grid[1] + 1
        self.proj_enc = nn.Conv2d(channels, d_model, 1)
        self.proj_dec = nn.Conv2d(channels, d_model, 1)
        self.token_enc = nn.Parameter(torch.empty(1, 1, d_model))
        self.token_dec = nn.Parameter(torch.empty(1, 1, d_model))
        self.pos_enc = nn.Parameter(torch.empty(1, tokens, d_model))
        self.pos_dec = nn.Parameter(torch.empty(1, tokens, d_model))
        for p in (self.token_enc, self.token_dec, self.pos_enc, self.pos_dec):
            nn.init.trunc_normal_(p, std=0.02)
        self.embed_drop = nn.Dropout(dropout)
        common = dict(
            d_model=d_model,
            nhead=num_heads,
            dim_feedforward=ffn_dim,
            dropout=dropout,
            activation="gelu",
            layer_norm_eps=1e-12,
            batch_first=True,
            norm_first=False,  # post-LN, as the original Transformer and the reference code
        )
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**common), num_layers, enable_nested_tensor=False
        )
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**common), num_layers)
        self.head = nn.Sequential(
            nn.Linear(d_model, head_dim, bias=False), nn.ReLU(), nn.Linear(head_dim, 1, bias=False)
        )

    def _probe_backbone(self) -> tuple[int, tuple[int, int]]:
        """Channels and feature grid of a ``crop_size`` crop (one eval-mode forward)."""
        was = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            f = self.backbone(torch.zeros(1, 3, self.crop_size, self.crop_size))
        self.backbone.train(was)
        return int(f.shape[1]), (int(f.shape[2]), int(f.shape[3]))

    def train(self, mode: bool = True) -> IQT:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # frozen BatchNorm keeps its statistics
        return self

    # ------------------------------------------------------------------- pieces export reuses
    def score_crops(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Unit-interval scores ``[N]`` of ``[N,3,S,S]`` float 0-1 crop pairs (S = crop_size);
        0 maps to ``score_range[0]`` and 1 to ``score_range[1]``."""
        x = (torch.cat([ref, dist]) - self.pixel_mean) / self.pixel_std
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            f_ref, f_dist = self.backbone(x).chunk(2)
        enc_in = self._tokens(self.proj_enc(f_ref - f_dist), self.token_enc, self.pos_enc)
        dec_in = self._tokens(self.proj_dec(f_ref), self.token_dec, self.pos_dec)
        memory = self.encoder(enc_in)
        out = self.decoder(dec_in, memory)
        return self.head(out[:, 0]).squeeze(1)

    def _tokens(self, feat: torch.Tensor, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = feat.flatten(2).transpose(1, 2)  # [N, h*w, D], row-major
        if x.shape[1] + 1 != pos.shape[1]:
            raise DataError(
                f"IQT: crops give {x.shape[1]} feature tokens but the position table has "
                f"{pos.shape[1] - 1}: crops must be model.crop_size={self.crop_size}"
            )
        x = torch.cat([token.expand(x.shape[0], -1, -1), x], dim=1) + pos
        return self.embed_drop(x)

    # ------------------------------------------------------------------------------ forward
    def _pairs(
        self, images: Any, targets: Sequence[Mapping[str, Any]] | None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        dist = to_unit_list(images)
        if targets is None or len(targets) != len(dist):
            raise DataError(
                "IQT is full-reference: call model(images, targets) with one dict per image "
                "holding 'reference'"
            )
        missing = [i for i, t in enumerate(targets) if "reference" not in t]
        if missing:
            raise DataError(f"IQT: image {missing[0]} has no 'reference' (full-reference model)")
        refs = to_unit_list([torch.as_tensor(t["reference"]) for t in targets], "references")
        pairs = []
        for i, (d, r) in enumerate(zip(dist, refs)):
            if d.shape != r.shape:
                raise DataError(
                    f"IQT: image {i} is {tuple(d.shape)} but its reference is {tuple(r.shape)}"
                )
            pairs.append(_fit_to_crop(d, r.to(d.device), self.crop_size))
        return pairs

    def forward(
        self, images: Any, targets: Sequence[Mapping[str, Any]] | None = None
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        pairs = self._pairs(images, targets)
        c = self.crop_size
        if self.training:
            crops = []
            for d, r in pairs:
                top = int(torch.randint(0, d.shape[1] - c + 1, ()))
                left = int(torch.randint(0, d.shape[2] - c + 1, ()))
                crops.append(
                    (d[:, top : top + c, left : left + c], r[:, top : top + c, left : left + c])
                )
            dist, ref = (torch.stack(x) for x in zip(*crops))
            pred = self.score_crops(dist, ref)
            y = torch.stack([torch.as_tensor(t["score"], dtype=torch.float32) for t in targets])
            y = score_to_unit(y.to(pred.device), self.low, self.high)
            return {"loss_score": F.mse_loss(pred, y)}
        dist, ref = [], []
        for d, r in pairs:
            for top, left in grid_offsets(d.shape[1], d.shape[2], c, self.test_crops):
                dist.append(d[:, top : top + c, left : left + c])
                ref.append(r[:, top : top + c, left : left + c])
        unit = self.score_crops(torch.stack(dist), torch.stack(ref))
        scores = unit_to_score(unit.view(len(pairs), self.test_crops).mean(1), self.low, self.high)
        return [{"score": s} for s in scores]


@MODELS.register("iqt", options=IQTConfig, task="quality")
@MODELS.register("iqt_c", options=IQTCConfig, task="quality")
def build_iqt(cfg: IQTConfig) -> IQT:
    """IQT full-reference transformer (Cheon et al. 2021; iqt_c: the NTIRE 2021 variant)."""
    taps = list(cfg.taps) or list(PRESET_TAPS.get(cfg.backbone, ()))
    if not taps:
        raise PerceptaError(
            f"model.taps: no preset taps for backbone {cfg.backbone!r} (presets: "
            f"{', '.join(PRESET_TAPS)}); name the modules, e.g. model.taps=[layer2.0,layer2.1]"
        )
    net = create_timm(cfg.backbone)
    if cfg.pretrained_path:
        load_local(net, cfg.pretrained_path, cfg.backbone)
    backbone = TapExtractor(net, taps, cfg.backbone)
    if cfg.pretrained_path:
        check_coverage(backbone.body, cfg.pretrained_path, cfg.backbone)
    return IQT(
        backbone,
        mean=net.pretrained_cfg.get("mean", (0.485, 0.456, 0.406)),
        std=net.pretrained_cfg.get("std", (0.229, 0.224, 0.225)),
        score_range=cfg.score_range,
        crop_size=cfg.crop_size,
        d_model=cfg.d_model,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        ffn_dim=cfg.ffn_dim,
        head_dim=cfg.head_dim,
        dropout=cfg.dropout,
        test_crops=cfg.test_crops,
        freeze_backbone=bool(cfg.pretrained_path) and cfg.freeze_backbone,
    )
