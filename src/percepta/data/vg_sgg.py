"""Visual-Genome scene-graph files ("VG-SGG"): write, read, statistics for the frequency bias.

The format is the one of the VG150 release used by every SGG codebase (Xu et al., "Scene Graph
Generation by Iterative Message Passing", CVPR 2017, ``vg_to_roidb.py``) and read by the
official loader of Scene-Graph-Benchmark.pytorch (Tang et al., CVPR 2020,
``maskrcnn_benchmark/data/datasets/visual_genome.py`` @ 6f75881a). Three files:

* ``VG-SGG*.h5`` -- one row per image / object / relation (keys in :data:`H5_KEYS`): ``split``
  (0 = train/val, 2 = test), the **inclusive** row ranges ``img_to_first_box`` ..
  ``img_to_last_box`` and ``img_to_first_rel`` .. ``img_to_last_rel`` (-1/-1 when empty),
  ``labels`` (N, 1) object classes 1..C, ``boxes_1024`` / ``boxes_512`` (N, 4) int32
  ``(cx, cy, w, h)`` in a frame whose longer image side is 1024 (512) px, ``relationships``
  (M, 2) **global** box rows (subject, object), ``predicates`` (M, 1) 1..P, ``attributes``
  (N, 10) 0-padded attribute ids, ``active_object_mask`` (N, 1) (not read by the loader).
* ``VG-SGG-dicts*.json`` -- ``label_to_idx`` / ``idx_to_label``, ``predicate_to_idx`` /
  ``idx_to_predicate``, ``attribute_to_idx`` / ``idx_to_attribute`` and the ``*_count`` maps.
* ``image_data.json`` -- one record per h5 image, in h5 order: ``image_id``, ``width``,
  ``height`` (+ ``url``, ``coco_id``, ``flickr_id``). The official loader names the file
  ``<image_id>.jpg``; files written by :func:`write_vg_sgg` add ``file_name`` (relative to the
  image folder), which :func:`load_image_filenames` prefers.

What the official loader does, measured by running it (``shared/notes/sgg_official_semantics.md``)
and reproduced exactly here (tests compare with its recorded outputs):

* :func:`load_graphs` selects ``split == 2`` for test and ``split == 0`` for train/val, keeps
  images with boxes (and with relations if ``filter_empty_rels``), truncates to ``num_im``,
  then val = the first ``num_val_im`` images and train = the rest (both = all when
  ``num_val_im <= 0``). Boxes are converted **in the stored dtype**: ``x1 = cx - w/2`` written
  back into the int32 array (truncation toward zero), then ``x2 = x1 + w``. Relations are
  (subject, object, predicate) with image-local indices, duplicates kept. ``filter_non_overlap``
  (train only) keeps relations whose boxes have IoU > 0 under the ``+1`` pixel convention
  (``boxlist_iou``, float32) and drops images left without any.
* :func:`vg_statistics` is ``get_VG_statistics``: its own train split (``num_val_im=5000``,
  ``filter_empty_rels`` and ``filter_non_overlap`` on, duplicates counted); ``fg[s, o, p]``
  counts relations, ``bg[s, o]`` counts ordered pairs i != j of boxes with a strictly positive
  intersection (no ``+1``), or all ordered pairs when an image has none. It is vectorised over
  images (chunks of box pairs) instead of the official per-image Python loop, and needs no
  image. :func:`predicate_log_distribution` is ``get_statistics``'s ``pred_dist``.

Third-party files (``shared/data/vg_sgg_ships``, written by another team's tooling) differ in
ways the official loader does not survive; :func:`read_roidb` tolerates them and records each in
``Roidb.layout``: no ``boxes_512`` (never read), ``predicates`` / ``labels`` stored 1-D, no
``attributes`` key or an empty one (then every object gets 10 zero attributes, int64),
``boxes_1024`` stored as float32 (then the conversion does not truncate, as the official code
would do on such a file), a dicts json without ``attribute_to_idx`` (no attributes), and
``image_id`` stored as a string. Everything else that is malformed raises one
:class:`~percepta.errors.DataError` naming the file, the h5 key and the image index.

numpy + h5py only (no torch), so ``percepta data check`` starts fast.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from percepta.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from percepta.errors import ConfigError, DataError

__all__ = [
    "BOX_SCALE",
    "H5_KEYS",
    "VG_CORRUPTED_IMAGE_IDS",
    "SGGImage",
    "encode_boxes",
    "write_vg_sgg",
    "load_info",
    "Roidb",
    "RoidbIssue",
    "read_roidb",
    "roidb_issues",
    "convert_boxes",
    "select_images",
    "expand_ranges",
    "relation_overlap",
    "load_graphs",
    "load_image_filenames",
    "vg_statistics",
    "statistics_from_roidb",
    "predicate_log_distribution",
    "statistics_cached",
    "default_cache_dir",
]

#: The scale of ``boxes_1024``: the longer image side maps to 1024 (official ``BOX_SCALE``).
BOX_SCALE = 1024
#: Every key of the VG150 h5 files (``active_object_mask`` and ``boxes_512`` are never read).
H5_KEYS = (
    "split",
    "img_to_first_box",
    "img_to_last_box",
    "img_to_first_rel",
    "img_to_last_rel",
    "labels",
    "boxes_1024",
    "boxes_512",
    "relationships",
    "predicates",
    "attributes",
    "active_object_mask",
)
_REQUIRED_KEYS = (
    "split",
    "img_to_first_box",
    "img_to_last_box",
    "img_to_first_rel",
    "img_to_last_rel",
    "labels",
    "boxes_1024",
    "relationships",
    "predicates",
)
#: VG images the official ``load_image_filenames`` skips (``<id>.jpg`` is corrupted in VG).
VG_CORRUPTED_IMAGE_IDS = (1592, 1722, 4616, 4617)
_SPLITS = ("train", "val", "test")
_NUM_ATTRIBUTE_SLOTS = 10


# ============================================================================================
# writer


@dataclass
class SGGImage:
    """One image of a scene-graph dataset, as :func:`write_vg_sgg` takes it.

    ``boxes``: (n, 4) float ``x1 y1 x2 y2`` in image pixels; ``labels``: (n,) object classes
    1..C (0 is background, never an object); ``relations``: (m, 3) ``subject, object``
    (0-based into ``boxes``) and ``predicate`` (1..P); ``split``: 0 = train/val, 2 = test (the
    official convention; the loader carves val out of split 0); ``attributes``: (n, 10) ids
    1..A, 0 = none.
    """

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    relations: np.ndarray
    split: int = 0
    attributes: np.ndarray | None = None


def encode_boxes(
    boxes_xyxy: np.ndarray,
    width: int | np.ndarray,
    height: int | np.ndarray,
    scale: int = BOX_SCALE,
) -> np.ndarray:
    """Pixel ``x1 y1 x2 y2`` -> int32 ``(cx, cy, w, h)`` at ``scale / max(width, height)``.

    ``width`` / ``height``: the image size, one for all boxes or one per box. Corners are
    clipped to the image, scaled and rounded to the nearest integer; ``w, h >= 1``. The centre
    is ``x1 + ceil(w / 2)`` (not VG's ``x1 + floor(w / 2)``), so that the loader's
    ``trunc(cx - w / 2)`` gives back ``x1`` exactly for odd widths too. Hence write ->
    :func:`load_graphs` -> ``box / 1024 * max(w, h)`` is exact whenever
    ``boxes * 1024 / max(w, h)`` are integers (e.g. integer boxes on a 128- or 256-px image).
    """
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    width = np.asarray(width, dtype=np.float64)
    height = np.asarray(height, dtype=np.float64)
    s = scale / np.maximum(width, height)
    x1 = np.rint(np.clip(b[:, 0], 0, width) * s)
    x2 = np.rint(np.clip(b[:, 2], 0, width) * s)
    y1 = np.rint(np.clip(b[:, 1], 0, height) * s)
    y2 = np.rint(np.clip(b[:, 3], 0, height) * s)
    w = np.maximum(x2 - x1, 1)
    h = np.maximum(y2 - y1, 1)
    return np.stack([x1 + np.ceil(w / 2), y1 + np.ceil(h / 2), w, h], axis=1).astype(np.int32)


def _check_names(names: Sequence[str], what: str) -> list[str]:
    names = list(names)
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n:
            raise DataError(f"{what} [{i}]: a class name must be a non-empty string, got {n!r}")
        if n == "__background__":
            raise DataError(f"{what} [{i}]: '__background__' is implicit (index 0); leave it out")
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DataError(f"{what}: duplicate names {sorted(dup)}")
    return names


def _int_array(value: Any, shape_tail: tuple[int, ...], rec: str, what: str) -> np.ndarray:
    a = np.asarray(value)
    if a.size == 0:
        return np.zeros((0, *shape_tail), dtype=np.int64)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise DataError(f"{rec}: {what} must be integers")
    elif a.dtype.kind not in "iu":
        raise DataError(f"{rec}: {what} must be integers, got dtype {a.dtype}")
    if a.ndim != 1 + len(shape_tail) or a.shape[1:] != shape_tail:
        raise DataError(f"{rec}: {what} must have shape (n, {', '.join(map(str, shape_tail))})")
    return a.astype(np.int64)


def _validate_image(
    k: int, im: SGGImage, num_classes: int, num_predicates: int, num_attributes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rec = f"images[{k}] (image_id {im.image_id!r})"
    if not isinstance(im.image_id, (int, np.integer)) or isinstance(im.image_id, bool):
        raise DataError(f"{rec}: image_id must be an integer")
    if int(im.image_id) in VG_CORRUPTED_IMAGE_IDS:
        raise DataError(
            f"{rec}: image ids {VG_CORRUPTED_IMAGE_IDS} are skipped by the official "
            "load_image_filenames (corrupted VG images), which would misalign image_data.json "
            "with the h5; number the images differently"
        )
    if not isinstance(im.file_name, str) or not im.file_name:
        raise DataError(f"{rec}: file_name must be a non-empty string")
    for name in ("width", "height"):
        v = getattr(im, name)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
            raise DataError(f"{rec}: {name} must be a positive integer, got {v!r}")
    if im.split not in (0, 2):
        raise DataError(
            f"{rec}: split must be 0 (train/val) or 2 (test), got {im.split!r} "
            "(the official loader never reads other values)"
        )
    boxes = np.asarray(im.boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"{rec}: boxes must have shape (n, 4), got {boxes.shape}")
    if not np.all(np.isfinite(boxes)):
        raise DataError(f"{rec}: boxes have NaN or infinite values")
    n = len(boxes)
    clipped_w = np.minimum(boxes[:, 2], im.width) - np.maximum(boxes[:, 0], 0)
    clipped_h = np.minimum(boxes[:, 3], im.height) - np.maximum(boxes[:, 1], 0)
    bad = np.flatnonzero((clipped_w <= 0) | (clipped_h <= 0))
    if bad.size:
        raise DataError(
            f"{rec}: box {int(bad[0])} {boxes[bad[0]].tolist()} has no area inside the "
            f"{im.width}x{im.height} image (x1 < x2 and y1 < y2 are needed)"
        )
    labels = _int_array(im.labels, (), rec, "labels").reshape(-1)
    if len(labels) != n:
        raise DataError(f"{rec}: {len(labels)} labels for {n} boxes")
    bad = np.flatnonzero((labels < 1) | (labels > num_classes))
    if bad.size:
        raise DataError(
            f"{rec}: label {int(labels[bad[0]])} of box {int(bad[0])} is outside "
            f"1..{num_classes} (the object classes, background excluded)"
        )
    rels = _int_array(im.relations, (3,), rec, "relations")
    bad = np.flatnonzero((rels[:, :2] < 0).any(1) | (rels[:, :2] >= n).any(1))
    if bad.size:
        raise DataError(
            f"{rec}: relation {int(bad[0])} {rels[bad[0]].tolist()} points outside the "
            f"image's {n} boxes"
        )
    bad = np.flatnonzero(rels[:, 0] == rels[:, 1])
    if bad.size:
        raise DataError(
            f"{rec}: relation {int(bad[0])} {rels[bad[0]].tolist()} relates a box to itself "
            "(VG-SGG files have subject != object; relation heads never propose such pairs)"
        )
    bad = np.flatnonzero((rels[:, 2] < 1) | (rels[:, 2] > num_predicates))
    if bad.size:
        raise DataError(
            f"{rec}: predicate {int(rels[bad[0], 2])} of relation {int(bad[0])} is outside "
            f"1..{num_predicates}"
        )
    if im.attributes is None:
        attrs = np.zeros((n, _NUM_ATTRIBUTE_SLOTS), dtype=np.int64)
    else:
        attrs = _int_array(im.attributes, (_NUM_ATTRIBUTE_SLOTS,), rec, "attributes")
        if len(attrs) != n:
            raise DataError(f"{rec}: {len(attrs)} attribute rows for {n} boxes")
        if attrs.size and (attrs.min() < 0 or attrs.max() > num_attributes):
            raise DataError(f"{rec}: attributes must be in 0..{num_attributes} (0 = none)")
    return boxes, labels, rels, attrs


def _first_last(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    start = np.cumsum(counts) - counts
    first = np.where(counts > 0, start, -1)
    last = np.where(counts > 0, start + counts - 1, -1)
    return first.astype(np.int32), last.astype(np.int32)


def _dicts(names: list[str], key: str, idx_key: str) -> dict[str, Any]:
    return {
        key: {n: i + 1 for i, n in enumerate(names)},
        idx_key: {str(i + 1): n for i, n in enumerate(names)},
    }


def write_vg_sgg(
    out_dir: str | os.PathLike,
    images: Sequence[SGGImage],
    object_classes: Sequence[str],
    predicate_classes: Sequence[str],
    attribute_classes: Sequence[str] = (),
    *,
    prefix: str = "VG-SGG",
) -> dict[str, Path]:
    """Write ``<prefix>.h5``, ``<prefix>-dicts.json`` and ``image_data.json`` into ``out_dir``.

    Class lists come **without** background: name ``i`` gets index ``i + 1`` in the files.
    The h5 holds every key of :data:`H5_KEYS` with the VG150 dtypes (int32 ranges, boxes and
    relationships; int64 labels, predicates and attributes; bool active_object_mask), boxes
    encoded by :func:`encode_boxes` at 1024 and 512. Images without boxes get
    ``img_to_first_box = img_to_last_box = -1``; without relations ``img_to_first_rel =
    img_to_last_rel = -1`` (official convention). ``*_count`` maps count the written objects,
    predicates and attributes. ``image_data.json`` records are ``{image_id, width, height,
    url: "", coco_id: null, flickr_id: null, file_name}``. Each file is written atomically
    (temporary file + rename). Returns ``{"h5": ..., "dicts": ..., "image_data": ...}``.

    Raises :class:`DataError` naming the image for invalid input: boxes without area inside
    the image, labels / predicates / attributes outside the vocabularies, relations outside
    the image's boxes or relating a box to itself, split values other than 0 / 2, duplicate
    image ids, and the 4 VG image ids the official loader skips (:data:`VG_CORRUPTED_IMAGE_IDS`).
    """
    import h5py

    objs = _check_names(object_classes, "object_classes")
    preds = _check_names(predicate_classes, "predicate_classes")
    attrs_names = _check_names(attribute_classes, "attribute_classes")
    if not objs or not preds:
        raise DataError("write_vg_sgg: object_classes and predicate_classes must not be empty")
    seen: dict[int, int] = {}
    boxes_l, size_l, labels_l, rels_l, attrs_l = [], [], [], [], []
    nbox, nrel, split = [], [], []
    offset = 0
    for k, im in enumerate(images):
        boxes, labels, rels, attrs = _validate_image(k, im, len(objs), len(preds), len(attrs_names))
        if int(im.image_id) in seen:
            raise DataError(
                f"images[{k}]: duplicate image_id {im.image_id} (also images[{seen[im.image_id]}])"
            )
        seen[int(im.image_id)] = k
        boxes_l.append(boxes)
        size_l.append(np.broadcast_to([im.width, im.height], (len(boxes), 2)))
        labels_l.append(labels)
        attrs_l.append(attrs)
        rel = np.empty((len(rels), 3), dtype=np.int64)
        rel[:, :2] = rels[:, :2] + offset
        rel[:, 2] = rels[:, 2]
        rels_l.append(rel)
        offset += len(boxes)
        nbox.append(len(boxes))
        nrel.append(len(rels))
        split.append(im.split)

    def cat(parts: list[np.ndarray], shape_tail: tuple[int, ...], dtype: Any) -> np.ndarray:
        if not parts:
            return np.zeros((0, *shape_tail), dtype=dtype)
        return np.concatenate(parts).astype(dtype).reshape(-1, *shape_tail)

    boxes_all = cat(boxes_l, (4,), np.float64)
    size_all = cat(size_l, (2,), np.int64)
    labels_all = cat(labels_l, (), np.int64)
    rels_all = cat(rels_l, (3,), np.int64)
    attrs_all = cat(attrs_l, (_NUM_ATTRIBUTE_SLOTS,), np.int64)
    fb, lb = _first_last(np.asarray(nbox, dtype=np.int64))
    fr, lr = _first_last(np.asarray(nrel, dtype=np.int64))
    data = {
        "split": np.asarray(split, dtype=np.int32),
        "img_to_first_box": fb,
        "img_to_last_box": lb,
        "img_to_first_rel": fr,
        "img_to_last_rel": lr,
        "labels": labels_all.reshape(-1, 1),
        "boxes_1024": encode_boxes(boxes_all, size_all[:, 0], size_all[:, 1], BOX_SCALE),
        "boxes_512": encode_boxes(boxes_all, size_all[:, 0], size_all[:, 1], 512),
        "relationships": rels_all[:, :2].astype(np.int32),
        "predicates": rels_all[:, 2:3].astype(np.int64),
        "attributes": attrs_all,
        "active_object_mask": np.ones((len(labels_all), 1), dtype=bool),
    }
    bio = io.BytesIO()
    with h5py.File(bio, "w") as f:
        for key in H5_KEYS:
            f.create_dataset(key, data=data[key])
    out = Path(out_dir)
    paths = {
        "h5": out / f"{prefix}.h5",
        "dicts": out / f"{prefix}-dicts.json",
        "image_data": out / "image_data.json",
    }
    obj_count = np.bincount(labels_all, minlength=len(objs) + 1)
    pred_count = np.bincount(rels_all[:, 2], minlength=len(preds) + 1)
    att_count = np.bincount(attrs_all.reshape(-1), minlength=len(attrs_names) + 1)
    dicts: dict[str, Any] = {}
    dicts.update(_dicts(objs, "label_to_idx", "idx_to_label"))
    dicts.update(_dicts(preds, "predicate_to_idx", "idx_to_predicate"))
    dicts.update(_dicts(attrs_names, "attribute_to_idx", "idx_to_attribute"))
    dicts["object_count"] = {n: int(obj_count[i + 1]) for i, n in enumerate(objs)}
    dicts["predicate_count"] = {n: int(pred_count[i + 1]) for i, n in enumerate(preds)}
    dicts["attribute_count"] = {n: int(att_count[i + 1]) for i, n in enumerate(attrs_names)}
    records = [
        {
            "image_id": int(im.image_id),
            "width": int(im.width),
            "height": int(im.height),
            "url": "",
            "coco_id": None,
            "flickr_id": None,
            "file_name": im.file_name,
        }
        for im in images
    ]
    atomic_write_bytes(paths["h5"], bio.getvalue())
    atomic_write_text(paths["dicts"], json.dumps(dicts, indent=1))
    atomic_write_text(paths["image_data"], json.dumps(records))
    return paths


# ============================================================================================
# dicts json


def _read_json(path: str | os.PathLike, what: str) -> Any:
    from percepta.jsonable import read_json

    return read_json(path, what)


def _index_map(info: dict, key: str, dict_file: Any) -> dict[str, int]:
    m = info.get(key)
    if not isinstance(m, dict):
        raise DataError(f"{dict_file}: key '{key}' is missing or not an object")
    for name, idx in m.items():
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise DataError(f"{dict_file}: '{key}'[{name!r}] must be an integer, got {idx!r}")
    idx = sorted(m.values())
    if idx != list(range(1, len(m) + 1)):
        raise DataError(
            f"{dict_file}: '{key}' indices must be exactly 1..{len(m)} (0 is background), "
            f"got {idx[:5]}{'...' if len(idx) > 5 else ''}"
        )
    return dict(m)


def load_info(
    dict_file: str | os.PathLike, add_bg: bool = True
) -> tuple[list[str], list[str], list[str]]:
    """``(ind_to_classes, ind_to_predicates, ind_to_attributes)``: names sorted by index, with
    ``__background__`` at 0 when ``add_bg`` (the official ``load_info``).

    Tolerated: no ``attribute_to_idx`` (third-party files): no attributes. Refused with a
    :class:`DataError`: a missing ``label_to_idx`` / ``predicate_to_idx``, non-integer
    indices, or indices that are not exactly ``1..n`` (the official code would silently shift
    every name after a gap).
    """
    info = _read_json(dict_file, "VG-SGG dicts")
    if not isinstance(info, dict):
        raise DataError(f"{dict_file}: the dicts json must be an object")
    out = []
    for key in ("label_to_idx", "predicate_to_idx", "attribute_to_idx"):
        if key == "attribute_to_idx" and key not in info:
            m: dict[str, int] = {}
        else:
            m = _index_map(info, key, dict_file)
        if add_bg:
            m["__background__"] = 0
        out.append(sorted(m, key=lambda k: m[k]))
    return out[0], out[1], out[2]


# ============================================================================================
# reading the h5


@dataclass
class Roidb:
    """The arrays of one VG-SGG h5 file, as stored (``boxes`` is ``(cx, cy, w, h)``).

    ``labels`` and ``predicates`` are 1-D; ``attributes`` is (N, 10) (zeros when the file has
    none); ``layout`` lists the tolerated differences from the VG150 layout.
    """

    file: str
    split: np.ndarray
    first_box: np.ndarray
    last_box: np.ndarray
    first_rel: np.ndarray
    last_rel: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    attributes: np.ndarray
    relationships: np.ndarray
    predicates: np.ndarray
    has_boxes_512: bool = True
    layout: list[str] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.split)

    @property
    def num_boxes(self) -> int:
        return len(self.labels)

    @property
    def num_relations(self) -> int:
        return len(self.predicates)


@dataclass
class RoidbIssue:
    """One defect of a :class:`Roidb`: ``severity`` ``"error"`` (the loader refuses the file)
    or ``"warning"``; ``image`` is the h5 image index (``None`` when no image owns the row);
    ``count`` how many records share this defect (``image`` / ``row`` name the first)."""

    severity: str
    kind: str
    key: str
    image: int | None
    row: int | None
    message: str
    count: int = 1

    def line(self, file: str) -> str:
        rec = f"image {self.image}" if self.image is not None else "(no image)"
        row = f", row {self.row}" if self.row is not None else ""
        more = f" (and {self.count - 1} more)" if self.count > 1 else ""
        return f"{file}: key '{self.key}', {rec}{row}: {self.message}{more}"


def read_roidb(roidb_file: str | os.PathLike) -> Roidb:
    """Read the arrays the loader needs; structural defects (not an h5 file, a missing key,
    wrong shapes, lengths that disagree, non-numeric data) raise one :class:`DataError` naming
    the file and the key. Value checks are :func:`roidb_issues`."""
    import h5py

    path = str(roidb_file)
    if not Path(path).is_file():
        raise DataError(f"{path}: VG-SGG h5 file not found")
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e})") from None
    layout: list[str] = []
    with h5:
        missing = [k for k in _REQUIRED_KEYS if k not in h5]
        if missing:
            raise DataError(
                f"{path}: key '{missing[0]}' is missing"
                + (f" (also {missing[1:]})" if len(missing) > 1 else "")
                + f"; the file has {sorted(h5.keys())}"
            )

        def get(key: str) -> np.ndarray:
            ds = h5[key]
            if not isinstance(ds, h5py.Dataset):
                raise DataError(f"{path}: key '{key}' is a group, expected a dataset")
            a = ds[()]
            if not isinstance(a, np.ndarray) or a.dtype.kind not in "iufb":
                raise DataError(f"{path}: key '{key}' must hold a numeric array")
            return a

        per_image = {
            k: get(k)
            for k in (
                "split",
                "img_to_first_box",
                "img_to_last_box",
                "img_to_first_rel",
                "img_to_last_rel",
            )
        }
        for k, a in per_image.items():
            if a.ndim != 1 or a.dtype.kind not in "iu":
                raise DataError(
                    f"{path}: key '{k}' must be a 1-D integer array, got {a.dtype} {a.shape}"
                )
        n_img = len(per_image["split"])
        for k, a in per_image.items():
            if len(a) != n_img:
                raise DataError(
                    f"{path}: key '{k}' has {len(a)} entries but 'split' has {n_img} images"
                )
        labels = get("labels")
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        elif labels.ndim == 1:
            layout.append("'labels' stored 1-D")
        else:
            raise DataError(f"{path}: key 'labels' must have shape (N, 1), got {labels.shape}")
        if labels.dtype.kind not in "iu":
            raise DataError(f"{path}: key 'labels' must be integers, got {labels.dtype}")
        n_obj = len(labels)
        boxes = get("boxes_1024")
        if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != n_obj:
            raise DataError(
                f"{path}: key 'boxes_1024' must have shape ({n_obj}, 4) like 'labels', "
                f"got {boxes.shape}"
            )
        if boxes.dtype.kind == "f":
            layout.append(f"'boxes_1024' stored as {boxes.dtype} (no int32 truncation)")
        has_512 = "boxes_512" in h5
        if not has_512:
            layout.append("no 'boxes_512' (never read)")
        if "attributes" in h5 and h5["attributes"].shape and h5["attributes"].shape[0] > 0:
            attrs = get("attributes")
            if attrs.ndim != 2 or len(attrs) != n_obj or attrs.dtype.kind not in "iu":
                raise DataError(
                    f"{path}: key 'attributes' must be integers of shape ({n_obj}, k) like "
                    f"'labels', got {attrs.dtype} {attrs.shape}"
                )
        else:
            why = "empty 'attributes'" if "attributes" in h5 else "no 'attributes'"
            extra = [k for k in h5 if k.startswith("attribute") and k != "attributes"]
            if extra:
                why += f" (has {extra})"
            layout.append(f"{why}: every object gets {_NUM_ATTRIBUTE_SLOTS} zero attributes")
            attrs = np.zeros((n_obj, _NUM_ATTRIBUTE_SLOTS), dtype=np.int64)
        rels = get("relationships")
        if rels.ndim != 2 or rels.shape[1] != 2 or rels.dtype.kind not in "iu":
            raise DataError(
                f"{path}: key 'relationships' must be integers of shape (M, 2), got "
                f"{rels.dtype} {rels.shape}"
            )
        preds = get("predicates")
        if preds.ndim == 2 and preds.shape[1] == 1:
            preds = preds[:, 0]
        elif preds.ndim == 1:
            layout.append("'predicates' stored 1-D")
        else:
            raise DataError(f"{path}: key 'predicates' must have shape (M, 1), got {preds.shape}")
        if preds.dtype.kind not in "iu":
            raise DataError(f"{path}: key 'predicates' must be integers, got {preds.dtype}")
        if len(preds) != len(rels):
            raise DataError(
                f"{path}: key 'predicates' has {len(preds)} rows but 'relationships' has "
                f"{len(rels)}"
            )
    return Roidb(
        file=path,
        split=per_image["split"],
        first_box=per_image["img_to_first_box"],
        last_box=per_image["img_to_last_box"],
        first_rel=per_image["img_to_first_rel"],
        last_rel=per_image["img_to_last_rel"],
        labels=labels,
        boxes=boxes,
        attributes=attrs,
        relationships=rels,
        predicates=preds,
        has_boxes_512=has_512,
        layout=layout,
    )


def expand_ranges(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For inclusive ranges ``first[k]..last[k]`` (empty when ``first < 0``): the concatenated
    row indices and, for each, the position ``k`` of its range."""
    first = first.astype(np.int64)
    counts = np.where(first >= 0, last.astype(np.int64) - first + 1, 0).clip(min=0)
    pos = np.repeat(np.arange(len(first)), counts)
    start = np.cumsum(counts) - counts
    rows = np.arange(int(counts.sum())) - np.repeat(start, counts) + np.repeat(first, counts)
    return rows, pos


def _owner(first: np.ndarray, last: np.ndarray, total: int) -> np.ndarray:
    """The image owning each of ``total`` rows (-1 for none; the last image wins overlaps)."""
    owner = np.full(total, -1, dtype=np.int64)
    rows, pos = expand_ranges(first, last)
    keep = (rows >= 0) & (rows < total)
    owner[rows[keep]] = pos[keep]
    return owner


def _issue(
    out: list[RoidbIssue],
    severity: str,
    kind: str,
    key: str,
    bad: np.ndarray,
    image_of: Any,
    message: Any,
    rows: bool = True,
) -> None:
    """Append one issue for the records flagged in ``bad`` (a boolean mask over rows, or over
    images when ``rows`` is False); ``image_of[i]`` is the image of record ``i``. The first
    flagged record is named, the rest counted."""
    idx = np.flatnonzero(bad)
    if idx.size == 0:
        return
    i = int(idx[0])
    img = int(image_of[i])
    out.append(
        RoidbIssue(
            severity,
            kind,
            key,
            img if img >= 0 else None,
            i if rows else None,
            message(i),
            int(idx.size),
        )
    )


def roidb_issues(
    r: Roidb,
    num_classes: int | None = None,
    num_predicates: int | None = None,
    num_attributes: int | None = None,
    *,
    warnings_too: bool = False,
) -> list[RoidbIssue]:
    """Value checks of a :class:`Roidb`, vectorised (one issue per kind, naming the first bad
    record and counting the others).

    Errors (what the loader refuses): row ranges out of the arrays (``first < -1``, ``-1``
    with a ``last`` that is not, ``last < first``, ``last >= rows``); relations in an image
    without boxes; box rows with ``cx < 0``, ``cy < 0``, ``w <= 0``, ``h <= 0`` or NaN (the
    official asserts); relation rows pointing outside their image's boxes; labels / predicates
    ``< 1`` or beyond the vocabulary sizes (``num_*``, background included, as ``load_info``
    gives them); attributes ``< 0`` or beyond ``num_attributes``. With ``warnings_too``, also
    what the loader copes with: ranges overlapping or out of order, rows no image owns, split
    values other than 0 / 2 (never loaded), relations of a box with itself, boxes leaving the
    1024 frame.
    """
    out: list[RoidbIssue] = []
    n_img, n_obj, n_rel = r.num_images, r.num_boxes, r.num_relations
    ids = np.arange(n_img)
    for what, first, last, total, kf, kl in (
        ("box", r.first_box, r.last_box, n_obj, "img_to_first_box", "img_to_last_box"),
        ("rel", r.first_rel, r.last_rel, n_rel, "img_to_first_rel", "img_to_last_rel"),
    ):
        f64, l64 = first.astype(np.int64), last.astype(np.int64)
        _issue(
            out,
            "error",
            "bad_range",
            kf,
            (f64 < -1) | ((f64 == -1) & (l64 != -1)),
            ids,
            lambda i, f=f64, la=l64, kf=kf, kl=kl: (
                f"{kf} = {f[i]} with {kl} = {la[i]} (empty is -1 / -1)"
            ),
            rows=False,
        )
        _issue(
            out,
            "error",
            "bad_range",
            kl,
            (f64 >= 0) & ((l64 < f64) | (l64 >= total)),
            ids,
            lambda i, f=f64, la=l64, kf=kf, kl=kl, total=total, what=what: (
                f"{kf}..{kl} = {f[i]}..{la[i]} is not a range inside the file's {total} {what} rows"
            ),
            rows=False,
        )
    _issue(
        out,
        "error",
        "relations_without_boxes",
        "img_to_first_rel",
        (r.first_rel >= 0) & (r.first_box < 0),
        ids,
        lambda i: "the image has relations but no boxes",
        rows=False,
    )
    if any(i.severity == "error" for i in out):
        return out  # the row checks below need valid ranges
    box_owner = _owner(r.first_box, r.last_box, n_obj)
    b = r.boxes
    with np.errstate(invalid="ignore"):
        bad_box = ~(b[:, 0] >= 0) | ~(b[:, 1] >= 0) | ~(b[:, 2] > 0) | ~(b[:, 3] > 0)
    _issue(
        out,
        "error",
        "bad_box",
        "boxes_1024",
        bad_box,
        box_owner,
        lambda i: f"box (cx, cy, w, h) = {b[i].tolist()} needs cx, cy >= 0 and w, h > 0",
    )
    _issue(
        out,
        "error",
        "bad_label",
        "labels",
        r.labels < 1,
        box_owner,
        lambda i: f"object label {int(r.labels[i])} < 1 (1..C; 0 is background)",
    )
    if num_classes is not None:
        _issue(
            out,
            "error",
            "label_out_of_vocabulary",
            "labels",
            r.labels >= num_classes,
            box_owner,
            lambda i: (
                f"object label {int(r.labels[i])} is beyond the dicts' {num_classes - 1} "
                "object classes"
            ),
        )
    a = r.attributes
    _issue(
        out,
        "error",
        "bad_attribute",
        "attributes",
        (a < 0).any(1),
        box_owner,
        lambda i: f"negative attribute id in {a[i].tolist()}",
    )
    if num_attributes is not None:
        _issue(
            out,
            "error",
            "attribute_out_of_vocabulary",
            "attributes",
            (a >= num_attributes).any(1),
            box_owner,
            lambda i: (
                f"attribute ids {a[i].tolist()} go beyond the dicts' {num_attributes - 1} "
                "attributes"
            ),
        )
    rel_rows, rel_img = expand_ranges(r.first_rel, r.last_rel)
    rel_owner = np.full(n_rel, -1, dtype=np.int64)
    rel_owner[rel_rows] = rel_img
    rel = r.relationships[rel_rows].astype(np.int64)
    lo = r.first_box[rel_img].astype(np.int64)[:, None]
    hi = r.last_box[rel_img].astype(np.int64)[:, None]
    outside = ((rel < lo) | (rel > hi)).any(1)
    bad_rel = np.zeros(n_rel, dtype=bool)
    bad_rel[rel_rows[outside]] = True
    _issue(
        out,
        "error",
        "relation_outside_image",
        "relationships",
        bad_rel,
        rel_owner,
        lambda i: (
            f"relation (subject, object) = {r.relationships[i].tolist()} points outside the "
            f"image's box rows {int(r.first_box[rel_owner[i]])}.."
            f"{int(r.last_box[rel_owner[i]])}"
        ),
    )
    p = r.predicates
    _issue(
        out,
        "error",
        "bad_predicate",
        "predicates",
        p < 1,
        rel_owner,
        lambda i: f"predicate {int(p[i])} < 1 (1..P; 0 is 'no relation')",
    )
    if num_predicates is not None:
        _issue(
            out,
            "error",
            "predicate_out_of_vocabulary",
            "predicates",
            p >= num_predicates,
            rel_owner,
            lambda i: f"predicate {int(p[i])} is beyond the dicts' {num_predicates - 1} predicates",
        )
    if warnings_too:
        out += _roidb_warnings(r, box_owner, rel_owner)
    return out


def _range_layout_warnings(
    first: np.ndarray, last: np.ndarray, total: int, owner: np.ndarray, what: str, key: str
) -> list[RoidbIssue]:
    out: list[RoidbIssue] = []
    has = np.flatnonzero(first >= 0)
    f, la = first[has].astype(np.int64), last[has].astype(np.int64)
    _issue(
        out,
        "warning",
        "ranges_not_contiguous",
        key,
        f[1:] != la[:-1] + 1,
        has[1:],
        lambda i: (
            f"{what} rows {f[i + 1]}..{la[i + 1]} do not follow the previous image's "
            f"{f[i]}..{la[i]} (overlapping, out of order or with a gap)"
        ),
        rows=False,
    )
    _issue(
        out,
        "warning",
        "unowned_rows",
        key,
        owner < 0,
        owner,
        lambda i: f"{what} row {i} belongs to no image (never loaded)",
    )
    return out


def _roidb_warnings(r: Roidb, box_owner: np.ndarray, rel_owner: np.ndarray) -> list[RoidbIssue]:
    out = _range_layout_warnings(
        r.first_box, r.last_box, r.num_boxes, box_owner, "box", "img_to_first_box"
    )
    out += _range_layout_warnings(
        r.first_rel, r.last_rel, r.num_relations, rel_owner, "relation", "img_to_first_rel"
    )
    ids = np.arange(r.num_images)
    _issue(
        out,
        "warning",
        "unused_split_value",
        "split",
        (r.split != 0) & (r.split != 2),
        ids,
        lambda i: f"split = {int(r.split[i])}: the loader reads only 0 (train/val) and 2 (test)",
        rows=False,
    )
    rel = r.relationships
    _issue(
        out,
        "warning",
        "self_relation",
        "relationships",
        rel[:, 0] == rel[:, 1],
        rel_owner,
        lambda i: (
            f"relation of box {int(rel[i, 0])} with itself (relation heads never propose "
            "such a pair, so it can never be recalled)"
        ),
    )
    xyxy = convert_boxes(r.boxes)
    _issue(
        out,
        "warning",
        "box_outside_frame",
        "boxes_1024",
        (xyxy[:, :2] < 0).any(1) | (xyxy[:, 2:] > BOX_SCALE).any(1),
        box_owner,
        lambda i: (
            f"box x1y1x2y2 = {xyxy[i].tolist()} leaves the [0, {BOX_SCALE}] frame "
            "(the loader keeps it; evaluation clips it to the image)"
        ),
    )
    return out


def _raise_first_error(r: Roidb, issues: list[RoidbIssue]) -> None:
    errs = [i for i in issues if i.severity == "error"]
    if errs:
        more = f" [{len(errs) - 1} more kinds of error: percepta data check]" if errs[1:] else ""
        raise DataError(errs[0].line(r.file) + more)


def _vocab_sizes(dict_file: str | os.PathLike | None) -> tuple[int | None, ...]:
    if dict_file is None:
        return None, None, None
    classes, predicates, attributes = load_info(dict_file)
    return len(classes), len(predicates), len(attributes)


def _load_checked(roidb_file: str | os.PathLike, dict_file: Any = None) -> Roidb:
    r = read_roidb(roidb_file)
    _raise_first_error(r, roidb_issues(r, *_vocab_sizes(dict_file)))
    return r


# ============================================================================================
# the official loader


def convert_boxes(boxes_cxcywh: np.ndarray) -> np.ndarray:
    """``(cx, cy, w, h)`` -> ``x1 y1 x2 y2`` exactly as the official loader does it: in the
    stored dtype (int32: ``x1 = trunc(cx - w / 2)``), then ``x2 = x1 + w`` from the truncated
    ``x1``. Returns a new array of the same dtype."""
    b = np.array(boxes_cxcywh, copy=True)
    b[:, :2] = b[:, :2] - b[:, 2:] / 2
    b[:, 2:] = b[:, :2] + b[:, 2:]
    return b


def select_images(
    r: Roidb, split: str, num_im: int = -1, num_val_im: int = 0, filter_empty_rels: bool = True
) -> np.ndarray:
    """h5 image indices of a split before ``filter_non_overlap`` (official order of steps)."""
    if split not in _SPLITS:
        raise ConfigError(f"split must be one of {_SPLITS}, got {split!r}")
    mask = r.split == (2 if split == "test" else 0)
    mask &= r.first_box >= 0
    if filter_empty_rels:
        mask &= r.first_rel >= 0
    index = np.where(mask)[0]
    if num_im > -1:
        index = index[:num_im]
    if num_val_im > 0:
        if split == "val":
            index = index[:num_val_im]
        elif split == "train":
            index = index[num_val_im:]
    return index


def relation_overlap(boxes_xyxy: np.ndarray, relationships: np.ndarray) -> np.ndarray:
    """For each relation (global rows ``subject, object``): IoU > 0 with the ``+1`` pixel
    convention in float32, as ``boxlist_iou`` (maskrcnn-benchmark) computes it."""
    b = boxes_xyxy.astype(np.float32)
    s, o = b[relationships[:, 0]], b[relationships[:, 1]]
    one = np.float32(1)
    wh = (np.minimum(s[:, 2:], o[:, 2:]) - np.maximum(s[:, :2], o[:, :2]) + one).clip(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area_s = (s[:, 2] - s[:, 0] + one) * (s[:, 3] - s[:, 1] + one)
    area_o = (o[:, 2] - o[:, 0] + one) * (o[:, 3] - o[:, 1] + one)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area_s + area_o - inter)
    return iou > 0.0


def load_graphs(
    roidb_file: str | os.PathLike,
    split: str,
    num_im: int = -1,
    num_val_im: int = 0,
    filter_empty_rels: bool = True,
    filter_non_overlap: bool = False,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The official ``load_graphs``: ``(split_mask, boxes, gt_classes, gt_attributes,
    relationships)``.

    ``split_mask`` (bool, one per h5 image) marks the images returned; per image, ``boxes``
    (n, 4) ``x1 y1 x2 y2`` at the 1024 scale in the stored dtype (int32 for VG150: see
    :func:`convert_boxes`), ``gt_classes`` (n,), ``gt_attributes`` (n, 10) and
    ``relationships`` (m, 3) ``subject, object, predicate`` with image-local indices, in file
    order, duplicates kept (``int32`` zeros ``(0, 3)`` for an image without relations).
    Malformed files raise one :class:`DataError` (file, key, image index); tolerated layouts
    are listed in the module docstring.
    """
    if filter_non_overlap and split != "train":
        raise ConfigError(
            "filter_non_overlap applies to the train split only (the official VGDataset "
            f"turns it off for val and test), got split={split!r}"
        )
    r = _load_checked(roidb_file)
    image_index = select_images(r, split, num_im, num_val_im, filter_empty_rels)
    split_mask = np.zeros_like(r.split).astype(bool)
    split_mask[image_index] = True
    all_boxes = convert_boxes(r.boxes)
    if filter_non_overlap and r.num_relations:
        overlap = relation_overlap(all_boxes, r.relationships)
    im_to_first_box = r.first_box[split_mask]
    im_to_last_box = r.last_box[split_mask]
    im_to_first_rel = r.first_rel[split_mask]
    im_to_last_rel = r.last_rel[split_mask]
    boxes, gt_classes, gt_attributes, relationships = [], [], [], []
    for i in range(len(image_index)):
        i_obj_start, i_obj_end = im_to_first_box[i], im_to_last_box[i]
        i_rel_start, i_rel_end = im_to_first_rel[i], im_to_last_rel[i]
        boxes_i = all_boxes[i_obj_start : i_obj_end + 1, :]
        gt_classes_i = r.labels[i_obj_start : i_obj_end + 1]
        gt_attributes_i = r.attributes[i_obj_start : i_obj_end + 1, :]
        if i_rel_start >= 0:
            predicates = r.predicates[i_rel_start : i_rel_end + 1]
            obj_idx = r.relationships[i_rel_start : i_rel_end + 1] - i_obj_start
            rels = np.column_stack((obj_idx, predicates))
        else:
            rels = np.zeros((0, 3), dtype=np.int32)
        if filter_non_overlap:
            if i_rel_start >= 0:
                inc = np.where(overlap[i_rel_start : i_rel_end + 1])[0]
            else:
                inc = np.zeros(0, dtype=np.int64)
            if inc.size > 0:
                rels = rels[inc]
            else:
                split_mask[image_index[i]] = False
                continue
        boxes.append(boxes_i)
        gt_classes.append(gt_classes_i)
        gt_attributes.append(gt_attributes_i)
        relationships.append(rels)
    return split_mask, boxes, gt_classes, gt_attributes, relationships


def load_image_filenames(
    img_dir: str | os.PathLike,
    image_file: str | os.PathLike,
    corrupted_ids: Collection[int | str] = VG_CORRUPTED_IMAGE_IDS,
) -> tuple[list[str], list[dict], int]:
    """The official ``load_image_filenames``: ``(filenames, img_info, num_missing)``.

    Walks ``image_data.json`` in order, skips the records whose ``image_id`` is in
    ``corrupted_ids`` (VG's 4 corrupted images; pass ``()`` for other datasets, whose ids
    may collide) and those whose file is not in ``img_dir`` (counted in ``num_missing``). The
    file is ``file_name`` when the record has one (files written by :func:`write_vg_sgg`),
    else ``<image_id>.jpg`` (official). Unlike the official code it does not assert VG's
    108,073 images: the caller compares the count with the h5.
    """
    records = _read_json(image_file, "VG-SGG image_data")
    if not isinstance(records, list):
        raise DataError(f"{image_file}: image_data must be a JSON list of image records")
    skip = {str(i) for i in corrupted_ids}
    fns: list[str] = []
    info: list[dict] = []
    missing = 0
    for i, img in enumerate(records):
        if not isinstance(img, dict) or "image_id" not in img:
            raise DataError(f"{image_file}: record [{i}] must be an object with an 'image_id'")
        if str(img["image_id"]) in skip:
            continue
        name = img.get("file_name") or f"{img['image_id']}.jpg"
        filename = os.path.join(img_dir, name)
        if os.path.exists(filename):
            fns.append(filename)
            info.append(img)
        else:
            missing += 1
    return fns, info, missing


# ============================================================================================
# statistics for the frequency bias


def statistics_from_roidb(
    r: Roidb,
    num_classes: int,
    num_predicates: int,
    must_overlap: bool = True,
    num_val_im: int = 5000,
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(fg, bg, num_images)`` of ``get_VG_statistics`` on a :class:`Roidb` without errors
    (:func:`roidb_issues`); C = ``num_classes`` and P = ``num_predicates`` include background.

    Vectorised instead of the official per-image loop: the relations of all selected images
    at once, then the ordered box pairs of about 256k at a time (``np.repeat`` over the images'
    ``n * n`` pairs), counted with ``np.bincount``."""
    image_index = select_images(r, "train", -1, num_val_im, True)
    boxes = convert_boxes(r.boxes)
    # relations of the selected images, filtered by overlap (+1 IoU), duplicates kept
    rows, pos = expand_ranges(r.first_rel[image_index], r.last_rel[image_index])
    rel = r.relationships[rows].astype(np.int64)
    keep = relation_overlap(boxes, rel)
    rows, pos, rel = rows[keep], pos[keep], rel[keep]
    kept_images = image_index[np.bincount(pos, minlength=len(image_index)) > 0]
    labels = r.labels.astype(np.int64)
    c, p = num_classes, num_predicates
    code = (labels[rel[:, 0]] * c + labels[rel[:, 1]]) * p + r.predicates[rows].astype(np.int64)
    fg = np.bincount(code, minlength=c * c * p).reshape(c, c, p).astype(np.int64)
    bg = np.zeros(c * c, dtype=np.int64)
    xyxy = boxes.astype(np.float64)
    first = r.first_box[kept_images].astype(np.int64)
    n = r.last_box[kept_images].astype(np.int64) - first + 1
    nn = n * n
    cum = np.cumsum(nn)
    start = 0
    while start < len(kept_images):  # chunks of about 256k ordered pairs
        done = int(cum[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(cum, done + (1 << 18), side="right")))
        ck_n, ck_nn, ck_first = n[start:stop], nn[start:stop], first[start:stop]
        img = np.repeat(np.arange(len(ck_n)), ck_nn)
        t = np.arange(int(ck_nn.sum())) - np.repeat(np.cumsum(ck_nn) - ck_nn, ck_nn)
        nrep = np.repeat(ck_n, ck_nn)
        a = np.repeat(ck_first, ck_nn) + t // nrep
        b = np.repeat(ck_first, ck_nn) + t % nrep
        off_diag = a != b
        if must_overlap:
            lt = np.maximum(xyxy[a, :2], xyxy[b, :2])
            rb = np.minimum(xyxy[a, 2:], xyxy[b, 2:])
            wh = (rb - lt).clip(min=0)  # to_move = 0: touching boxes do not overlap
            overlaps = (wh[:, 0] * wh[:, 1] > 0) & off_diag
            any_overlap = np.bincount(img[overlaps], minlength=len(ck_n)) > 0
            pairs = overlaps | (off_diag & ~any_overlap[img])
        else:
            pairs = off_diag
        bg += np.bincount(labels[a[pairs]] * c + labels[b[pairs]], minlength=c * c)
        start = stop
    return fg, bg.reshape(c, c), len(kept_images)


def vg_statistics(
    roidb_file: str | os.PathLike,
    dict_file: str | os.PathLike,
    must_overlap: bool = True,
    *,
    num_val_im: int = 5000,
) -> tuple[np.ndarray, np.ndarray]:
    """``(fg_matrix, bg_matrix)`` of the official ``get_VG_statistics``, from the h5 alone.

    Its own train split whatever the config says (``num_val_im=5000``, ``filter_empty_rels``
    and ``filter_non_overlap`` on). ``fg`` (C, C, P) int64 counts every relation kept by the
    non-overlap filter, duplicates included, at ``[subject class, object class, predicate]``;
    ``bg`` (C, C) int64 counts the ordered pairs i != j of boxes with a strictly positive
    intersection area (no ``+1``; every ordered pair when an image has none, or always when
    ``must_overlap`` is False), over the images left after the filter. C and P come from
    :func:`load_info` (background included); labels or predicates beyond them raise
    :class:`DataError`. ``num_val_im`` is not an official parameter: the official code always
    holds out 5000 images, which leaves nothing to count on a dataset with fewer train images
    (e.g. ``vg_sgg_ships``: 3,661), where a smaller value is the only way to get statistics.
    """
    c, p, na = _vocab_sizes(dict_file)
    r = read_roidb(roidb_file)
    _raise_first_error(r, roidb_issues(r, c, p, na))
    fg, bg, _ = statistics_from_roidb(r, c, p, must_overlap, num_val_im)
    return fg, bg


def predicate_log_distribution(fg_matrix: np.ndarray, bg_matrix: np.ndarray) -> np.ndarray:
    """``pred_dist`` of the official ``get_statistics`` (float32, (C, C, P)): ``fg[:, :, 0] =
    bg + 1`` for every class pair, then ``log(fg / fg.sum(2) + 1e-3)``. Inputs are unchanged."""
    fg = np.array(fg_matrix, copy=True)
    fg[:, :, 0] = np.asarray(bg_matrix) + 1
    return np.log(fg / fg.sum(2)[:, :, None] + 1e-3).astype(np.float32)


# ============================================================================================
# cached statistics

_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$PERCEPTA_CACHE_DIR``, else ``$XDG_CACHE_HOME/percepta``, else ``~/.cache/percepta``."""
    if os.environ.get("PERCEPTA_CACHE_DIR"):
        return Path(os.environ["PERCEPTA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "percepta"


def _file_fingerprint(path: str | os.PathLike) -> list[Any]:
    p = Path(path).resolve()
    st = p.stat()
    with open(p, "rb") as f:
        head = hashlib.sha256(f.read(1 << 16)).hexdigest()
    return [str(p), st.st_size, st.st_mtime_ns, head]


def _cache_key(roidb_file: Any, dict_file: Any, num_val_im: int) -> str:
    ident = {
        "version": _CACHE_VERSION,
        "num_val_im": num_val_im,
        "roidb": _file_fingerprint(roidb_file),
        "dicts": _file_fingerprint(dict_file),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path, key: str, c: int, p: int) -> dict[str, np.ndarray] | None:
    """The cached arrays when the file is intact and matches ``key`` and the vocabulary."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            fg, bg, pred = z["fg_matrix"], z["bg_matrix"], z["pred_dist"]
    except Exception:  # a corrupt / truncated / foreign file: recompute
        return None
    if (
        fg.shape != (c, c, p)
        or bg.shape != (c, c)
        or fg.dtype != np.int64
        or bg.dtype != np.int64
        or (fg < 0).any()
        or (bg < 0).any()
        or not np.array_equal(pred, predicate_log_distribution(fg, bg))
    ):
        return None
    return {"fg_matrix": fg, "bg_matrix": bg, "pred_dist": pred}


def statistics_cached(
    roidb_file: str | os.PathLike,
    dict_file: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    *,
    num_val_im: int = 5000,
) -> dict[str, Any]:
    """:func:`vg_statistics` + :func:`predicate_log_distribution`, cached per dataset.

    Returns ``{"fg_matrix", "bg_matrix", "pred_dist", "obj_classes", "rel_classes",
    "cache_file"}``. The cache is one ``.npz`` (no pickle) in ``cache_dir`` (default
    :func:`default_cache_dir`), named by a key over both files' absolute path, size,
    modification time and the sha256 of their first 64 KiB; the key is stored inside too. A
    cache file that is unreadable, for another key, of the wrong shapes or whose ``pred_dist``
    does not follow from its counts is recomputed and replaced (written atomically); an
    unwritable cache folder only costs a warning. ``num_val_im`` as in :func:`vg_statistics`
    (part of the key).
    """
    classes, predicates, _ = load_info(dict_file)
    c, p = len(classes), len(predicates)
    key = _cache_key(roidb_file, dict_file, num_val_im)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"vg_sgg_statistics-{key[:24]}.npz"
    arrays = _read_cache(path, key, c, p) if path.is_file() else None
    if arrays is None:
        fg, bg = vg_statistics(roidb_file, dict_file, num_val_im=num_val_im)
        arrays = {"fg_matrix": fg, "bg_matrix": bg, "pred_dist": predicate_log_distribution(fg, bg)}
        try:
            atomic_write(path, lambda f: np.savez_compressed(f, key=np.array(key), **arrays))
        except OSError as e:
            warnings.warn(f"cannot write the statistics cache {path}: {e}", stacklevel=2)
    return {**arrays, "obj_classes": classes, "rel_classes": predicates, "cache_file": path}
