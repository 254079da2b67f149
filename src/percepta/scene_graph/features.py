"""Per-object and per-pair features of a relation head: box geometry, RoI heads, label embeddings.

Follows the relation head of Scene-Graph-Benchmark.pytorch (KaihuaTang @ 6f75881a; restated in
the project notes ``sgg.md`` §3.1 and ``sgg_official_semantics.md`` "Position encoding", nothing
copied):

* :func:`encode_box_info` — the 9-d box geometry ``[w/W, h/H, cx/W, cy/H, x1/W, y1/H, x2/W,
  y2/H, wh/(WH)]`` with inclusive widths ``w = x2 - x1 + 1`` (``utils_motifs.encode_box_info``),
  and :func:`pos_embed` — ``Linear(9, 32) -> BatchNorm1d -> Linear(32, 128) -> ReLU``.
* :func:`union_boxes` (``boxlist_union``) and :func:`pair_rect_masks` — the two binary
  rectangles of the ``RelationFeatureExtractor``: subject and object boxes rasterised on a
  ``(4s - 1) x (4s - 1)`` grid that spans the **whole image** (the boxes are rescaled from the
  image to the grid, x by ``(4s-1)/W`` and y by ``(4s-1)/H``; a cell ``(i, j)`` is inside when
  ``floor(x1) <= j <= ceil(x2)`` and likewise for y). The official code frames the masks in the
  image, not in the union box; percepta does the same.
* :class:`SpatialMaskConv` — ``rect_conv``: conv(2 -> C/2, 7x7, stride 2) + ReLU + BN +
  max-pool(3, stride 2) + conv(C/2 -> C, 3x3) + ReLU + BN, taking the masks to ``C x s x s``.
* :class:`RoIFeatureHead` — RoI features ``(n, C, s, s)`` -> two fully connected layers with
  ReLU (the detector box head ``FPN2MLPFeatureExtractor``'s fc6/fc7; the relation head trains
  its own copy).
* :class:`UnionFeatureHead` — union-box RoI features plus the spatial-mask branch, then the same
  two-layer MLP (``RelationFeatureExtractor.forward`` without ``SEPARATE_SPATIAL``).
* :func:`class_word_vectors` / :func:`label_embedding` — ``nn.Embedding`` of the object classes,
  learned, optionally initialised from a local GloVe-style text file (``word v1 v2 ...`` per
  line; nothing is downloaded). Unlike the official ``obj_edge_vectors`` (which falls back to
  the longest word of a multi-word name), a multi-word class name is the average of the vectors
  of its words that the file has; names without any known word keep a random normal vector,
  and their number is reported in one warning.

Boxes are XYXY in image pixels; image sizes are ``(h, w)`` (percepta's convention; the official
``BoxList.size`` is ``(w, h)``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from percepta.errors import ConfigError, DataError

__all__ = [
    "encode_box_info",
    "pos_embed",
    "union_boxes",
    "pair_rect_masks",
    "SpatialMaskConv",
    "RoIFeatureHead",
    "UnionFeatureHead",
    "class_word_vectors",
    "label_embedding",
]


def encode_box_info(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """The official 9-d geometry of ``boxes [n, 4]`` (XYXY pixels) in an image of ``(h, w)``.

    ``[w/W, h/H, cx/W, cy/H, x1/W, y1/H, x2/W, y2/H, w*h/(W*H)]`` with ``w = x2 - x1 + 1``,
    ``h = y2 - y1 + 1`` and ``cx = x1 + w/2``, ``cy = y1 + h/2``.
    """
    hei, wid = float(image_size[0]), float(image_size[1])
    if wid * hei == 0:
        raise DataError(f"encode_box_info: image size {tuple(image_size)} has a zero side")
    boxes = boxes.reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2] + 1.0
    xy = boxes[:, :2] + 0.5 * wh
    w, h = wh[:, 0:1], wh[:, 1:2]
    x, y = xy[:, 0:1], xy[:, 1:2]
    x1, y1, x2, y2 = boxes.split(1, dim=-1)
    parts = [w / wid, h / hei, x / wid, y / hei, x1 / wid, y1 / hei, x2 / wid, y2 / hei]
    return torch.cat([*parts, w * h / (wid * hei)], dim=-1)


def pos_embed(out_dim: int = 128, hidden: int = 32) -> nn.Sequential:
    """``Linear(9, 32) -> BatchNorm1d(32, momentum=0.001) -> Linear(32, 128) -> ReLU`` (official
    ``LSTMContext.pos_embed``; indices 0, 1, 2 as in the official state dict)."""
    return nn.Sequential(
        nn.Linear(9, hidden),
        nn.BatchNorm1d(hidden, momentum=0.001),
        nn.Linear(hidden, out_dim),
        nn.ReLU(inplace=True),
    )


def union_boxes(boxes: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """``[r, 4]`` union box of each ``(subject, object)`` row of ``pairs [r, 2]``."""
    s, o = boxes[pairs[:, 0]], boxes[pairs[:, 1]]
    return torch.cat([torch.minimum(s[:, :2], o[:, :2]), torch.maximum(s[:, 2:], o[:, 2:])], 1)


def pair_rect_masks(
    boxes: torch.Tensor, pairs: torch.Tensor, image_size: tuple[int, int], rect_size: int
) -> torch.Tensor:
    """``[r, 2, S, S]`` float masks (subject, object) of each pair on the image-wide grid.

    The boxes are scaled from the ``(h, w)`` image to ``S x S`` (``S = rect_size``, officially
    ``4 * pooler_resolution - 1`` = 27) and a cell is set when ``floor(x1) <= col <= ceil(x2)``
    and ``floor(y1) <= row <= ceil(y2)`` (inclusive, as the official ``RelationFeatureExtractor``).
    """
    hei, wid = float(image_size[0]), float(image_size[1])
    scale = boxes.new_tensor([rect_size / wid, rect_size / hei, rect_size / wid, rect_size / hei])
    grid = torch.arange(rect_size, device=boxes.device)
    out = []
    for col in (0, 1):
        b = boxes[pairs[:, col]] * scale
        lo, hi = b[:, :2].floor().long(), b[:, 2:].ceil().long()
        in_x = (grid[None, :] >= lo[:, 0:1]) & (grid[None, :] <= hi[:, 0:1])  # [r, S] columns
        in_y = (grid[None, :] >= lo[:, 1:2]) & (grid[None, :] <= hi[:, 1:2])  # [r, S] rows
        out.append((in_y[:, :, None] & in_x[:, None, :]).float())
    return torch.stack(out, dim=1)


class SpatialMaskConv(nn.Sequential):
    """The official ``rect_conv``: ``[r, 2, 4s-1, 4s-1]`` masks -> ``[r, C, s, s]``."""

    def __init__(self, channels: int) -> None:
        half = max(1, channels // 2)
        super().__init__(
            nn.Conv2d(2, half, kernel_size=7, stride=2, padding=3, bias=True),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(half, momentum=0.01),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.Conv2d(half, channels, kernel_size=3, stride=1, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(channels, momentum=0.01),
        )


def _fc(in_dim: int, out_dim: int) -> nn.Linear:
    """maskrcnn-benchmark's ``make_fc``: Kaiming-uniform (a=1) weights, zero bias."""
    fc = nn.Linear(in_dim, out_dim)
    nn.init.kaiming_uniform_(fc.weight, a=1)
    nn.init.zeros_(fc.bias)
    return fc


class RoIFeatureHead(nn.Module):
    """``[n, C, s, s]`` RoI features -> ``[n, out_dim]`` (flatten, fc6 + ReLU, fc7 + ReLU)."""

    def __init__(self, in_channels: int, resolution: int, out_dim: int) -> None:
        super().__init__()
        self.in_channels, self.resolution, self.out_dim = in_channels, resolution, out_dim
        self.fc6 = _fc(in_channels * resolution * resolution, out_dim)
        self.fc7 = _fc(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc6(x.flatten(1)))
        return torch.relu(self.fc7(x))


class UnionFeatureHead(nn.Module):
    """Union-box RoI features + the two-box spatial masks -> ``[r, out_dim]`` pair features.

    ``forward(union_roi [r, C, s, s], masks [r, 2, 4s-1, 4s-1])`` adds
    :class:`SpatialMaskConv` of the masks to the pooled union features, then applies the
    two-layer MLP (:class:`RoIFeatureHead`).
    """

    def __init__(self, in_channels: int, resolution: int, out_dim: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.rect_size = 4 * resolution - 1
        self.rect_conv = SpatialMaskConv(in_channels)
        self.head = RoIFeatureHead(in_channels, resolution, out_dim)

    def forward(self, union_roi: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.head(union_roi + self.rect_conv(masks))


def _read_word_vectors(path: Path, words: set[str]) -> tuple[dict[str, np.ndarray], int]:
    """The vectors of ``words`` in a ``word v1 v2 ...`` text file, and the file's dimension."""
    found: dict[str, np.ndarray] = {}
    dim = 0
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            word, sep, rest = line.rstrip("\n").partition(" ")
            if not sep:
                if line.strip():
                    raise DataError(f"{path}: line {lineno}: expected 'word v1 v2 ...'")
                continue
            if dim == 0:
                dim = len(rest.split())
            if word not in words or word in found:
                continue
            try:
                vec = np.array(rest.split(), dtype=np.float32)
            except ValueError:
                raise DataError(f"{path}: line {lineno} ({word!r}): non-numeric value") from None
            if vec.shape[0] != dim:
                raise DataError(
                    f"{path}: line {lineno} ({word!r}): {vec.shape[0]} values, expected {dim}"
                )
            found[word] = vec
    return found, dim


def class_word_vectors(
    names: Sequence[str],
    dim: int,
    glove_path: str | Path | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """``[len(names), dim]`` initial embedding vectors and the number of names not found.

    Without ``glove_path`` every row is random normal (the official fallback). With a file, a
    name is looked up as a whole, then as the mean of its space-separated words found in the
    file; a name with no known word stays random (counted, and warned about once).
    """
    vectors = torch.randn(len(names), dim, generator=generator)
    if not glove_path:
        return vectors, 0
    path = Path(glove_path)
    if not path.is_file():
        raise ConfigError(f"model.glove_path: word-vector file {str(path)!r} does not exist")
    wanted = set(names) | {w for n in names for w in n.split()}
    found, file_dim = _read_word_vectors(path, wanted)
    if file_dim and file_dim != dim:
        raise ConfigError(
            f"model.glove_path: {path} has {file_dim}-d vectors but model.embed_dim is {dim}"
        )
    missing = 0
    for i, name in enumerate(names):
        if name in found:
            vectors[i] = torch.from_numpy(found[name])
            continue
        parts = [found[w] for w in name.split() if w in found]
        if parts:
            vectors[i] = torch.from_numpy(np.mean(parts, axis=0))
        else:
            missing += 1
    if missing:
        warnings.warn(
            f"{path}: {missing} of {len(names)} class names have no word vector "
            "(random initialisation)",
            stacklevel=2,
        )
    return vectors, missing


def label_embedding(
    names: Sequence[str],
    dim: int,
    glove_path: str | Path | None = None,
    generator: torch.Generator | None = None,
) -> nn.Embedding:
    """A learned ``nn.Embedding(len(names), dim)`` initialised by :func:`class_word_vectors`."""
    emb = nn.Embedding(len(names), dim)
    with torch.no_grad():
        emb.weight.copy_(class_word_vectors(names, dim, glove_path, generator)[0])
    return emb
