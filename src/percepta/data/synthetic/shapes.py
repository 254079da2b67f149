"""Shape classes of the built-in detection data: outlines as polygons, boxes, areas, drawing.

Every shape is a polygon (a circle is a 64-gon, within 0.2 % of the true circle), so one piece
of geometry gives the drawn pixels (PIL ``ImageDraw.polygon``), the COCO ``segmentation`` and a
box that is tight by construction: the box is the extent of the vertices, never a guess from a
radius. Coordinates follow COCO: continuous pixels, (0, 0) is the top-left corner of the image.

The class list is deliberately long-tailed (:data:`CLASS_FREQUENCIES`), like real detection data,
so that per-class tables, rare-class AP and balancing losses have something to show.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import ImageDraw

__all__ = [
    "CLASS_NAMES",
    "CLASS_FREQUENCIES",
    "ROTATES",
    "unit_shape",
    "shape_polygon",
    "polygon_bbox",
    "polygon_area",
    "draw_polygon",
]

# Ordered from frequent to rare; category ids in the COCO files are index + 1.
# The arrow replaced a hexagon, which at 16-20 px is barely distinguishable from a circle; the
# tail (8 % vs 30 %) stays long enough for per-class tables to show it.
CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star", "arrow", "cross")
CLASS_FREQUENCIES: tuple[float, ...] = (0.30, 0.22, 0.17, 0.13, 0.10, 0.08)
# Rotation is meaningless for a circle; every other class is drawn at a random angle.
ROTATES: dict[str, bool] = {name: name != "circle" for name in CLASS_NAMES}

_CIRCLE_VERTICES = 64
_STAR_INNER = 0.48  # inner/outer radius of the 5-pointed star: chunky enough at 20 px
_CROSS_HALF_WIDTH = 0.34  # arm half-thickness relative to the arm half-length


def _regular(n: int, start_deg: float, radius: float = 1.0) -> np.ndarray:
    a = np.deg2rad(start_deg) + np.arange(n) * (2.0 * math.pi / n)
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _star() -> np.ndarray:
    outer = _regular(5, -90.0)
    inner = _regular(5, -90.0 + 36.0, _STAR_INNER)
    return np.stack([outer, inner], axis=1).reshape(10, 2)


def _arrow() -> np.ndarray:
    """A block arrow pointing right: shaft from x = -1 to 0.1, head to x = 1."""
    return np.array(
        [(-1, -0.28), (0.1, -0.28), (0.1, -0.75), (1, 0), (0.1, 0.75), (0.1, 0.28), (-1, 0.28)],
        dtype=np.float64,
    )


def _cross() -> np.ndarray:
    t = _CROSS_HALF_WIDTH
    return np.array(
        [
            (-t, -1),
            (t, -1),
            (t, -t),
            (1, -t),
            (1, t),
            (t, t),
            (t, 1),
            (-t, 1),
            (-t, t),
            (-1, t),
            (-1, -t),
            (-t, -t),
        ],
        dtype=np.float64,
    )


_UNIT: dict[str, np.ndarray] = {
    "circle": _regular(_CIRCLE_VERTICES, 0.0),
    "square": _regular(4, 45.0),
    "triangle": _regular(3, -90.0),  # pointing up (y grows downwards)
    "star": _star(),
    "arrow": _arrow(),
    "cross": _cross(),
}


def unit_shape(name: str) -> np.ndarray:
    """The outline of class ``name`` centred at 0 with its farthest vertex at distance ~1.

    Returns:
        ``float64 [N, 2]`` vertices (x, y), counter-clockwise in image coordinates.
    """
    try:
        return _UNIT[name].copy()
    except KeyError:
        raise KeyError(f"unknown shape {name!r}; known: {', '.join(CLASS_NAMES)}") from None


def shape_polygon(
    name: str, cx: float, cy: float, scale: float, angle_deg: float = 0.0
) -> np.ndarray:
    """Vertices of shape ``name`` scaled by ``scale`` px, rotated by ``angle_deg``, centred at (cx, cy).

    Returns:
        ``float64 [N, 2]`` vertices in image pixels.
    """
    pts = unit_shape(name) * float(scale)
    if angle_deg:
        a = math.radians(angle_deg)
        c, s = math.cos(a), math.sin(a)
        # explicit rotation, no BLAS call (safe in forked worker processes)
        pts = np.stack([pts[:, 0] * c - pts[:, 1] * s, pts[:, 0] * s + pts[:, 1] * c], axis=1)
    pts[:, 0] += cx
    pts[:, 1] += cy
    return pts


def polygon_bbox(
    poly: np.ndarray, width: int | None = None, height: int | None = None
) -> tuple[float, float, float, float]:
    """Tight COCO box ``(x, y, w, h)`` of a polygon, clipped to ``[0, width] x [0, height]`` if given."""
    x0, y0 = poly.min(axis=0)
    x1, y1 = poly.max(axis=0)
    if width is not None:
        x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    if height is not None:
        y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def polygon_area(poly: np.ndarray) -> float:
    """Area of a simple polygon (shoelace formula)."""
    x, y = poly[:, 0], poly[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def draw_polygon(
    draw: ImageDraw.ImageDraw,
    poly: np.ndarray,
    fill: int | tuple[int, ...],
    offset: tuple[float, float] = (0.0, 0.0),
) -> None:
    """Fill ``poly`` (shifted by ``-offset``) on a PIL drawing context without anti-aliasing.

    PIL fills pixel columns ``floor(x_min) .. floor(x_max)``, so the drawn pixels cover
    ``[floor(x_min), floor(x_max) + 1)``: within one pixel of :func:`polygon_bbox` on each side.
    """
    ox, oy = offset
    draw.polygon([(float(x) - ox, float(y) - oy) for x, y in poly], fill=fill)
