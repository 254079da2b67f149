"""One image of the built-in detection data: shapes on a textured background, with annotations.

Everything random is drawn from ``numpy.random.default_rng([seed, index])``, so an image depends
only on ``(seed, index, image_size)``: the dataset is byte-identical for any number of workers.

Content of an image:

- a textured background (:mod:`.backgrounds`); in 60 % of images mild grey pixel noise on top;
- no object in about 3 % of images, otherwise 1-7 objects of 6 classes with a long-tailed class
  frequency (:data:`.shapes.CLASS_FREQUENCIES`), log-uniform sizes (box sides 18..110 px at
  256 px, scaled with the image but never below 16 px), random rotation (not for circles);
- a colour per object chosen to contrast (RGB distance >= 100 and luma difference >= 30) with
  the background and with any object it covers;
- mild occlusion: about a third of the objects may be drawn over earlier ones, but a placement is
  only accepted if every earlier object keeps at least 60 % of its pixels visible
  (:data:`MIN_VISIBLE`); the rest are placed where they cover no earlier pixel (their boxes may
  still overlap). An object is annotated only if at least 60 % of its pixels are visible (true by
  construction), with the full object's box, tight around the polygon's vertices (clipped to the
  image), the full polygon as segmentation and the polygon's area.

Objects that find no acceptable place in 30 tries are left out, so crowded images hold fewer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from percepta.data.synthetic.backgrounds import add_pixel_noise, make_background
from percepta.data.synthetic.shapes import (
    CLASS_FREQUENCIES,
    CLASS_NAMES,
    ROTATES,
    draw_polygon,
    polygon_area,
    polygon_bbox,
    shape_polygon,
)
from percepta.errors import PerceptaError

__all__ = ["SynthOptionError", "RenderedImage", "render_image", "GENERATOR_VERSION", "MIN_VISIBLE"]

GENERATOR_VERSION = 1  # bump when the pixels or annotations change, so old folders regenerate
EMPTY_FRACTION = 0.03
MAX_OBJECTS = 7
OVERLAP_FRACTION = 0.35  # share of objects allowed to be drawn over earlier ones
MIN_VISIBLE = 0.6
NOISY_FRACTION = 0.6  # share of images with grey pixel noise (sigma 1.5..4 levels)
MIN_SIDE_PX = 16.0
SIZE_RANGE_256 = (18.0, 110.0)  # box side range at 256 px
MIN_COLOUR_DIST = 100.0
MIN_LUMA_DIFF = 30.0
_PLACEMENT_TRIES = 30
_COLOUR_TRIES = 48
_LUMA = np.array([0.299, 0.587, 0.114])


class SynthOptionError(PerceptaError, ValueError):
    """An option of the built-in data generator is out of range."""


@dataclass
class RenderedImage:
    """One rendered image: ``image`` uint8 [H, W, 3]; ``instances`` uint8 [H, W] (0 = background,
    k = the k-th drawn object, including ones whose annotation was dropped); ``objects`` the kept
    annotations as dicts with ``category`` (0-based), ``bbox`` (COCO xywh), ``polygon`` [N, 2],
    ``area``, ``visible`` (fraction of the object's pixels left visible) and ``instance_id`` (its
    value in ``instances``)."""

    image: np.ndarray
    instances: np.ndarray
    objects: list[dict[str, Any]] = field(default_factory=list)


def _size_range(image_size: int) -> tuple[float, float]:
    lo = max(MIN_SIDE_PX, SIZE_RANGE_256[0] * image_size / 256.0)
    hi = max(lo * 1.5, SIZE_RANGE_256[1] * image_size / 256.0)
    return lo, hi


def _sample_shape(rng: np.random.Generator, name: str, image_size: int) -> np.ndarray:
    """A polygon centred at 0 whose box sides lie in the size range (log-uniform in between)."""
    lo, hi = _size_range(image_size)
    angle = float(rng.uniform(0.0, 360.0)) if ROTATES[name] else 0.0
    target = math.exp(rng.uniform(math.log(lo), math.log(hi)))  # the box's longer side
    poly = shape_polygon(name, 0.0, 0.0, 1.0, angle)
    _, _, w, h = polygon_bbox(poly)
    scale = target / max(w, h)
    scale = max(scale, lo * 1.001 / min(w, h))  # the shorter side too must reach MIN_SIDE
    return poly * scale


def _pick_colour(rng: np.random.Generator, refs: np.ndarray) -> tuple[int, int, int]:
    """A random colour contrasting with every reference colour in ``refs`` [R, 3]."""
    cand = rng.uniform(0.0, 256.0, size=(_COLOUR_TRIES, 3)).astype(np.int64).astype(np.float64)
    dist = np.linalg.norm(cand[:, None, :] - refs[None, :, :], axis=2) / MIN_COLOUR_DIST
    luma = np.abs((cand * _LUMA).sum(1)[:, None] - (refs * _LUMA).sum(1)[None, :]) / MIN_LUMA_DIFF
    score = np.minimum(dist, luma).min(axis=1)
    ok = np.flatnonzero(score >= 1.0)
    i = int(ok[0]) if len(ok) else int(np.argmax(score))
    return int(cand[i, 0]), int(cand[i, 1]), int(cand[i, 2])


def render_image(seed: int, index: int, image_size: int = 256) -> RenderedImage:
    """Render image ``index`` of the dataset with ``seed`` (deterministic, independent of others)."""
    rng = np.random.default_rng([seed, index])
    size = image_size
    background = make_background(rng, size)
    canvas = np.clip(background + 0.5, 0, 255).astype(np.uint8)
    instances = np.zeros((size, size), dtype=np.uint8)
    n_objects = 0 if rng.random() < EMPTY_FRACTION else int(rng.integers(1, MAX_OBJECTS + 1))

    drawn: list[dict[str, Any]] = []  # every drawn object, kept or not
    full = np.zeros(MAX_OBJECTS + 1, dtype=np.int64)  # pixels when drawn, by instance id
    visible = np.zeros(MAX_OBJECTS + 1, dtype=np.int64)
    for _ in range(n_objects):
        category = int(rng.choice(len(CLASS_NAMES), p=CLASS_FREQUENCIES))
        name = CLASS_NAMES[category]
        shape = _sample_shape(rng, name, size)
        may_overlap = rng.random() < OVERLAP_FRACTION
        (xmin, ymin), (xmax, ymax) = shape.min(axis=0), shape.max(axis=0)
        k = len(drawn) + 1
        for _try in range(_PLACEMENT_TRIES):
            cx = rng.uniform(1.0 - xmin, size - 1.0 - xmax)
            cy = rng.uniform(1.0 - ymin, size - 1.0 - ymax)
            poly = shape + (cx, cy)
            x0, y0 = (int(math.floor(v)) for v in poly.min(axis=0))
            x1, y1 = (min(int(math.floor(v)) + 1, size) for v in poly.max(axis=0))
            mask_img = Image.new("L", (x1 - x0, y1 - y0), 0)
            draw_polygon(ImageDraw.Draw(mask_img), poly, 1, offset=(x0, y0))
            mask = np.asarray(mask_img, dtype=bool)
            under = instances[y0:y1, x0:x1][mask]
            covered = np.bincount(under, minlength=MAX_OBJECTS + 1)
            covered[0] = 0
            if may_overlap:
                left = visible[1:k] - covered[1:k]
                if np.any(left < MIN_VISIBLE * full[1:k]):
                    continue
            elif covered.any():
                continue
            break
        else:
            continue  # no acceptable place for this object: leave it out
        refs = (
            [background[y0:y1, x0:x1][mask & (instances[y0:y1, x0:x1] == 0)].mean(axis=0)]
            if np.any(under == 0)
            else []
        )
        refs += [drawn[j - 1]["colour"] for j in np.flatnonzero(covered)]
        colour = _pick_colour(rng, np.asarray(refs, dtype=np.float64).reshape(-1, 3))
        canvas[y0:y1, x0:x1][mask] = colour
        instances[y0:y1, x0:x1][mask] = k
        visible -= covered
        full[k] = visible[k] = int(mask.sum())
        drawn.append({"category": category, "polygon": poly, "colour": colour})

    sigma = float(rng.uniform(1.5, 4.0)) if rng.random() < NOISY_FRACTION else 0.0
    image = add_pixel_noise(rng, canvas, sigma)
    objects = []
    for k, obj in enumerate(drawn, start=1):
        frac = visible[k] / full[k] if full[k] else 0.0
        if frac < MIN_VISIBLE:
            continue
        objects.append(
            {
                "category": obj["category"],
                "bbox": polygon_bbox(obj["polygon"], size, size),
                "polygon": obj["polygon"],
                "area": polygon_area(obj["polygon"]),
                "visible": float(frac),
                "instance_id": k,
            }
        )
    return RenderedImage(image=image, instances=instances, objects=objects)
