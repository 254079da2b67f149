"""A scene graph as a picture: the boxes on the image, the graph drawn beside it.

Left: the image with its numbered object boxes (:func:`percepta.viz.boxes.draw_detections`, so
labels are legible at any size). Right: the graph, each object a node placed at its box centre
(so the layout reads like the image), each of the top triplets an arrow subject -> object
labelled with its predicate and score. Matplotlib (Agg) only; no graph library is needed for a
handful of nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["draw_scene_graph"]


def draw_scene_graph(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: Sequence[int],
    object_names: Sequence[str],
    triplets: Sequence[tuple[int, int, str, float]],
    out_path: str | Path,
    title: str = "",
) -> Path:
    """Write the two-panel picture to ``out_path`` (PNG).

    Args:
        image: ``uint8 [3, H, W]``.
        boxes: ``[N, 4]`` XYXY pixels; ``labels``: ``N`` class indices into ``object_names``.
        triplets: ``(subject index, object index, predicate name, score)``, drawn in order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from percepta.viz.boxes import draw_detections, palette

    n = len(boxes)
    names = [
        f"{i}:{object_names[int(lab)]}" if int(lab) >= 0 else f"{i}:?"
        for i, lab in enumerate(labels)
    ]
    drawn = draw_detections(image, boxes, torch.arange(n), None, names)
    h, w = image.shape[-2:]
    fig, (ax_img, ax_g) = plt.subplots(1, 2, figsize=(10, 5), dpi=100)
    ax_img.imshow(drawn.permute(1, 2, 0).numpy())
    ax_img.set_axis_off()
    centres = (
        np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 / w, 1 - (boxes[:, 1] + boxes[:, 3]) / 2 / h], 1)
        if n
        else np.zeros((0, 2))
    )
    centres = np.asarray(centres, dtype=float)
    colours = palette(max(n, 1))
    for (s, o, pred, score), k in zip(triplets, range(len(triplets))):
        (x0, y0), (x1, y1) = centres[s], centres[o]
        ax_g.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops={
                "arrowstyle": "-|>",
                "color": "0.35",
                "lw": 1.2,
                "shrinkA": 14,
                "shrinkB": 14,
                "connectionstyle": f"arc3,rad={0.12 + 0.04 * (k % 3)}",
            },
        )
        ax_g.text(
            (x0 + x1) / 2,
            (y0 + y1) / 2,
            f"{pred} {score:.2f}",
            fontsize=8,
            ha="center",
            va="center",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.7", "alpha": 0.9},
        )
    for i, (x, y) in enumerate(centres):
        ax_g.scatter(
            [x], [y], s=500, color=np.array(colours[i]) / 255.0, zorder=3, edgecolors="black"
        )
        ax_g.text(x, y - 0.07, names[i], ha="center", va="top", fontsize=9, zorder=4)
    ax_g.set_xlim(-0.1, 1.1)
    ax_g.set_ylim(-0.15, 1.1)
    ax_g.set_axis_off()
    ax_g.set_title(f"top {len(triplets)} relations", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
