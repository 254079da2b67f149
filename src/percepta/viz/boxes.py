"""Draw labelled detection boxes on images (torchvision.utils.draw_bounding_boxes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.io import write_png
from torchvision.utils import draw_bounding_boxes

__all__ = ["palette", "draw_detections", "save_png"]

_BASE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
         (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
         (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0)]


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct RGB colours (cycled from a fixed high-contrast list)."""
    return [_BASE[i % len(_BASE)] for i in range(n)]


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                    scores: torch.Tensor | None = None, class_names: Sequence[str] | None = None,
                    score_threshold: float = 0.0, width: int = 2) -> torch.Tensor:
    """Return a uint8 ``[3,H,W]`` copy of ``image`` with boxes labelled ``name score``."""
    img = image if image.dtype == torch.uint8 else image.clamp(0, 255).to(torch.uint8)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).cpu()
    labels = torch.as_tensor(labels).reshape(-1).cpu().long()
    keep = torch.ones(len(boxes), dtype=torch.bool)
    if scores is not None:
        scores = torch.as_tensor(scores).reshape(-1).cpu()
        keep = scores >= score_threshold
    boxes, labels = boxes[keep], labels[keep]
    if len(boxes) == 0:
        return img.cpu().clone()
    n_cls = max(len(class_names or []), int(labels.max()) + 1)
    colours = palette(n_cls)
    texts = []
    for i, lab in enumerate(labels.tolist()):
        name = class_names[lab] if class_names and lab < len(class_names) else str(lab)
        texts.append(f"{name} {float(scores[keep][i]):.2f}" if scores is not None else name)
    return draw_bounding_boxes(img.cpu(), boxes, labels=texts,
                               colors=[colours[lab] for lab in labels.tolist()], width=width)


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write a uint8 ``[3,H,W]`` tensor as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(image.cpu(), str(path))
    return path
