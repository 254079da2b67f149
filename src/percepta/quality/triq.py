"""TRIQ, "Transformer for Image Quality Assessment" (You & Korhonen, ICIP 2021): no-reference,
any resolution. Anchor: the official Keras code ``junyongyou/triq`` @ 4b206b5 (MIT); numbers in
``../shared/notes/iqa.md`` section 2.

Architecture: ResNet-50 C5 (timm ``features_only=True``, last stage; ``resnet18`` or
``test_resnet`` as light presets) -> 1x1 conv to ``D`` -> the released **adaptive pooling
rule**: a 2x2 max-pool (stride 2, floor) when the feature height is ``>= pool_from`` (16), none
otherwise -> row-major tokens -> a learnable quality token in front -> a learnable position table
-> dropout 0.1 -> a **post-LN** transformer encoder (``norm_first=False``; L=2, D=32, 8 heads,
FFN 64 with ReLU, LayerNorm eps 1e-6) -> ``Dense(64, GELU) -> Dropout -> Dense(5)`` on the
quality token: logits of 5 quality levels (1 = bad ... 5 = excellent).

Position table, sized for the largest input (``max_grid = [h, w]`` tokens after pooling;
``[12, 16]`` gives the released 193 rows, KonIQ 1024x768 or 512x384):

* ``position_mode="truncate"`` (the released code): the first ``N + 1`` rows of the flat table;
  an image with more tokens raises a ``DataError`` naming its size and the options to change
  (the released code crashes, its issue #2);
* ``position_mode="interpolate"``: the table is a ``max_grid`` grid, bilinearly resized to each
  image's token grid, so any size works (row 0, the quality token's, is kept as is).

Scores and targets: a dataset score ``s`` in ``score_range = [low, high]`` is mapped to the
level scale ``m = 1 + 4 (s - low) / (high - low)`` (clamped to [1, 5]), and its soft 5-bin
target is the triangular ("two-hot") encoding ``t_k = max(0, 1 - |m - k|)``, k = 1..5: the mass
is split between the two nearest levels so that ``sum_k k t_k = m`` exactly (``m = 3.3`` ->
``[0, 0, 0.7, 0.3, 0]``). The paper uses per-image vote histograms (KonIQ) or a Gaussian of MOS
and SD (LIVE-C); a plain score has neither, and the two-hot target is the one whose expectation
is the score. Loss: cross-entropy ``-sum_k t_k log softmax(z)_k`` (mean over images). Score =
expectation ``E = sum_k k p_k`` mapped back, ``low + (high - low) (E - 1) / 4``.

Mixed resolutions in one batch: images of the same size go through the CNN together (padding
pixels would change the features near the bottom/right edges, since biases and BatchNorm shifts
make the padded region non-zero after the first layer); the token sequences of all images are
then padded to one ``[B, N_max + 1, D]`` batch with a ``src_key_padding_mask``, and the
transformer runs once. Padded tokens never reach a real token's attention.

Model contract (torchvision style):

* ``model(images, targets)`` in training mode -> ``{"loss_distribution"}`` (targets have
  ``score``);
* ``model(images)`` in eval mode -> ``[{"score": []}, ...]`` on the dataset's scale;
* ``images``: ``uint8`` 0-255 or float 0-1, ``[B,3,H,W]`` or a list of ``[3,H,W]`` of any
  sizes (at least 32 px a side); normalisation (the backbone's mean/std) happens inside, and
  :meth:`TRIQ.score_batch` (what ONNX export traces) takes a same-size float 0-1 batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from percepta.errors import DataError, PerceptaError
from percepta.quality.layers import (
    check_coverage,
    check_score_range,
    create_timm,
    score_to_unit,
    to_unit_list,
    unit_to_score,
)
from percepta.registry import MODELS

__all__ = ["TRIQConfig", "TRIQ", "build_triq", "soft_levels", "POSITION_MODES", "NUM_LEVELS"]

POSITION_MODES = ("truncate", "interpolate")
NUM_LEVELS = 5


@dataclass
class TRIQConfig:
    """Options of TRIQ (``model:`` section, ``name: triq``; defaults = the released model)."""

    name: str = "triq"
    backbone: str = "resnet50"  # timm name (last stage is used); "resnet18" / "test_resnet"
    pretrained_path: str = ""  # local timm weights file; "" = random init. Fine-tuned either way
    d_model: int = 32
    num_layers: int = 2
    num_heads: int = 8
    ffn_dim: int = 64
    head_dim: int = 64
    dropout: float = 0.1
    pool_from: int = 16  # 2x2 max-pool when the C5 height is >= this; 0 = never pool
    max_grid: list[int] = field(default_factory=lambda: [12, 16])  # tokens (h, w) after pooling
    position_mode: str = "truncate"  # "truncate" (released) or "interpolate"
    score_range: list[float] = field(default_factory=list)  # [] = the dataset's meta


def soft_levels(unit: torch.Tensor) -> torch.Tensor:
    """Two-hot 5-level targets ``[..., 5]`` of scores in 0-1 (see the module docstring)."""
    m = 1.0 + (NUM_LEVELS - 1) * unit.clamp(0.0, 1.0)
    levels = torch.arange(1, NUM_LEVELS + 1, dtype=m.dtype, device=m.device)
    return (1.0 - (m.unsqueeze(-1) - levels).abs()).clamp(min=0.0)


class TRIQ(nn.Module):
    """TRIQ no-reference scorer; see the module docstring for the contract.

    Args:
        backbone: module mapping normalised ``[B,3,H,W]`` to its last feature map ``[B,C,h,w]``.
        channels: ``C``.
        mean, std: the backbone's input normalisation (RGB, 0-1 units).
        score_range: ``(low, high)`` of the dataset scores.
        Remaining arguments: as in :class:`TRIQConfig`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        channels: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        score_range: Sequence[float],
        d_model: int = 32,
        num_layers: int = 2,
        num_heads: int = 8,
        ffn_dim: int = 64,
        head_dim: int = 64,
        dropout: float = 0.1,
        pool_from: int = 16,
        max_grid: Sequence[int] = (12, 16),
        position_mode: str = "truncate",
    ) -> None:
        super().__init__()
        self.low, self.high = check_score_range(score_range, "triq")
        if position_mode not in POSITION_MODES:
            raise PerceptaError(
                f"model.position_mode must be one of {POSITION_MODES}, got {position_mode!r}"
            )
        if len(max_grid) != 2 or min(max_grid) < 1:
            raise PerceptaError(f"model.max_grid must be [h, w] >= 1, got {list(max_grid)}")
        self.backbone = backbone
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.pool_from, self.position_mode = int(pool_from), position_mode
        self.max_grid = (int(max_grid[0]), int(max_grid[1]))
        self.proj = nn.Conv2d(channels, d_model, 1)
        self.token = nn.Parameter(torch.empty(1, 1, d_model))
        self.pos = nn.Parameter(torch.empty(1, self.max_grid[0] * self.max_grid[1] + 1, d_model))
        nn.init.trunc_normal_(self.token, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.embed_drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            ffn_dim,
            dropout,
            activation="relu",
            layer_norm_eps=1e-6,
            batch_first=True,
            norm_first=False,  # post-LN, as the released code
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(
            nn.Linear(d_model, head_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(head_dim, 5)
        )

    # ----------------------------------------------------------------------------- pieces
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Same-size float 0-1 batch ``[B,3,H,W]`` -> projected, pooled ``[B,D,h,w]``."""
        f = self.proj(self.backbone((x - self.pixel_mean) / self.pixel_std))
        if self.pool_from and f.shape[-2] >= self.pool_from:
            f = F.max_pool2d(f, 2, 2)
        return f

    def position(self, h: int, w: int, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Position rows ``[h*w + 1, D]`` for an ``h x w`` token grid (``size`` names the image
        in the error)."""
        if self.position_mode == "interpolate":
            gh, gw = self.max_grid
            grid = self.pos[0, 1:].reshape(gh, gw, -1).permute(2, 0, 1).unsqueeze(0)
            if (h, w) != (gh, gw):
                grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
            return torch.cat([self.pos[0, :1], grid[0].flatten(1).t()])
        n = h * w + 1
        if n > self.pos.shape[1]:
            what = f"an image of {size[0]}x{size[1]} px" if size else "an image"
            raise DataError(
                f"TRIQ: {what} gives {h}x{w} = {h * w} tokens, more than the position table's "
                f"{self.pos.shape[1] - 1} (model.max_grid={list(self.max_grid)}): raise "
                "model.max_grid to the largest input's grid, or set model.position_mode=interpolate"
            )
        return self.pos[0, :n]

    def logits(self, sequences: Sequence[torch.Tensor]) -> torch.Tensor:
        """Level logits ``[B,5]`` of token sequences ``[N_i + 1, D]`` (position included):
        padded into one batch with a key padding mask."""
        batch = nn.utils.rnn.pad_sequence(list(sequences), batch_first=True)
        lengths = torch.tensor([len(s) for s in sequences], device=batch.device)
        pad = torch.arange(batch.shape[1], device=batch.device)[None] >= lengths[:, None]
        out = self.encoder(self.embed_drop(batch), src_key_padding_mask=pad)
        return self.head(out[:, 0])

    def score_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``[B]`` (dataset scale) of a same-size float 0-1 batch (no padding)."""
        f = self.features(x)
        tokens = f.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.token.expand(len(x), -1, -1), tokens], 1)
        tokens = tokens + self.position(f.shape[-2], f.shape[-1], tuple(x.shape[-2:]))
        out = self.encoder(self.embed_drop(tokens))
        return self._score(self.head(out[:, 0]))

    def _score(self, logits: torch.Tensor) -> torch.Tensor:
        levels = torch.arange(1, NUM_LEVELS + 1, dtype=logits.dtype, device=logits.device)
        expectation = (logits.softmax(-1) * levels).sum(-1)
        return unit_to_score((expectation - 1.0) / (NUM_LEVELS - 1), self.low, self.high)

    def _sequences(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per image (input order) its token sequence; the CNN runs once per distinct size."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            if min(im.shape[-2:]) < 32:
                raise DataError(f"TRIQ: image {i} is {tuple(im.shape[-2:])}; it needs >= 32 px")
            groups.setdefault(tuple(im.shape[-2:]), []).append(i)
        seqs: list[torch.Tensor | None] = [None] * len(images)
        for size, idx in groups.items():
            f = self.features(torch.stack([images[i] for i in idx]))
            pos = self.position(f.shape[-2], f.shape[-1], size)
            tokens = f.flatten(2).transpose(1, 2)
            for j, i in enumerate(idx):
                seqs[i] = torch.cat([self.token[0], tokens[j]]) + pos
        return seqs  # type: ignore[return-value]

    def forward(
        self, images: Any, targets: Sequence[Mapping[str, Any]] | None = None
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        ims = to_unit_list(images)
        logits = self.logits(self._sequences(ims))
        if self.training:
            if targets is None:
                raise DataError("TRIQ: training needs targets with 'score'")
            y = torch.stack([torch.as_tensor(t["score"], dtype=torch.float32) for t in targets])
            target = soft_levels(score_to_unit(y.to(logits.device), self.low, self.high))
            loss = -(target * logits.log_softmax(-1)).sum(-1).mean()
            return {"loss_distribution": loss}
        return [{"score": s} for s in self._score(logits)]


@MODELS.register("triq", options=TRIQConfig, task="quality")
def build_triq(cfg: TRIQConfig) -> TRIQ:
    """TRIQ no-reference transformer for any resolution (You & Korhonen 2021)."""
    body = create_timm(cfg.backbone, cfg.pretrained_path, features_only=True, out_indices=(-1,))
    if cfg.pretrained_path:
        check_coverage(body, cfg.pretrained_path, cfg.backbone)
    cfg_dict = body.pretrained_cfg
    return TRIQ(
        _LastFeature(body),
        body.feature_info.channels()[-1],
        mean=cfg_dict.get("mean", (0.485, 0.456, 0.406)),
        std=cfg_dict.get("std", (0.229, 0.224, 0.225)),
        score_range=cfg.score_range,
        d_model=cfg.d_model,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        ffn_dim=cfg.ffn_dim,
        head_dim=cfg.head_dim,
        dropout=cfg.dropout,
        pool_from=cfg.pool_from,
        max_grid=cfg.max_grid,
        position_mode=cfg.position_mode,
    )


class _LastFeature(nn.Module):
    """A timm ``features_only`` network -> its last feature map only."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[-1]
