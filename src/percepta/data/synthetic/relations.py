"""Built-in controlled-bias relation data: ``percepta data synth --task relations``.

Shapes scenes whose **true** relations follow from geometry and appearance with fine-grained
predicates, and whose **annotations** carry the biases that make Visual Genome hard: generic
predicates replacing fine ones, missing relations, a long-tailed predicate histogram, unseen
(zero-shot) triplets at test time. The generator's true labels are shipped beside the
annotations so the bias can be measured against truth. The point is the setting of Tang et
al., "Unbiased Scene Graph Generation from Biased Training" (CVPR 2020): annotators prefer
generic, head predicates ("near", "on") to the fine ones that hold, so a model trained on the
annotations learns the bias, and a frequency baseline (Zellers et al., "Neural Motifs", CVPR
2018) is strong; here the truth is known, so debiasing can be scored against it.

``generate_relations(out)`` writes::

    out/images/000000000001.png ...           every image (train, val and test)
    out/annotations/instances_train.json      COCO objects (the detection data's layout, so the
    out/annotations/instances_val.json        CenterNet config trains on it with only
    out/annotations/instances_test.json       data.root changed; the image folder is guessed)
    out/VG-SGG.h5, VG-SGG-dicts.json,         the scene graphs in the Visual-Genome SGG files of
    out/image_data.json                       Scene-Graph-Benchmark (percepta.data.vg_sgg)
    out/zero_shot_triplets.json               [[subject class, object class, predicate], ...]
    out/truth.json                            per image: objects, all true fine relations
    out/README.txt, out/synth_meta.json       description, options, histograms, num_val_im

**Scenes** (:func:`compose_scene`; 128 px by default, sizes scale with the image): a textured
background (:mod:`.backgrounds`) and 3-8 objects of the built-in shape classes
(:mod:`.shapes`, long-tailed class frequency), each a flat colour from :data:`COLOURS`. Objects
are placed in groups so that clear configurations are common: *free* (one object), *nest* (a
large circle or square with a small object wholly inside it, 3 px rim at least), *stack* (a
second object drawn partly over the first, which keeps >= 60 % of its pixels visible) and
*touch* (a second object moved along a random direction until it meets the first: no shared
pixel, a gap of at most one pixel); the second object's class depends on the first's
(:data:`PARTNER_CLASS`, with probability :data:`PARTNER_BIAS`), so the class pair predicts the
contact predicate often, not always. Objects of different groups keep at least
:data:`CLEAR_PX` empty pixels between them (chessboard distance), so "touching" is never
borderline. A colour contrasts with the background under the object and with any partner it
covers, lies in or touches; an object reuses a colour already in the scene with probability
:data:`COLOUR_REUSE`, otherwise it takes a contrasting colour not used yet where there is one.
Groups that find no place are replaced by smaller free objects. Boxes are the integer pixel
extent of each object's full (unoccluded) mask, ``[x1, y1, x2, y2)`` with ``x2 = last column +
1``: exact in COCO json and in the VG-SGG h5.

**True relations** (:func:`pair_predicates`, from full masks, draw order, boxes and colours) for
an ordered pair (subject s, object o), all that hold, in priority order; the first is *the* fine
predicate of the pair, a pair with none is unrelated (background):

1. contact, at most one: ``inside`` (>= 98 % of s's mask lies in o's, s smaller), ``around``
   (the reverse), ``covering`` / ``behind`` (masks share pixels; s drawn later / earlier),
   ``touching`` (no shared pixel, chessboard gap <= :data:`TOUCH_PX`);
2. spatial (not for inside/around): ``left of`` / ``right of`` / ``above`` / ``below`` by the
   dominant box-centre offset (one axis >= :data:`DOMINANCE` x the other, image y downwards),
   only when the boxes are near: gap <= :data:`NEAR_FACTOR` x the mean longer box side;
3. ``bigger than`` (not for inside/around): s's mask area >= :data:`BIGGER_RATIO` x o's;
4. ``same colour as``: the same palette colour.

**Annotation** (:func:`annotate`, its own random stream per image, so changing an annotation
option never changes the pixels), modelled on how Visual Genome's annotators behave:

- each true relation is left unannotated with probability ``unannotated``; of the rest at most
  ``max_relations`` are kept, drawn without replacement with weight :data:`SALIENCE` of the
  pair's fine predicate (contact is salient, "same colour as" is not);
- the annotator writes the pair's fine predicate, except that the *subject class* has a
  preference (:data:`CLASS_PREFERENCE`, e.g. a star is described by its colour): when the
  preferred predicate also holds, it is written instead with the given probability. So the
  annotated predicate depends on both geometry and classes (also through
  :data:`PARTNER_CLASS`); still, geometry decides most of it: on the default data the most
  frequent predicate of the class pair is right on 35 % of the test pairs, about as often as
  the head predicate alone (docs/data.md);
- the written fine predicate is replaced by its generic parent (:data:`GENERIC_OF`: near / on /
  has / with) with probability ``min(1, generic_prob * GENERIC_WEIGHT[predicate] *
  GENERIC_CLASS_WEIGHT[subject class])``: spatial predicates and circles most often. The result
  is long-tailed like VG's (the README prints the histogram).

**Splits and zero-shot.** Image ``i`` gets the ``(i + 1)``-th of the ids 1, 2, ... that skip the
4 VG ids the official loader drops (:func:`image_ids`); it is in the test split (VG-SGG ``split`` 2) for
``i >= num_images - round(test_fraction * num_images)``, otherwise in split 0 (train + val).
Held-out triplets: of the (subject class, predicate, object class) types annotated in both
split 0 and test, the most frequent quarter is excluded and ``round(zero_shot * number of
observed types)`` of the rest are drawn with ``default_rng([seed, 7919])``; their relations are
removed from **every split-0 image** (train and val: the held-out list stays unseen whatever
``num_val_im`` a config uses) and kept in test. ``zero_shot_triplets.json`` lists the held-out
types plus any test type that split 0 never has after the removal (the official definition of
zero-shot: in test, not in training). Its rows are ``[subject class, object class, predicate]``,
the column order of :func:`percepta.scene_graph.results_io.load_zero_shot_triplets`, with
**0-based** object classes (percepta targets' contiguous labels; add 1 for the h5's labels) and
1-based predicates. ``synth_meta.json`` also holds the list with 1-based (h5) labels.

Val = the first ``round(val_fraction * n_split0)`` split-0 images (in id order) that keep at
least one relation; in the h5 they come first among the split-0 images, so the official loader's
``num_val_im`` (recorded in ``synth_meta.json``) carves exactly them out, with or without
``filter_empty_rels``. The COCO val json holds the same images. Labels in the COCO files and the
h5 are 1-based (the same numbers), predicates are 1-based in :data:`PREDICATES` order, and the
h5 ``attributes`` column 0 holds the colour (1-based into :data:`COLOURS`).

Everything random is drawn from ``numpy.random.default_rng([seed, i, stream])``; images are made
in worker processes as for the detection data, and the files do not depend on ``workers``.
800 images of 128 px take about 9 s of CPU time (5 s on 2 idle cores).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from percepta.data.synthetic.backgrounds import add_pixel_noise, make_background
from percepta.data.synthetic.folders import META_NAME, owned_by, refuse_foreign_files
from percepta.data.synthetic.parallel import ordered_map
from percepta.data.synthetic.scene import SynthOptionError
from percepta.data.synthetic.shapes import (
    CLASS_FREQUENCIES,
    CLASS_NAMES,
    ROTATES,
    draw_polygon,
    polygon_bbox,
    shape_polygon,
)
from percepta.errors import DataError

__all__ = [
    "RELATIONS_VERSION",
    "FINE_PREDICATES",
    "GENERIC_PREDICATES",
    "PREDICATES",
    "GENERIC_OF",
    "COLOURS",
    "SceneObject",
    "RelationScene",
    "pair_predicates",
    "scene_relations",
    "compose_scene",
    "annotate",
    "generate_relations",
    "split_counts",
    "image_ids",
    "histogram_lines",
]

RELATIONS_VERSION = 1  # bump when pixels or annotations change, so old folders regenerate

FINE_PREDICATES: tuple[str, ...] = (
    "inside",
    "around",
    "covering",
    "behind",
    "touching",
    "left of",
    "right of",
    "above",
    "below",
    "bigger than",
    "same colour as",
)
GENERIC_PREDICATES: tuple[str, ...] = ("near", "on", "has", "with")
#: every predicate, in file order: predicate id = index + 1 (0 is "no relation")
PREDICATES: tuple[str, ...] = FINE_PREDICATES + GENERIC_PREDICATES
GENERIC_OF: dict[str, str] = {
    "inside": "on",
    "around": "has",
    "covering": "on",
    "behind": "near",
    "touching": "on",
    "left of": "near",
    "right of": "near",
    "above": "near",
    "below": "near",
    "bigger than": "with",
    "same colour as": "with",
}
SPATIAL = ("left of", "right of", "above", "below")
#: palette: "same colour as" compares these names; attribute id = index + 1
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 145, 25),
    "yellow": (240, 225, 50),
    "green": (40, 175, 65),
    "cyan": (40, 205, 215),
    "blue": (45, 85, 215),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

# geometry of the true relations (pixels are chessboard distances on the full masks)
TOUCH_PX = 2  # touching: gap of at most one empty pixel between the masks
CLEAR_PX = 5  # objects of different groups: chessboard distance > 5 (>= 5 empty pixels)
INSIDE_TOL = 0.02  # "inside": at most 2 % of the subject's pixels outside the object
DOMINANCE = 1.5  # spatial: one centre offset >= 1.5 x the other
NEAR_FACTOR = 1.0  # spatial: box gap <= mean longer side
BIGGER_RATIO = 2.5  # bigger than: area ratio

# scene composition (sides at 128 px; scaled with the image)
MIN_OBJECTS, MAX_OBJECTS = 3, 8
FREE_SIDE = (16.0, 34.0)
CONTAINER_SIDE = (42.0, 58.0)
INNER_SIDE = (14.0, 20.0)
INNER_MAX_FRACTION = 0.42  # inner side <= 0.42 x container side
CONTAINER_CLASSES = ("circle", "square")
GROUPS = ("free", "nest", "stack", "touch")
GROUP_PROBS = (0.34, 0.18, 0.22, 0.26)
MIN_VISIBLE = 0.6
#: class of a group's second object given the first's (the inner one of a nest given the
#: container, the top one of a stack, the touching one), taken with probability PARTNER_BIAS:
#: so classes predict contact predicates, as "person wearing shirt" does in Visual Genome
PARTNER_CLASS: dict[str, dict[str, str]] = {
    "nest": {"circle": "star", "square": "circle"},
    "stack": {
        "circle": "triangle",
        "square": "star",
        "triangle": "square",
        "star": "circle",
        "arrow": "cross",
        "cross": "square",
    },
    "touch": {
        "circle": "square",
        "square": "arrow",
        "triangle": "circle",
        "star": "triangle",
        "arrow": "circle",
        "cross": "star",
    },
}
PARTNER_BIAS = 0.6
COLOUR_REUSE = 0.12
NOISY_FRACTION = 0.6
_TRIES = 40

# annotation
SALIENCE: dict[str, float] = {
    "inside": 3.0,
    "around": 2.0,
    "covering": 3.0,
    "behind": 2.0,
    "touching": 3.0,
    **{p: 1.5 for p in SPATIAL},
    "bigger than": 0.5,
    "same colour as": 0.3,
}
#: subject class -> (preferred predicate, probability); "spatial" = any spatial predicate
CLASS_PREFERENCE: dict[str, tuple[str, float]] = {
    "circle": ("same colour as", 0.5),
    "square": ("bigger than", 0.6),
    "triangle": ("spatial", 0.5),
    "star": ("same colour as", 0.7),
    "arrow": ("spatial", 0.7),
    "cross": ("bigger than", 0.5),
}
GENERIC_WEIGHT: dict[str, float] = {
    "inside": 0.8,
    "around": 0.6,
    "covering": 1.0,
    "behind": 0.8,
    "touching": 1.2,
    **{p: 2.0 for p in SPATIAL},
    "bigger than": 0.4,
    "same colour as": 0.3,
}
GENERIC_CLASS_WEIGHT: dict[str, float] = {
    "circle": 1.3,
    "square": 1.1,
    "triangle": 1.0,
    "star": 0.8,
    "arrow": 0.8,
    "cross": 0.7,
}


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Pixels within chessboard distance ``px`` of ``mask`` (= ``px`` 8-connected binary
    dilations; one separable max filter is several times faster)."""
    return ndimage.maximum_filter(mask, size=2 * px + 1, mode="constant", cval=False)


# --------------------------------------------------------------------------- true relations
@dataclass
class SceneObject:
    """One object of a relation scene: ``label`` (0-based class), ``mask`` (bool [H, W], the full
    object, occluded parts included), ``depth`` (draw order: higher is drawn later, on top) and
    ``colour`` (a :data:`COLOURS` name)."""

    label: int
    mask: np.ndarray
    depth: int
    colour: str

    @cached_property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @cached_property
    def box(self) -> tuple[int, int, int, int]:
        """``(x1, y1, x2, y2)`` pixel edges: ``x2`` = last column + 1."""
        ys, xs = np.nonzero(self.mask)
        if not len(xs):
            raise ValueError("SceneObject: empty mask")
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    @cached_property
    def touch_zone(self) -> np.ndarray:
        return _dilate(self.mask, TOUCH_PX)


def _spatial(bs: tuple[int, ...], bo: tuple[int, ...]) -> str | None:
    gap = max(0, max(bs[0], bo[0]) - min(bs[2], bo[2]), max(bs[1], bo[1]) - min(bs[3], bo[3]))
    side = 0.5 * (max(bs[2] - bs[0], bs[3] - bs[1]) + max(bo[2] - bo[0], bo[3] - bo[1]))
    if gap > NEAR_FACTOR * side:
        return None
    dx = 0.5 * (bo[0] + bo[2] - bs[0] - bs[2])  # object centre minus subject centre
    dy = 0.5 * (bo[1] + bo[3] - bs[1] - bs[3])
    if abs(dx) > 0 and abs(dx) >= DOMINANCE * abs(dy):
        return "left of" if dx > 0 else "right of"
    if abs(dy) > 0 and abs(dy) >= DOMINANCE * abs(dx):
        return "above" if dy > 0 else "below"
    return None


def pair_predicates(sub: SceneObject, obj: SceneObject) -> tuple[str, ...]:
    """Every fine predicate that holds for (``sub``, ``obj``), in priority order (the module
    docstring lists the rules); the first is the pair's fine predicate, ``()`` = unrelated."""
    preds: list[str] = []
    inter = int(np.count_nonzero(sub.mask & obj.mask))
    if inter >= (1.0 - INSIDE_TOL) * sub.area and sub.area < obj.area:
        preds.append("inside")
    elif inter >= (1.0 - INSIDE_TOL) * obj.area and obj.area < sub.area:
        preds.append("around")
    elif inter > 0:
        preds.append("covering" if sub.depth > obj.depth else "behind")
    elif np.any(sub.touch_zone & obj.mask):
        preds.append("touching")
    if not preds or preds[0] not in ("inside", "around"):
        spatial = _spatial(sub.box, obj.box)
        if spatial is not None:
            preds.append(spatial)
        if sub.area >= BIGGER_RATIO * obj.area:
            preds.append("bigger than")
    if sub.colour == obj.colour:
        preds.append("same colour as")
    return tuple(preds)


def scene_relations(objects: Sequence[SceneObject]) -> list[tuple[int, int, tuple[str, ...]]]:
    """``(subject index, object index, predicates)`` for every related ordered pair, in
    row-major pair order."""
    out = []
    for s, sub in enumerate(objects):
        for o, obj in enumerate(objects):
            if s != o:
                preds = pair_predicates(sub, obj)
                if preds:
                    out.append((s, o, preds))
    return out


# ------------------------------------------------------------------------------- the scenes
@dataclass
class RelationScene:
    """A rendered scene: ``image`` uint8 [H, W, 3], ``objects`` in draw order, their polygons."""

    image: np.ndarray
    objects: list[SceneObject] = field(default_factory=list)
    polygons: list[np.ndarray] = field(default_factory=list)


class _Composer:
    """Places groups of objects on one canvas (see the module docstring)."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.rng, self.size, self.scale = rng, size, size / 128.0
        self.background = make_background(rng, size)
        self.polys: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.labels: list[int] = []
        self.colours: list[str] = []
        self.blocked = np.zeros((size, size), dtype=bool)  # union of CLEAR_PX-dilated masks

    # geometry helpers
    def _shape(self, name: str, side: tuple[float, float]) -> np.ndarray:
        lo, hi = side[0] * self.scale, side[1] * self.scale
        angle = float(self.rng.uniform(0.0, 360.0)) if ROTATES[name] else 0.0
        target = math.exp(self.rng.uniform(math.log(lo), math.log(hi)))
        poly = shape_polygon(name, 0.0, 0.0, 1.0, angle)
        _, _, w, h = polygon_bbox(poly)
        scale = max(target / max(w, h), lo * 1.001 / min(w, h))
        return poly * scale

    def _mask(self, poly: np.ndarray) -> np.ndarray:
        im = Image.new("L", (self.size, self.size), 0)
        draw_polygon(ImageDraw.Draw(im), poly, 1)
        return np.asarray(im, dtype=bool)

    def _in_image(self, poly: np.ndarray) -> bool:
        return bool(poly.min() >= 1.0 and poly.max() <= self.size - 1.0)

    def _class(self) -> str:
        return CLASS_NAMES[int(self.rng.choice(len(CLASS_NAMES), p=CLASS_FREQUENCIES))]

    def _colour(self, mask: np.ndarray, partners: Sequence[int]) -> str:
        refs = [self.background[mask].mean(axis=0)] + [
            np.asarray(COLOURS[self.colours[j]], np.float64) for j in partners
        ]
        ref = np.asarray(refs, dtype=np.float64)
        pal = np.asarray(list(COLOURS.values()), dtype=np.float64)
        luma = np.array([0.299, 0.587, 0.114])
        dist = np.linalg.norm(pal[:, None, :] - ref[None], axis=2) / 100.0
        dl = np.abs((pal @ luma)[:, None] - (ref @ luma)[None, :]) / 30.0
        score = np.minimum(dist, dl).min(axis=1)
        ok = [COLOUR_NAMES[i] for i in np.flatnonzero(score >= 1.0)]
        reuse = sorted({c for c in self.colours if c in ok}, key=COLOUR_NAMES.index)
        r = self.rng.random()
        if reuse and r < COLOUR_REUSE:
            return reuse[int(self.rng.integers(len(reuse)))]
        fresh = [c for c in ok if c not in self.colours] or ok
        if fresh:
            return fresh[int(self.rng.integers(len(fresh)))]
        return COLOUR_NAMES[int(np.argmax(score))]

    def _blocked_without(self, partner: int) -> np.ndarray:
        out = np.zeros_like(self.blocked)
        for j, m in enumerate(self.masks):
            if j != partner:
                out |= _dilate(m, CLEAR_PX)
        return out

    def _add(self, poly: np.ndarray, mask: np.ndarray, label: int, partners: Sequence[int]) -> int:
        self.colours.append(self._colour(mask, partners))
        self.polys.append(poly)
        self.masks.append(mask)
        self.labels.append(label)
        self.blocked |= _dilate(mask, CLEAR_PX)
        return len(self.masks) - 1

    # groups
    def free(self, name: str | None = None, side: tuple[float, float] = FREE_SIDE) -> int | None:
        name = name or self._class()
        shape = self._shape(name, side)
        (x0, y0), (x1, y1) = shape.min(axis=0), shape.max(axis=0)
        lo_x, hi_x, lo_y, hi_y = 1.0 - x0, self.size - 1.0 - x1, 1.0 - y0, self.size - 1.0 - y1
        if lo_x > hi_x or lo_y > hi_y:
            return None
        for _ in range(_TRIES):
            poly = shape + (self.rng.uniform(lo_x, hi_x), self.rng.uniform(lo_y, hi_y))
            mask = self._mask(poly)
            if not np.any(mask & self.blocked):
                return self._add(poly, mask, CLASS_NAMES.index(name), ())
        return None

    def nest(self) -> bool:
        cont = self.free(CONTAINER_CLASSES[int(self.rng.integers(2))], CONTAINER_SIDE)
        if cont is None:
            return False
        cmask, cpoly = self.masks[cont], self.polys[cont]
        x0, y0, w, h = polygon_bbox(cpoly)
        hi = min(INNER_SIDE[1], INNER_MAX_FRACTION * min(w, h) / self.scale)
        name = self._partner_class("nest", cont)
        shape = self._shape(name, (INNER_SIDE[0], max(hi, INNER_SIDE[0] + 1.0)))
        core = ndimage.minimum_filter(cmask, size=7, mode="constant", cval=False)  # erode 3 px
        for _ in range(_TRIES):
            poly = shape + (self.rng.uniform(x0, x0 + w), self.rng.uniform(y0, y0 + h))
            mask = self._mask(poly)
            if mask.any() and not np.any(mask & ~core):
                self._add(poly, mask, CLASS_NAMES.index(name), (cont,))
                return True
        return True  # the container alone is still a valid (free) object

    def _partner_class(self, group: str, first: int) -> str:
        """The second object's class: :data:`PARTNER_CLASS` with :data:`PARTNER_BIAS`."""
        preferred = PARTNER_CLASS[group][CLASS_NAMES[self.labels[first]]]
        return preferred if self.rng.random() < PARTNER_BIAS else self._class()

    def _partner_shape(
        self, group: str, first: int
    ) -> tuple[str, np.ndarray, float, float, np.ndarray]:
        name = self._partner_class(group, first)
        shape = self._shape(name, FREE_SIDE)
        centre = self.polys[first].mean(axis=0)
        r_first = float(np.linalg.norm(self.polys[first] - centre, axis=1).max())
        r_shape = float(np.linalg.norm(shape, axis=1).max())
        return name, shape, r_first, r_shape, centre

    def stack(self) -> bool:
        first = self.free()
        if first is None:
            return False
        name, shape, ra, rb, centre = self._partner_shape("stack", first)
        amask = self.masks[first]
        area = int(amask.sum())
        others = self._blocked_without(first)
        for _ in range(_TRIES):
            t = self.rng.uniform(0.0, 2.0 * math.pi)
            d = self.rng.uniform(0.35, 0.75) * (ra + rb)
            poly = shape + centre + d * np.array([math.cos(t), math.sin(t)])
            if not self._in_image(poly):
                continue
            mask = self._mask(poly)
            inter = int(np.count_nonzero(mask & amask))
            own = int(mask.sum())
            if (
                inter >= 0.12 * min(area, own)
                and area - inter >= MIN_VISIBLE * area
                and own - inter >= 0.3 * own
                and not np.any(mask & others)
            ):
                self._add(poly, mask, CLASS_NAMES.index(name), (first,))
                return True
        return True

    def touch(self) -> bool:
        first = self.free()
        if first is None:
            return False
        name, shape, ra, rb, centre = self._partner_shape("touch", first)
        amask = self.masks[first]
        azone = _dilate(amask, TOUCH_PX)
        others = self._blocked_without(first)
        for _ in range(_TRIES // 4):
            t = self.rng.uniform(0.0, 2.0 * math.pi)
            u = np.array([math.cos(t), math.sin(t)])
            lo, hi = 0.0, ra + rb + 2.0 * TOUCH_PX + 2.0  # hi: disjoint discs, no overlap
            for _step in range(12):  # smallest distance without a shared pixel, to 1/400 px
                mid = 0.5 * (lo + hi)
                if np.any(self._mask(shape + centre + mid * u) & amask):
                    lo = mid
                else:
                    hi = mid
            poly = shape + centre + hi * u
            if not self._in_image(poly):
                continue
            mask = self._mask(poly)
            if np.any(mask & amask) or not np.any(mask & azone) or np.any(mask & others):
                continue
            self._add(poly, mask, CLASS_NAMES.index(name), (first,))
            return True
        return True


def compose_scene(seed: int, index: int, image_size: int = 128) -> RelationScene:
    """Render scene ``index`` of the relation data with ``seed`` (independent of other scenes)."""
    rng = np.random.default_rng([seed, index, 1])
    c = _Composer(rng, image_size)
    target = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    attempts = 0
    while len(c.masks) < target and attempts < 3 * MAX_OBJECTS:
        attempts += 1
        left = target - len(c.masks)
        group = "free" if left == 1 else GROUPS[int(rng.choice(len(GROUPS), p=GROUP_PROBS))]
        placed = getattr(c, group)()
        if group != "free" and placed is False and c.free(side=(FREE_SIDE[0], 24.0)) is None:
            break
        if group == "free" and placed is None:
            c.free(side=(FREE_SIDE[0], 20.0))
    for _ in range(_TRIES):  # the rare crowded scene: small objects up to MIN_OBJECTS
        if len(c.masks) >= MIN_OBJECTS:
            break
        c.free(side=(FREE_SIDE[0], FREE_SIDE[0] + 2.0))
    canvas = np.clip(c.background + 0.5, 0, 255).astype(np.uint8)
    for mask, colour in zip(c.masks, c.colours):
        canvas[mask] = COLOURS[colour]
    sigma = float(rng.uniform(1.5, 4.0)) if rng.random() < NOISY_FRACTION else 0.0
    objects = [
        SceneObject(label=lab, mask=m, depth=k, colour=col)
        for k, (lab, m, col) in enumerate(zip(c.labels, c.masks, c.colours))
    ]
    return RelationScene(add_pixel_noise(rng, canvas, sigma), objects, list(c.polys))


# ------------------------------------------------------------------------------- annotation
def _choose(preds: tuple[str, ...], subject_class: str, r: float) -> str:
    want, prob = CLASS_PREFERENCE[subject_class]
    if r < prob:
        for p in preds[1:]:
            if p == want or (want == "spatial" and p in SPATIAL):
                return p
    return preds[0]


def annotate(
    labels: Sequence[int],
    relations: Sequence[tuple[int, int, tuple[str, ...]]],
    rng: np.random.Generator,
    *,
    max_relations: int = 6,
    generic_prob: float = 0.3,
    unannotated: float = 0.3,
) -> list[tuple[int, int, str]]:
    """The annotation step (module docstring): ``(subject, object, predicate name)`` per kept
    relation, in the order of ``relations``. ``labels`` are 0-based classes of the objects."""
    keep = [rel for rel in relations if rng.random() >= unannotated]
    if len(keep) > max_relations:
        w = np.array([SALIENCE[preds[0]] for _, _, preds in keep])
        idx = rng.choice(len(keep), size=max_relations, replace=False, p=w / w.sum())
        keep = [keep[i] for i in sorted(int(i) for i in idx)]
    out = []
    for s, o, preds in keep:
        cls = CLASS_NAMES[labels[s]]
        r_pref, r_gen = rng.random(), rng.random()
        pred = _choose(preds, cls, r_pref)
        p_gen = min(1.0, generic_prob * GENERIC_WEIGHT[pred] * GENERIC_CLASS_WEIGHT[cls])
        out.append((s, o, GENERIC_OF[pred] if r_gen < p_gen else pred))
    return out


# ------------------------------------------------------------------------------ the dataset
def _make_image(task: tuple) -> dict[str, Any]:
    """Worker: compose, save and annotate image ``index``; plain data back to the parent."""
    seed, index, size, path, ann_opts = task
    scene = compose_scene(seed, index, size)
    Image.fromarray(scene.image, "RGB").save(path, format="PNG", compress_level=1)
    rels = scene_relations(scene.objects)
    labels = [o.label for o in scene.objects]
    ann = annotate(labels, rels, np.random.default_rng([seed, index, 2]), **ann_opts)
    pid = {p: i + 1 for i, p in enumerate(PREDICATES)}
    return {
        "objects": [
            {
                "category_id": o.label + 1,
                "box": list(o.box),
                "area": o.area,
                "colour": o.colour,
                "polygon": [round(float(v), 2) for v in poly.reshape(-1)],
            }
            for o, poly in zip(scene.objects, scene.polygons)
        ],
        "true": [[s, o, [pid[p] for p in preds]] for s, o, preds in rels],
        "annotated": [[s, o, pid[p]] for s, o, p in ann],
    }


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_fraction(v: object, upper_open: bool = False) -> bool:
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or math.isnan(float(v)):
        return False
    return 0.0 <= float(v) < 1.0 if upper_open else 0.0 <= float(v) <= 1.0


def _check_options(o: dict[str, Any], workers: int | None) -> None:
    def bad(msg: str) -> SynthOptionError:
        return SynthOptionError(f"data synth --task relations: {msg}")

    if not _is_int(o["num_images"]) or o["num_images"] < 2:
        raise bad(f"--num-images must be an integer >= 2 (got {o['num_images']!r})")
    if not _is_int(o["image_size"]) or not 96 <= o["image_size"] <= 1024:
        raise bad(f"--image-size must be an integer in 96..1024 pixels (got {o['image_size']!r})")
    for key, flag in (("val_fraction", "--val-fraction"), ("test_fraction", "--test-fraction")):
        if not _is_fraction(o[key], upper_open=True):
            raise bad(f"{flag} must lie in [0, 1) (got {o[key]!r})")
    for key, flag in (
        ("generic_prob", "--generic-prob"),
        ("unannotated", "--unannotated"),
        ("zero_shot", "--zero-shot"),
    ):
        half_open = key == "unannotated"
        if not _is_fraction(o[key], upper_open=half_open):
            raise bad(f"{flag} must lie in [0, 1{')' if half_open else ']'} (got {o[key]!r})")
    if not _is_int(o["max_relations"]) or o["max_relations"] < 1:
        raise bad(f"--max-relations must be an integer >= 1 (got {o['max_relations']!r})")
    if not _is_int(o["seed"]) or o["seed"] < 0:
        raise bad(f"--seed must be an integer >= 0 (got {o['seed']!r})")
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise bad(f"--workers must be an integer >= 1 (got {workers!r})")


def split_counts(num_images: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """``(n_split0, n_val_target)``: images in split 0 (train + val) and the requested val size.
    Test gets ``round(n * test_fraction)`` images, at least 1 if the fraction is > 0; split 0
    keeps at least one image, and val is at most ``n_split0 - 1``."""
    n_test = int(round(num_images * test_fraction))
    if test_fraction > 0:
        n_test = max(n_test, 1)
    n_test = min(n_test, num_images - 1)
    n0 = num_images - n_test
    n_val = int(round(n0 * val_fraction))
    if val_fraction > 0 and n0 >= 2:
        n_val = max(n_val, 1)
    return n0, min(n_val, n0 - 1)


def image_ids(num_images: int) -> list[int]:
    """Image ids 1, 2, ... skipping :data:`percepta.data.vg_sgg.VG_CORRUPTED_IMAGE_IDS` (the
    official loader drops those ids, which would misalign ``image_data.json`` with the h5)."""
    from percepta.data.vg_sgg import VG_CORRUPTED_IMAGE_IDS

    skip = set(VG_CORRUPTED_IMAGE_IDS)
    out: list[int] = []
    k = 0
    while len(out) < num_images:
        k += 1
        if k not in skip:
            out.append(k)
    return out


def _triplets(img: dict[str, Any], rels: list[list[int]]) -> list[tuple[int, int, int]]:
    """(subject class, predicate, object class), classes 0-based, predicate 1-based."""
    cats = [o["category_id"] - 1 for o in img["objects"]]
    return [(cats[s], p, cats[o]) for s, o, p in rels]


def _zero_shot(
    results: list[dict[str, Any]], n0: int, fraction: float, seed: int
) -> list[tuple[int, int, int]]:
    """The held-out (subject class, predicate, object class) types (module docstring)."""
    c0: Counter = Counter()
    ct: Counter = Counter()
    for i, r in enumerate(results):
        (c0 if i < n0 else ct).update(_triplets(r, r["annotated"]))
    observed = sorted(set(c0) | set(ct))
    n_hold = int(round(fraction * len(observed)))
    if fraction > 0 and observed:
        n_hold = max(n_hold, 1)
    both = sorted((t for t in observed if t in c0 and t in ct), key=lambda t: (-c0[t] - ct[t], t))
    candidates = sorted(both[len(both) // 4 :])
    if not n_hold or not candidates:
        return []
    rng = np.random.default_rng([seed, 7919])
    pick = rng.permutation(len(candidates))[: min(n_hold, len(candidates))]
    return sorted(candidates[int(i)] for i in pick)


def _coco(split: str, entries: list[tuple[int, dict]], size: int, options: dict) -> dict:
    images, annotations = [], []
    for image_id, r in entries:
        images.append(
            {"id": image_id, "file_name": f"{image_id:012d}.png", "width": size, "height": size}
        )
        for o in r["objects"]:
            x1, y1, x2, y2 = o["box"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": o["category_id"],
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    "area": float(o["area"]),
                    "iscrowd": 0,
                    "segmentation": [o["polygon"]],
                }
            )
    return {
        "info": {
            "description": f"percepta built-in relation data ({split}): objects",
            "version": str(RELATIONS_VERSION),
            "year": 2026,
            "contributor": "percepta data synth --task relations",
            "options": options,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)
        ],
    }


def _histogram(rels: list[list[int]]) -> dict[str, int]:
    c = Counter(p for _, _, p in rels)
    return {name: c.get(i + 1, 0) for i, name in enumerate(PREDICATES)}


_SPLITS = ("train", "val", "test")
_OUR_FILES = (
    "VG-SGG.h5",
    "VG-SGG-dicts.json",
    "image_data.json",
    "zero_shot_triplets.json",
    "truth.json",
    "README.txt",
)


def _prepare_folder(out: Path) -> None:
    """Remove a previous relation dataset's files; refuse to mix with anything else."""
    if owned_by(out, "relations"):
        for p in (out / "images").glob("*.png") if (out / "images").is_dir() else ():
            p.unlink()
        for split in ("train", "val", "test"):
            (out / "annotations" / f"instances_{split}.json").unlink(missing_ok=True)
        for name in _OUR_FILES:
            (out / name).unlink(missing_ok=True)
        return
    refuse_foreign_files(out, ("annotations", "images"))
    for name in ("VG-SGG.h5", "VG-SGG-dicts.json", "image_data.json"):
        if (out / name).exists():
            raise DataError(
                f"{out / name} exists and percepta did not generate it (no {META_NAME} beside "
                "it); choose an empty or new --out folder"
            )


def _existing(out: Path, options: dict[str, Any]) -> dict[str, Any] | None:
    """The stored summary if ``out`` holds a complete dataset generated with ``options``."""
    try:
        meta = json.loads((out / "synth_meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("options") != options or not meta.get("complete"):
        return None
    summary = meta.get("summary") or {}
    files = [out / "annotations" / f"instances_{s}.json" for s in ("train", "val", "test")]
    files += [out / name for name in _OUR_FILES]
    if not all(f.is_file() for f in files):
        return None
    folder = out / "images"
    n_png = sum(1 for _ in folder.glob("*.png")) if folder.is_dir() else 0
    if n_png != options["num_images"]:
        return None
    return summary


def _write_meta(out: Path, options: dict[str, Any], summary: dict[str, Any] | None) -> None:
    meta = {"options": options, "complete": summary is not None, "summary": summary or {}}
    (out / "synth_meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def _run(tasks: list[tuple], workers: int, progress: bool) -> list[dict[str, Any]]:
    return ordered_map(_make_image, tasks, workers, progress, "synth relations", unit="img")


def generate_relations(
    out: Path | str,
    num_images: int = 800,
    image_size: int = 128,
    val_fraction: float = 0.2,
    test_fraction: float = 0.25,
    max_relations: int = 6,
    generic_prob: float = 0.3,
    unannotated: float = 0.3,
    zero_shot: float = 0.07,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the built-in relation dataset to ``out`` (files and rules: the module docstring).

    If ``out`` already holds a complete dataset generated with the same options
    (``synth_meta.json``), it is left as is (``"skipped": True``).

    Args:
        out: output folder (created if needed).
        num_images: images in total (train + val + test), >= 2.
        image_size: square image side in pixels, 96..1024.
        val_fraction: share of the split-0 (train + val) images in val, in [0, 1).
        test_fraction: share of all images in the test split, in [0, 1).
        max_relations: annotated relations per image at most (K).
        generic_prob: base probability of writing a generic predicate, in [0, 1].
        unannotated: probability that a true relation is left unannotated, in [0, 1).
        zero_shot: share of the observed triplet types held out of split 0, in [0, 1].
        seed: dataset seed (>= 0).
        workers: processes (``None``: all cores); never changes the output.
        progress: show a tqdm progress bar.

    Returns:
        ``{"out", "skipped", "seconds", "options", "splits": {split: {"images", "objects",
        "relations"}}, "num_val_im", "predicate_counts": {"annotated", "train", "val", "test",
        "truth"}, "zero_shot": {"held_out", "triplets"}, "files": {name: path}}``.

    Raises:
        SynthOptionError: an option is out of range.
        DataError: ``out`` holds files of a dataset that this generator did not write.
    """
    options = {
        "task": "relations",
        "version": RELATIONS_VERSION,
        "num_images": num_images,
        "image_size": image_size,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "max_relations": max_relations,
        "generic_prob": generic_prob,
        "unannotated": unannotated,
        "zero_shot": zero_shot,
        "seed": seed,
    }
    _check_options(options, workers)
    for key in ("num_images", "image_size", "max_relations", "seed"):
        options[key] = int(options[key])
    for key in ("val_fraction", "test_fraction", "generic_prob", "unannotated", "zero_shot"):
        options[key] = float(options[key])
    out = Path(out)
    start = time.perf_counter()
    stored = _existing(out, options)
    if stored is not None:
        return _result(out, True, start, options, stored)

    _prepare_folder(out)
    for sub in ("annotations", "images"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _write_meta(out, options, None)  # marks the folder as ours, not complete yet
    n, size = options["num_images"], options["image_size"]
    ann_opts = {k: options[k] for k in ("max_relations", "generic_prob", "unannotated")}
    ids = image_ids(n)
    tasks = [
        (options["seed"], i, size, str(out / "images" / f"{ids[i]:012d}.png"), ann_opts)
        for i in range(n)
    ]
    results = _run(tasks, min(workers or os.cpu_count() or 1, n), progress)
    summary = _write_dataset(out, options, results)
    (out / "README.txt").write_text(_readme(options, summary))
    _write_meta(out, options, summary)  # written last: marks a complete dataset
    return _result(out, False, start, options, summary)


def _write_dataset(out: Path, options: dict[str, Any], results: list[dict]) -> dict[str, Any]:
    from percepta.data.vg_sgg import SGGImage, write_vg_sgg

    n, size = options["num_images"], options["image_size"]
    ids = image_ids(n)
    n0, n_val_target = split_counts(n, options["val_fraction"], options["test_fraction"])
    held = _zero_shot(results, n0, options["zero_shot"], options["seed"])
    held_set = set(held)
    final: list[list[list[int]]] = []  # the annotations written to the files
    for i, r in enumerate(results):
        rels = r["annotated"]
        if i < n0 and held_set:
            trip = _triplets(r, rels)
            rels = [rel for rel, t in zip(rels, trip) if t not in held_set]
        final.append(rels)
    val = [i for i in range(n0) if final[i]][:n_val_target]
    val_set = set(val)
    train = [i for i in range(n0) if i not in val_set]
    test = list(range(n0, n))
    split_of = {**{i: "val" for i in val}, **{i: "train" for i in train}}
    split_of.update({i: "test" for i in test})

    seen0 = {t for i in range(n0) for t in _triplets(results[i], final[i])}
    test_types = {t for i in test for t in _triplets(results[i], final[i])}
    unseen = sorted(test_types - seen0)
    zs = sorted(held_set | set(unseen))
    zs_set = set(zs)
    zs_rows = [[s, o, p] for s, p, o in zs]  # evaluator order: subject, object, predicate
    (out / "zero_shot_triplets.json").write_text(json.dumps(zs_rows) + "\n")

    for split, members in (("train", train), ("val", val), ("test", test)):
        coco = _coco(split, [(ids[i], results[i]) for i in members], size, options)
        text = json.dumps(coco, separators=(",", ":"))
        (out / "annotations" / f"instances_{split}.json").write_text(text)

    sgg = []
    for i in val + train + test:  # val first: the official loader's num_val_im carves it out
        r = results[i]
        objs = r["objects"]
        attrs = np.zeros((len(objs), 10), dtype=np.int64)
        attrs[:, 0] = [COLOUR_NAMES.index(o["colour"]) + 1 for o in objs]
        sgg.append(
            SGGImage(
                image_id=ids[i],
                file_name=f"{ids[i]:012d}.png",
                width=size,
                height=size,
                boxes=np.array([o["box"] for o in objs], dtype=np.float64).reshape(-1, 4),
                labels=np.array([o["category_id"] for o in objs], dtype=np.int64),
                relations=np.array(final[i], dtype=np.int64).reshape(-1, 3),
                split=2 if i >= n0 else 0,
                attributes=attrs,
            )
        )
    files = write_vg_sgg(out, sgg, CLASS_NAMES, PREDICATES, COLOUR_NAMES)

    truth = {
        "description": "percepta built-in relation data: the generator's true relations",
        "object_classes": list(CLASS_NAMES),
        "predicates": list(PREDICATES),
        "fine_predicates": list(FINE_PREDICATES),
        "generic_of": GENERIC_OF,
        "colours": list(COLOUR_NAMES),
        "conventions": (
            "category_id and predicate ids 1-based; box [x1, y1, x2, y2) integer pixel edges; "
            "true: [subject, object, [every fine predicate that holds, the pair's fine predicate "
            "first]]; annotated: the annotation step's output before the zero-shot removal"
        ),
        "images": [
            {
                "image_id": ids[i],
                "file_name": f"images/{ids[i]:012d}.png",
                "split": split_of[i],
                "objects": [
                    {k: o[k] for k in ("category_id", "box", "area", "colour")}
                    for o in r["objects"]
                ],
                "true": r["true"],
                "annotated": r["annotated"],
            }
            for i, r in enumerate(results)
        ],
    }
    (out / "truth.json").write_text(json.dumps(truth, separators=(",", ":")) + "\n")

    def stats(members: list[int]) -> dict[str, int]:
        return {
            "images": len(members),
            "objects": sum(len(results[i]["objects"]) for i in members),
            "relations": sum(len(final[i]) for i in members),
            "images_without_relations": sum(1 for i in members if not final[i]),
        }

    return {
        "splits": {"train": stats(train), "val": stats(val), "test": stats(test)},
        "num_val_im": len(val),
        "true_relations": sum(len(r["true"]) for r in results),
        "predicate_counts": {
            "annotated": _histogram([rel for r in results for rel in r["annotated"]]),
            "train": _histogram([rel for i in train for rel in final[i]]),
            "val": _histogram([rel for i in val for rel in final[i]]),
            "test": _histogram([rel for i in test for rel in final[i]]),
            "truth": _histogram([[s, o, ps[0]] for r in results for s, o, ps in r["true"]]),
        },
        "zero_shot": {
            "held_out": [[CLASS_NAMES[s], PREDICATES[p - 1], CLASS_NAMES[o]] for s, p, o in held],
            "unseen_in_split0": len(unseen),
            "triplets": zs_rows,
            "triplets_vg_labels": [[s + 1, o + 1, p] for s, o, p in zs_rows],
            "test_relations_zero_shot": sum(
                1 for i in test for t in _triplets(results[i], final[i]) if t in zs_set
            ),
        },
        "files": {k: Path(v).name for k, v in files.items()},
    }


def _result(
    out: Path, skipped: bool, start: float, options: dict[str, Any], summary: dict[str, Any]
) -> dict[str, Any]:
    result = {
        "out": str(out),
        "skipped": skipped,
        "seconds": time.perf_counter() - start,
        "options": options,
        **json.loads(json.dumps(summary)),
    }
    result["files"] = {
        "images": str(out / "images"),
        **{f"coco_{s}": str(out / "annotations" / f"instances_{s}.json") for s in _SPLITS},
        **{name: str(out / name) for name in _OUR_FILES},
        "synth_meta": str(out / "synth_meta.json"),
    }
    return result


def histogram_lines(counts: dict[str, int]) -> list[str]:
    """``"  near         1234  31.2 %"`` lines, most frequent first (ties in file order)."""
    total = max(1, sum(counts.values()))
    order = sorted(counts, key=lambda p: (-counts[p], PREDICATES.index(p)))
    return [f"  {p:<15}{counts[p]:>7}  {100.0 * counts[p] / total:5.1f} %" for p in order]


def _readme(options: dict[str, Any], summary: dict[str, Any]) -> str:
    o = options
    zs = summary["zero_shot"]
    lines = [
        "percepta built-in relation dataset (procedural; regenerate instead of copying)",
        "",
        f"generator: percepta.data.synthetic.relations, version {RELATIONS_VERSION}",
        "command:   percepta data synth --task relations --out <this folder> "
        f"--num-images {o['num_images']} --image-size {o['image_size']} --val-fraction "
        f"{o['val_fraction']} --test-fraction {o['test_fraction']} --max-relations "
        f"{o['max_relations']} --generic-prob {o['generic_prob']} --unannotated "
        f"{o['unannotated']} --zero-shot {o['zero_shot']} --seed {o['seed']}",
        "The files depend only on these options (not on the number of worker processes).",
        "",
        "files: images/*.png; annotations/instances_{train,val,test}.json (COCO objects);",
        "VG-SGG.h5 + VG-SGG-dicts.json + image_data.json (scene graphs, Scene-Graph-Benchmark",
        "format; split 0 = train + val, 2 = test; val = the first num_val_im split-0 images);",
        "zero_shot_triplets.json ([subject class, object class, predicate]: classes 0-based as",
        "percepta targets, predicates 1-based); truth.json (every true fine relation per image);",
        "synth_meta.json (options, the numbers below).",
        "",
        f"num_val_im = {summary['num_val_im']}  (set it in a VG-SGG dataset config)",
    ]
    for split, s in summary["splits"].items():
        lines.append(
            f"{split:<5}: {s['images']} images, {s['objects']} objects, {s['relations']} "
            f"annotated relations ({s['images_without_relations']} images without any)"
        )
    lines += [
        f"true relations (all images): {summary['true_relations']}",
        "",
        f"predicates: {len(FINE_PREDICATES)} fine (" + ", ".join(FINE_PREDICATES) + "),",
        f"{len(GENERIC_PREDICATES)} generic (" + ", ".join(GENERIC_PREDICATES) + ").",
        "annotated predicate histogram (all images, before the zero-shot removal):",
        *histogram_lines(summary["predicate_counts"]["annotated"]),
        "true fine predicate histogram (the first predicate of every related pair):",
        *histogram_lines({p: summary["predicate_counts"]["truth"][p] for p in FINE_PREDICATES}),
        "",
        f"zero-shot: {len(zs['held_out'])} triplet types held out of split 0 (train + val), "
        f"{zs['unseen_in_split0']} more never annotated there;",
        f"{zs['test_relations_zero_shot']} test relations are zero-shot. Held out (subject, "
        "predicate, object):",
        *[f"  {s} / {p} / {ob}" for s, p, ob in zs["held_out"]],
    ]
    return "\n".join(lines) + "\n"
