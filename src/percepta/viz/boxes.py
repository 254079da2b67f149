"""Draw labelled detection boxes on images, legibly at any image size.

Boxes are drawn by ``torchvision.utils.draw_bounding_boxes``; the labels (``name score``) by
PIL ``ImageDraw`` with a TrueType font (DejaVu Sans, which matplotlib ships; Pillow's own
scalable default font if it is missing; nothing is downloaded), because the text needs what
torchvision's labels lack: a size that follows the image, a filled background in the box's
colour with black or white text (whichever contrasts more), and a position kept inside the
image (above the box when there is room, else just inside its top edge; shifted left at the
right border).

Sizes: text height ``max(12, sqrt(H*W) / 40)`` px (26 px on 1024 x 1024), line width
``max(2, sqrt(H*W) / 300)``. Images whose longer side is under ``min_side`` (384 px) are first
enlarged by an integer factor (nearest neighbour, boxes scaled alike), since 12 px text on a
64 px image would hide it; the returned picture is then that much larger.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.io import write_png
from torchvision.utils import draw_bounding_boxes

__all__ = ["palette", "label_font_size", "draw_detections", "save_png"]

_BASE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
]


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct RGB colours (cycled from a fixed high-contrast list)."""
    return [_BASE[i % len(_BASE)] for i in range(n)]


def label_font_size(height: int, width: int) -> int:
    """Label text size in pixels for an ``height x width`` picture (see the module docstring)."""
    return max(12, round(math.sqrt(height * width) / 40))


def _line_width(height: int, width: int) -> int:
    return max(2, round(math.sqrt(height * width) / 300))


@functools.lru_cache(maxsize=1)
def _font_path() -> str | None:
    spec = importlib.util.find_spec("matplotlib")  # its file, without importing matplotlib
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return str(path) if path.is_file() else None


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = _font_path()
    if path is not None:
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _text_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luma >= 140 else (255, 255, 255)


def _draw_labels(
    img: torch.Tensor,
    boxes: torch.Tensor,
    texts: Sequence[str],
    colours: Sequence[tuple[int, int, int]],
    size: int,
) -> torch.Tensor:
    """Filled label boxes with text, kept inside the image, one per box."""
    h, w = int(img.shape[-2]), int(img.shape[-1])
    pil = Image.fromarray(img.permute(1, 2, 0).contiguous().numpy())
    draw = ImageDraw.Draw(pil)
    font = _font(size)
    pad = max(1, size // 6)
    for box, text, colour in zip(boxes.tolist(), texts, colours):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * pad, bottom - top + 2 * pad
        x = min(max(0, int(round(box[0]))), max(0, w - tw))
        y = int(round(box[1])) - th  # above the box ...
        if y < 0:
            y = int(round(box[1]))  # ... or just inside its top edge
        y = min(max(0, y), max(0, h - th))
        draw.rectangle((x, y, x + tw - 1, y + th - 1), fill=colour)
        draw.text((x + pad - left, y + pad - top), text, fill=_text_colour(colour), font=font)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).contiguous()


def draw_detections(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.0,
    width: int | None = None,
    min_side: int = 384,
) -> torch.Tensor:
    """A uint8 ``[3,H',W']`` copy of ``image`` with boxes labelled ``name score``.

    Args:
        image: ``[3,H,W]`` RGB, ``uint8`` in 0-255 or float in 0-1 (torchvision's convention).
        boxes: ``[K,4]`` XYXY in ``image`` pixels; ``labels [K]`` contiguous class indices.
        scores: optional ``[K]``; boxes below ``score_threshold`` are not drawn.
        class_names: label -> name (the label number is shown for labels without a name).
        width: box line width (default: scaled with the picture).
        min_side: pictures whose longer side is smaller are enlarged by an integer factor
            first, so ``H' = f * H`` (``0`` disables).
    """
    if image.is_floating_point():
        img = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    else:
        img = image.to(torch.uint8)
    img = img.cpu()
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).cpu()
    labels = torch.as_tensor(labels).reshape(-1).cpu().long()
    f = max(1, min_side // max(img.shape[-2:])) if min_side else 1
    if f > 1:
        img = img.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
        boxes = boxes * f
    keep = torch.ones(len(boxes), dtype=torch.bool)
    if scores is not None:
        scores = torch.as_tensor(scores).reshape(-1).cpu()
        keep = scores >= score_threshold
    boxes, labels = boxes[keep], labels[keep]
    if len(boxes) == 0:
        return img.clone()
    h, w = int(img.shape[-2]), int(img.shape[-1])
    # degenerate boxes (x2 < x1: an untrained model's negative sizes) are drawn, not refused
    boxes = torch.cat(
        [torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])], 1
    )
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
    colours = palette(max(len(class_names or []), int(labels.max()) + 1))
    box_colours = [colours[lab] for lab in labels.tolist()]
    texts = []
    for i, lab in enumerate(labels.tolist()):
        name = class_names[lab] if class_names and lab < len(class_names) else str(lab)
        texts.append(f"{name} {float(scores[keep][i]):.2f}" if scores is not None else name)
    drawn = draw_bounding_boxes(img, boxes, colors=box_colours, width=width or _line_width(h, w))
    return _draw_labels(drawn, boxes, texts, box_colours, label_font_size(h, w))


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write a uint8 ``[3,H,W]`` tensor as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(image.cpu(), str(path))
    return path
