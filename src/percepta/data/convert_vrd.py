"""The official VRD json (Lu et al., ECCV 2016) to VG-SGG files, plus its zero-shot triplets.

``percepta data convert vrd SRC --out DIR [--split test|train]`` (:func:`vrd_to_vg_sgg`).
``SRC`` is a VRD folder as the authors' repository (Prof-Lu-Cewu/Visual-Relationship-Detection
@ 3f4f51b0) and the json release lay it out: ``json_dataset/annotations_<split>.json``,
``json_dataset/objects.json`` (100 class names) and ``predicates.json`` (70), the images in
``images/`` (or the official ``sg_dataset/sg_<split>_images/``), and for the test split
``evaluation/gt.mat``, ``evaluation/zeroShot.mat`` and ``data/imagePath.mat``. ``DIR`` gets
``VG-SGG.h5``, ``VG-SGG-dicts.json`` and ``image_data.json``
(:func:`percepta.data.vg_sgg.write_vg_sgg`), ``zero_shot_triplets.json`` (test split),
``annotations/instances_<split>.json`` (the same objects as COCO json, to train the detector the
relation model reads), ``vrd_conversion.json`` (the returned summary), ``README.txt`` and a copy
of ``LICENSE``.

The rules, each checked on the real data (``shared/data/vrd``, the 60 images with files):

* **The json.** ``{file_name: [relationship, ...]}``; a relationship is ``{"predicate": p,
  "subject": {"category": c, "bbox": [ymin, ymax, xmin, xmax]}, "object": {...}}``, ``p`` and
  ``c`` 0-based into ``predicates.json`` / ``objects.json``.
* **Boxes are 1-based inclusive pixels.** The json boxes are exactly the boxes of the official
  evaluation ground truth ``gt.mat`` (all 7,638 test tuples, same order per image, after
  reordering ``[ymin, ymax, xmin, xmax]`` to ``[x1, y1, x2, y2]``), and ``gt.mat`` is 1-based
  inclusive (the official visualiser indexes ``image(y1:y2, x1:x2)``; the official IoU uses
  ``x2 - x1 + 1``). On the 60 images the smallest coordinate is 1 and 58 coordinates equal the
  image width or height exactly (the last column / row), none exceeds it. They are written as
  the VG-SGG files' **0-based inclusive** pixels (what Scene-Graph-Benchmark's loader and
  evaluator assume: boxes clipped to ``[0, w - 1]``, IoU with ``+1``): ``x1 = xmin - 1,
  y1 = ymin - 1, x2 = xmax - 1, y2 = ymax - 1``. Thus the percepta evaluator's default
  ``box_convention: vg`` computes the official VRD IoU exactly. (``xmin - 1 .. xmax``, the
  continuous reading used for VOC in :mod:`percepta.data.convert`, would put 58 edges at ``w``,
  which the VG-SGG loader clips to ``w - 1``.) Coordinates outside the image are clipped (and
  counted); a box left without area (a 1-pixel-wide box, which the VG-SGG files cannot hold,
  or one outside the image) is dropped with its relations (counted; none in the test split).
  ``ymin > ymax`` or ``xmin > xmax`` is malformed: a :class:`~percepta.errors.DataError`.
* **Objects are de-duplicated by (box, class).** VRD stores a box again in every relationship
  it takes part in; the objects of an image are its distinct (json box, category) pairs, in the
  order of first appearance (subject before object). A box annotated with two classes stays
  two objects (4 such boxes on the 60 images: 473 objects on 469 distinct boxes).
* **Relations** are (subject index, object index, predicate + 1), in json order. Exact
  repeats are kept (17 on the 60 images; the official VRD and SGG evaluations count every GT
  row, and the ``vg_sgg`` training split de-duplicates as officially). A relationship whose
  subject and object are the same (box, class) is dropped and counted: VG-SGG files have
  subject != object and relation heads never propose such a pair (4 of the 621 on the 60
  images, 26 of the 7,638 test tuples, e.g. "horse next to horse" on one box). So the 60 images
  give **617 relations**; the official VRD evaluation's denominator counts the 4 as well.
* **Labels**: classes + 1 (1..100, 0 = background), predicates + 1 (1..70), the VG-SGG
  convention; the dicts json keeps the json's names (``motorbike``, where ``objectListN.mat``
  says ``motorcycle``).
* **Splits and ids.** Every image of ``--split test`` goes to h5 split 2, of ``--split train``
  to split 0 (the loader carves val out of it with ``num_val_im``). Image ids are 1, 2, ...
  by the position of the entry in the json (the 1000 test entries: ids 1..1000), skipping the
  4 VG ids the official loader drops (:data:`~percepta.data.vg_sgg.VG_CORRUPTED_IMAGE_IDS`),
  so ids stay the same whichever images are present.
* **Images.** ``images_only=True`` (default) keeps the entries whose image file exists and
  counts the others (940 of the 1,000 test entries have no file in ``shared/data/vrd``);
  ``images_only=False`` requires every file (a missing one is a DataError: the image size is
  needed and the json does not store it). Sizes come from the image headers. Images are not
  copied: ``image_data.json`` names them relative to the source image folder, which
  ``README.txt`` and ``vrd_conversion.json`` record; the ``vg_sgg`` dataset is pointed at it
  with ``data.train.image_dir=/abs/path/to/vrd/images`` (and ``data.val.image_dir``).
* **Zero-shot triplets** (test split): the (subject, predicate, object) types of the ``gt.mat``
  tuples that ``zeroShot.mat`` flags (same cells, same rows; read with ``scipy.io.loadmat(...,
  mat_dtype=True)``, without which the labels load as uint8). No type is both flagged and
  unflagged (1,029 flagged types, 1,718 others), so the type list reproduces the per-row flags
  exactly. Written in the evaluator's format (:func:`percepta.scene_graph.results_io.\
load_zero_shot_triplets`, as the built-in relation data): ``[[subject class, object class,
  predicate], ...]``, classes **0-based** (percepta targets' labels), predicates 1-based.
  ``data/imagePath.mat`` (the ``gt.mat`` image order) lets the conversion check that ``gt.mat``
  holds the json's tuples for every converted image (a warning says how many differ).
* **COCO objects.** ``annotations/instances_<split>.json`` lists the same objects (after the
  de-duplication) with categories 1..100 in ``objects.json`` order and ``bbox = [x1, y1,
  x2 - x1 + 1, y2 - y1 + 1]`` (the pixels an inclusive box covers, as the VOC converter reads
  them); ``file_name`` is relative to the json's folder, as :mod:`percepta.data.convert` writes
  it, so ``data.train: {name: coco, ann_file: annotations/instances_test.json}`` with
  ``data.root`` = ``DIR`` finds the images and a detector trains with ``num_classes`` 100.
* **Licence.** The VRD ``LICENSE`` (Stanford: individual research use only, keep the notice
  with any derived copy) is copied into ``DIR``.

numpy, scipy (``.mat``), h5py and Pillow (image headers) only; no torch.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from percepta.atomic import atomic_write_text
from percepta.data.convert import _image_size, _num, _rel_name, write_coco
from percepta.data.vg_sgg import VG_CORRUPTED_IMAGE_IDS, SGGImage, write_vg_sgg
from percepta.errors import DataError
from percepta.jsonable import read_json

__all__ = ["VRD_SPLITS", "vrd_to_vg_sgg", "vrd_zero_shot_triplets", "vrd_image_ids"]

#: The splits of the VRD json release and the h5 ``split`` value each is written with.
VRD_SPLITS = {"train": 0, "test": 2}


@dataclass
class _Counts:
    images: int = 0
    objects: int = 0
    relations: int = 0
    json_relations: int = 0
    self_relations: int = 0
    duplicate_relations: int = 0
    boxes_with_two_classes: int = 0
    clipped_boxes: int = 0
    dropped_boxes: int = 0
    dropped_box_relations: int = 0
    images_without_relations: int = 0


# -------------------------------------------------------------------------------------------- ids


def vrd_image_ids(n: int) -> list[int]:
    """The ids of the first ``n`` json entries: 1, 2, ... without the 4 VG ids the official
    loader skips (so entry 1592 of the train json gets id 1593)."""
    skip = set(VG_CORRUPTED_IMAGE_IDS)
    out: list[int] = []
    i = 0
    while len(out) < n:
        i += 1
        if i not in skip:
            out.append(i)
    return out


# ------------------------------------------------------------------------------------ json input


def _names(path: Path, what: str) -> list[str]:
    names = read_json(path, f"VRD {what}")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"{path}: the VRD {what} file must be a JSON list of names")
    return names


def _int(value: Any, rec: str, what: str, n: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise DataError(f"{rec}: {what} must be an integer, got {value!r}")
    if not 0 <= int(value) < n:
        raise DataError(f"{rec}: {what} {int(value)} is outside 0..{n - 1}")
    return int(value)


def _entity(rel: dict, key: str, rec: str, num_classes: int) -> tuple[tuple[float, ...], int]:
    ent = rel.get(key)
    if not isinstance(ent, dict) or "category" not in ent or "bbox" not in ent:
        raise DataError(f"{rec}: '{key}' must be an object with 'category' and 'bbox'")
    cat = _int(ent["category"], rec, f"{key} category", num_classes)
    box = ent["bbox"]
    if (
        not isinstance(box, list)
        or len(box) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        or not all(np.isfinite(box))
    ):
        raise DataError(
            f"{rec}: {key} bbox must be 4 numbers [ymin, ymax, xmin, xmax], got {box!r}"
        )
    ymin, ymax, xmin, xmax = box
    if ymin > ymax or xmin > xmax:
        raise DataError(
            f"{rec}: {key} bbox {box} has ymin > ymax or xmin > xmax "
            "(VRD boxes are [ymin, ymax, xmin, xmax])"
        )
    return tuple(float(v) for v in box), cat


def _relationships(
    ann_file: Path, name: str, rels: Any, num_classes: int, num_predicates: int
) -> Iterator[tuple[tuple, tuple, int]]:
    if not isinstance(rels, list):
        raise DataError(f"{ann_file}: image {name!r}: expected a list of relationships")
    for k, rel in enumerate(rels):
        rec = f"{ann_file}: image {name!r}, relationship {k}"
        if not isinstance(rel, dict) or "predicate" not in rel:
            raise DataError(f"{rec}: expected an object with 'predicate', 'subject', 'object'")
        p = _int(rel["predicate"], rec, "predicate", num_predicates)
        yield _entity(rel, "subject", rec, num_classes), _entity(rel, "object", rec, num_classes), p


def _convert_box(box: tuple[float, ...], w: int, h: int) -> tuple[np.ndarray, bool]:
    """VRD ``[ymin, ymax, xmin, xmax]`` 1-based inclusive -> 0-based inclusive ``x1 y1 x2 y2``
    clipped to the image; returns the box and whether clipping changed it."""
    ymin, ymax, xmin, xmax = box
    raw = np.array([xmin - 1, ymin - 1, xmax - 1, ymax - 1], dtype=np.float64)
    out = raw.copy()
    out[0::2] = out[0::2].clip(0, w - 1)
    out[1::2] = out[1::2].clip(0, h - 1)
    return out, bool((out != raw).any())


def _image(
    ann_file: Path,
    name: str,
    rels: Any,
    size: tuple[int, int],
    image_id: int,
    split: int,
    num_classes: int,
    num_predicates: int,
    counts: _Counts,
) -> SGGImage:
    w, h = size
    index: dict[tuple, int] = {}
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    keep: list[bool] = []
    relations: list[tuple[int, int, int]] = []
    for sub, obj, p in _relationships(ann_file, name, rels, num_classes, num_predicates):
        counts.json_relations += 1
        ids = []
        for box, cat in (sub, obj):
            key = (box, cat)
            if key not in index:
                index[key] = len(boxes)
                b, clipped = _convert_box(box, w, h)
                counts.clipped_boxes += clipped
                boxes.append(b)
                labels.append(cat + 1)
                keep.append(bool(b[2] > b[0] and b[3] > b[1]))
            ids.append(index[key])
        if ids[0] == ids[1]:
            counts.self_relations += 1
        elif not (keep[ids[0]] and keep[ids[1]]):
            counts.dropped_box_relations += 1
        else:
            relations.append((ids[0], ids[1], p + 1))
    ok = np.asarray(keep, dtype=bool)
    counts.dropped_boxes += int((~ok).sum())
    rel = np.asarray(relations, dtype=np.int64).reshape(-1, 3)
    if len(rel):  # renumber the boxes after the dropped ones
        rel[:, :2] = (np.cumsum(ok) - 1)[rel[:, :2]]
    box_arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[ok]
    counts.boxes_with_two_classes += len(index) - len({box for box, _ in index})
    counts.duplicate_relations += len(relations) - len(set(relations))
    counts.images += 1
    counts.objects += len(box_arr)
    counts.relations += len(rel)
    counts.images_without_relations += len(rel) == 0
    return SGGImage(
        image_id=image_id,
        file_name=name,
        width=int(w),
        height=int(h),
        boxes=box_arr,
        labels=np.asarray(labels, dtype=np.int64)[ok],
        relations=rel,
        split=split,
    )


# ------------------------------------------------------------------------------------ .mat input


def _loadmat(path: Path) -> dict:
    import scipy.io

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:  # mat_dtype: labels as double, not uint8 (which wraps on subtraction)
        return scipy.io.loadmat(path, mat_dtype=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is a data error for the user
        raise DataError(f"{path}: not a readable MATLAB file ({e})") from None


def _cells(mat: dict, key: str, path: Path) -> list[np.ndarray]:
    if key not in mat:
        raise DataError(f"{path}: key '{key}' is missing")
    return [np.asarray(c) for c in np.asarray(mat[key], dtype=object).reshape(-1)]


def _gt_tuples(src: Path) -> tuple[list[np.ndarray], list[np.ndarray], Path]:
    """``gt.mat`` labels ``[n, 3]`` (subject, predicate, object, 1-based) and the matching
    ``zeroShot.mat`` flags ``[n]`` per image."""
    gt_path, zs_path = src / "evaluation" / "gt.mat", src / "evaluation" / "zeroShot.mat"
    gt, zs = _loadmat(gt_path), _loadmat(zs_path)
    labels = _cells(gt, "gt_tuple_label", gt_path)
    flags = _cells(zs, "zeroShot", zs_path)
    if len(labels) != len(flags):
        raise DataError(
            f"{zs_path}: {len(flags)} images of zero-shot flags for {len(labels)} in {gt_path}"
        )
    out_l, out_f = [], []
    for j, (lab, flag) in enumerate(zip(labels, flags)):
        lab = lab.astype(np.float64).reshape(-1, 3) if lab.size else np.zeros((0, 3))
        flag = flag.reshape(-1).astype(bool)
        if len(flag) != len(lab):
            raise DataError(
                f"{zs_path}: image {j + 1}: {len(flag)} zero-shot flags for {len(lab)} tuples "
                f"in {gt_path}"
            )
        out_l.append(lab.astype(np.int64))
        out_f.append(flag)
    return out_l, out_f, gt_path


def vrd_zero_shot_triplets(src: str | os.PathLike) -> np.ndarray:
    """The zero-shot triplet types of the VRD test split, ``[Z, 3]`` int64 rows (subject class,
    object class, predicate): classes 0-based, predicates 1-based (the evaluator's format),
    sorted, unique. From ``SRC/evaluation/gt.mat`` + ``zeroShot.mat`` (module docstring)."""
    labels, flags, _ = _gt_tuples(Path(src))
    rows = [lab[f] for lab, f in zip(labels, flags) if f.any()]
    if not rows:
        return np.zeros((0, 3), dtype=np.int64)
    spo = np.concatenate(rows)
    trip = np.stack([spo[:, 0] - 1, spo[:, 2] - 1, spo[:, 1]], axis=1)
    return np.unique(trip, axis=0).astype(np.int64)


def _gt_mat_agreement(src: Path, ann: dict, names: list[str]) -> tuple[int, int]:
    """How many of ``names`` have exactly the json's tuples (labels and boxes) in ``gt.mat``,
    found through ``data/imagePath.mat``; and how many were found at all."""
    path_file = src / "data" / "imagePath.mat"
    paths = [
        str(np.asarray(c).reshape(-1)[0])
        for c in _cells(_loadmat(path_file), "imagePath", path_file)
    ]
    gt = _loadmat(src / "evaluation" / "gt.mat")
    cells = {
        k: _cells(gt, k, src / "evaluation" / "gt.mat")
        for k in ("gt_tuple_label", "gt_sub_bboxes", "gt_obj_bboxes")
    }
    where = {p: j for j, p in enumerate(paths)}
    same = found = 0
    for name in names:
        j = where.get(name)
        if j is None or j >= len(cells["gt_tuple_label"]):
            continue
        found += 1
        rels = ann[name]
        mine = np.array(
            [
                [r["subject"]["category"] + 1, r["predicate"] + 1, r["object"]["category"] + 1]
                + [r["subject"]["bbox"][i] for i in (2, 0, 3, 1)]
                + [r["object"]["bbox"][i] for i in (2, 0, 3, 1)]
                for r in rels
            ],
            dtype=np.float64,
        ).reshape(-1, 11)
        theirs = (
            np.concatenate(
                [
                    np.asarray(cells[k][j], dtype=np.float64).reshape(-1, n)
                    for k, n in (("gt_tuple_label", 3), ("gt_sub_bboxes", 4), ("gt_obj_bboxes", 4))
                ],
                axis=1,
            )
            if cells["gt_tuple_label"][j].size
            else np.zeros((0, 11))
        )
        same += mine.shape == theirs.shape and bool(np.array_equal(mine, theirs))
    return same, found


# ------------------------------------------------------------------------------------ conversion


def _coco(
    images: list[SGGImage], objects: list[str], img_dir: Path, ann_dir: Path, split: str
) -> dict:
    """The objects as a COCO detection json (to train the detector the relation model reads):
    0-based inclusive ``x1 y1 x2 y2`` -> ``[x1, y1, x2 - x1 + 1, y2 - y1 + 1]``, the pixels the
    box covers (as the VOC converter reads inclusive boxes); ``file_name`` relative to the
    json's folder, so the COCO dataset finds the images without ``image_dir``."""
    coco_images, anns = [], []
    for im in images:
        coco_images.append(
            {
                "id": int(im.image_id),
                "file_name": _rel_name(img_dir / im.file_name, ann_dir),
                "width": im.width,
                "height": im.height,
                "vrd_file": im.file_name,
            }
        )
        for b, c in zip(im.boxes.tolist(), im.labels.tolist()):
            w, h = b[2] - b[0] + 1, b[3] - b[1] + 1
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": int(im.image_id),
                    "category_id": int(c),
                    "bbox": [_num(b[0]), _num(b[1]), _num(w), _num(h)],
                    "area": _num(w * h),
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": f"VRD {split} objects (unique box and class) by percepta"},
        "images": coco_images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(objects)],
    }


def _image_folder(src: Path, split: str, image_dir: str | os.PathLike | None) -> Path:
    if image_dir is not None:
        p = Path(image_dir)
        if not p.is_dir():
            raise DataError(f"{p}: VRD image folder not found")
        return p
    tried = [src / "images", src / "sg_dataset" / f"sg_{split}_images"]
    for p in tried:
        if p.is_dir():
            return p
    raise DataError(f"{src}: no VRD image folder ({tried[0]} or {tried[1]}); pass image_dir")


def vrd_to_vg_sgg(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "test",
    images_only: bool = True,
    image_dir: str | os.PathLike | None = None,
) -> dict:
    """Convert the VRD json of ``split`` under ``src`` to VG-SGG files in the folder ``out``.

    Args:
        src: the VRD folder (``json_dataset/``, ``images/``, ``evaluation/``, ``data/``,
            ``LICENSE``; module docstring).
        out: output folder (created).
        split: ``"test"`` (h5 split 2, plus ``zero_shot_triplets.json``) or ``"train"``
            (split 0).
        images_only: keep only the entries whose image file exists (and count the others);
            ``False``: a missing image file is a :class:`DataError`.
        image_dir: the image folder (default ``src/images``, else the official
            ``src/sg_dataset/sg_<split>_images``).

    Returns the summary written to ``out/vrd_conversion.json``: counts (``images``,
    ``objects``, ``relations``, ``json_relations`` (those of the converted images),
    ``skipped_no_image``, ``self_relations``, ``duplicate_relations``, ...), ``image_dir``
    (absolute), ``zero_shot`` (triplet types, zero-shot relations written) and ``files``.
    Raises :class:`DataError` (one line naming the file and image) for missing or malformed
    input.
    """
    if split not in VRD_SPLITS:
        raise DataError(f"VRD split must be one of {sorted(VRD_SPLITS)}, got {split!r}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(f"{src}: VRD folder not found")
    jdir = src / "json_dataset"
    ann_file = jdir / f"annotations_{split}.json"
    objects = _names(jdir / "objects.json", "object classes")
    predicates = _names(jdir / "predicates.json", "predicates")
    ann = read_json(ann_file, "VRD annotation")
    if not isinstance(ann, dict):
        raise DataError(f"{ann_file}: expected a JSON object {{image file name: relationships}}")
    img_dir = _image_folder(src, split, image_dir)

    names = list(ann)
    ids = vrd_image_ids(len(names))
    counts = _Counts()
    images: list[SGGImage] = []
    skipped: list[str] = []
    for name, image_id in tqdm(
        list(zip(names, ids)),
        desc="converting VRD",
        unit="img",
        disable=len(names) < 500,
        leave=False,
    ):
        path = img_dir / name
        if not path.is_file():
            if images_only:
                skipped.append(name)
                for _ in _relationships(ann_file, name, ann[name], len(objects), len(predicates)):
                    pass  # validate it all the same
                continue
            raise DataError(f"{ann_file}: image {name!r}: image file not found: {path}")
        size = _image_size(path, f"{ann_file}: image {name!r}")
        images.append(
            _image(
                ann_file,
                name,
                ann[name],
                size,
                image_id,
                VRD_SPLITS[split],
                len(objects),
                len(predicates),
                counts,
            )
        )
    if not images:
        raise DataError(f"{ann_file}: none of the {len(names)} images has a file in {img_dir}")
    if counts.dropped_boxes:
        warnings.warn(
            f"{ann_file}: {counts.dropped_boxes} boxes without area inside their image were "
            f"dropped with {counts.dropped_box_relations} relations",
            stacklevel=2,
        )
    out.mkdir(parents=True, exist_ok=True)
    files = {k: str(v) for k, v in write_vg_sgg(out, images, objects, predicates).items()}
    coco_file = out / "annotations" / f"instances_{split}.json"
    write_coco(_coco(images, objects, img_dir, coco_file.parent, split), coco_file)
    files["coco"] = str(coco_file)

    zero_shot: dict[str, Any] = {"written": False}
    if split == "test":
        needed = [src / "evaluation" / "gt.mat", src / "evaluation" / "zeroShot.mat"]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            warnings.warn(
                f"{src}: no zero-shot triplets written ({', '.join(missing)} not found)",
                stacklevel=2,
            )
        else:
            trip = vrd_zero_shot_triplets(src)
            zs_file = out / "zero_shot_triplets.json"
            atomic_write_text(zs_file, json.dumps(trip.tolist()))
            files["zero_shot_triplets"] = str(zs_file)
            keys = {tuple(t) for t in trip.tolist()}
            n_zs = sum(
                (int(im.labels[s]) - 1, int(im.labels[o]) - 1, int(p)) in keys
                for im in images
                for s, o, p in im.relations.tolist()
            )
            zero_shot = {"written": True, "triplets": len(trip), "relations": n_zs}
            if (src / "data" / "imagePath.mat").is_file():
                same, found = _gt_mat_agreement(src, ann, [im.file_name for im in images])
                zero_shot["gt_mat_images_checked"] = found
                zero_shot["gt_mat_images_same"] = same
                if same != found or found != len(images):
                    warnings.warn(
                        f"{src / 'evaluation' / 'gt.mat'}: holds the json's tuples for "
                        f"{same} of the {len(images)} converted images ({found} found in "
                        "data/imagePath.mat): the .mat files may be of another VRD version",
                        stacklevel=2,
                    )

    lic = src / "LICENSE"
    if lic.is_file():
        shutil.copyfile(lic, out / "LICENSE")
        files["license"] = str(out / "LICENSE")
    else:
        warnings.warn(
            f"{src}: no LICENSE file to copy; keep the VRD licence notice with the converted files",
            stacklevel=2,
        )
    files["summary"] = str(out / "vrd_conversion.json")
    files["readme"] = str(out / "README.txt")
    summary = {
        "source": str(src.resolve()),
        "annotation_file": str(ann_file.resolve()),
        "split": split,
        "h5_split": VRD_SPLITS[split],
        "image_dir": str(img_dir.resolve()),
        "json_images": len(names),
        "skipped_no_image": len(skipped),
        **counts.__dict__,
        "zero_shot": zero_shot,
        "files": files,
    }
    atomic_write_text(out / "vrd_conversion.json", json.dumps(summary, indent=1))
    atomic_write_text(out / "README.txt", _readme(summary))
    return summary


def _readme(s: dict) -> str:
    zs = s["zero_shot"]
    if zs.get("written"):
        zs_line = (
            f"zero_shot_triplets.json: {zs['triplets']} zero-shot (subject, object, predicate) "
            "types from evaluation/gt.mat + zeroShot.mat (classes 0-based, predicates 1-based: "
            f"the evaluator's format); {zs['relations']} of the written relations are zero-shot"
        )
    else:
        zs_line = "no zero-shot triplets (train split, or evaluation/*.mat not found)"
    lines = [
        "VRD (Lu, Krishna, Bernstein, Fei-Fei, ECCV 2016) as VG-SGG files, written by percepta",
        "(percepta.data.convert_vrd; every rule is in that module's docstring).",
        "",
        f"Source:      {s['source']}",
        f"Annotations: {s['annotation_file']} (split {s['split']!r} -> h5 split {s['h5_split']})",
        f"Images:      {s['image_dir']}",
        "             (NOT copied: image_data.json names them relative to this folder)",
        "",
        "Counts:",
        f"- {s['images']} images written of the {s['json_images']} json entries "
        f"({s['skipped_no_image']} without an image file skipped)",
        f"- {s['objects']} objects: the unique (box, class) pairs of each image "
        f"({s['boxes_with_two_classes']} boxes carry a second class)",
        f"- {s['relations']} relations of the images' {s['json_relations']} json relationships: "
        f"{s['self_relations']} with subject == object dropped, {s['dropped_box_relations']} "
        f"dropped with {s['dropped_boxes']} boxes without area, "
        f"{s['duplicate_relations']} exact repeats kept",
        f"- {s['clipped_boxes']} boxes clipped to their image",
        f"- {zs_line}",
        "",
        "Boxes: VRD's 1-based inclusive [ymin, ymax, xmin, xmax] became 0-based inclusive",
        "x1 y1 x2 y2 (minus 1 on every coordinate). Labels: VRD class + 1, predicate + 1",
        "(0 = background).",
        "",
        "Use with the vg_sgg dataset (data.root = this folder), pointing it at the images:",
        f"  data.train.image_dir={s['image_dir']}",
        f"  data.val.image_dir={s['image_dir']}",
        "  data.val.zero_shot_triplets=zero_shot_triplets.json",
        "e.g. configs/scene_graph/motifs_predcls_vrd.yaml.",
        f"annotations/instances_{s['split']}.json: the same objects as COCO json (file names",
        "relative to its folder), to train a detector with the 100 VRD classes.",
        "",
        "LICENCE: the VRD data is under the Stanford notice in LICENSE (copied here from the",
        "source): individual research use only, no redistribution; keep that notice with this",
        "derived copy and cite Lu et al. (ECCV 2016).",
    ]
    return "\n".join(lines) + "\n"
