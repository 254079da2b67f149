"""The triplet-list files of ``percepta score scene-graph FILE --protocol vrd``: read, validate, write.

A format any framework can write: one row per predicted relationship, with its boxes, in the
Visual Relationship Detection (Lu et al., ECCV 2016) order *(subject, predicate, object)*.

Results file (JSON)::

    {
      "protocol": "vrd",                          optional; if present it must be "vrd"
      "task": "relationship" | "predicate",       optional, default "relationship": detection
                                                  results (phrase + relationship rows) or
                                                  predicate-detection results (GT boxes given)
      "label_base": 0,                            optional, 0 (default, as percepta) or 1 (as the
                                                  VRD .mat files): the smallest label value
      "object_names": [...], "predicate_names": [...],   optional: labels are checked against them
      "k_values": [50, 100],                      optional (default shown)
      "iou_threshold": 0.5,                       optional (default shown)
      "box_convention": "vrd" | "xyxy",           optional; --box-convention wins; default "vrd"
      "images": [
        {"image_id": 17,                          integer or string, unique
         "triplets": [                            [] for an image without prediction
           {"subject": {"label": 0, "box": [x1, y1, x2, y2]},
            "object":  {"label": 4, "box": [x1, y1, x2, y2]},
            "predicate": 2, "score": 0.83}, ...]}, ...],
      "ground_truth": {...} | [...]              optional: the GT file's object, or its "images"
    }

Ground-truth file: the same shape (``"images"``, ``"label_base"``, names) without ``"score"``;
a row may carry ``"zeroshot": true`` (the official per-row zero-shot flags; absent = false). An
embedded ``"ground_truth"`` takes the results' ``label_base`` and names unless it sets its own.
Every GT image is evaluated (an image absent from the results has no prediction, 0 hits); a
results image absent from the GT is an error.

Zero-shot file (``--zero-shot Z.json``): ``[[subject, predicate, object], ...]`` in the GT's
label base, or ``{"label_base": 1, "triplets": [...]}``. It replaces the GT's flags.

Boxes are ``[x1, y1, x2, y2]`` pixels with x2 >= x1 and y2 >= y1; ``"vrd"`` is the official
inclusive-pixel rule (width = x2 - x1 + 1, the VRD .mat convention; the public VRD json
annotations use ``[ymin, ymax, xmin, xmax]`` instead: reorder them). Labels are shifted to
0-based on reading, so a results file and a GT file may use different bases.

Every problem raises one :class:`percepta.errors.DataError` line naming the file, the image and
the row: ``FILE: image 17: triplets[3]: 'score' must be a finite number``.

The scoring command that reads these files, :func:`cli_score_vrd`, lives here too (it needs the
reader and :class:`percepta.scene_graph.vrd_protocol.VRDEvaluator`, which never imports this
module); ``percepta.scene_graph.evaluation.cli_score`` hands ``--protocol vrd`` to it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from percepta.errors import DataError
from percepta.jsonable import read_json, to_jsonable
from percepta.scene_graph.matching import ZeroShotSet
from percepta.scene_graph.vrd_protocol import BOX_CONVENTIONS, TripletImage, VRDEvaluator

__all__ = [
    "TripletFile",
    "read_triplet_file",
    "parse_triplet_document",
    "align",
    "load_vrd_zero_shot",
    "triplet_records",
    "write_triplet_file",
    "cli_score_vrd",
]

ROLES = ("results", "ground_truth")
FILE_TASKS = ("relationship", "predicate")


@dataclass
class TripletFile:
    """A parsed triplet file. ``images[i]`` (labels 0-based) belongs to ``image_ids[i]``."""

    path: str
    role: str
    task: str
    label_base: int
    image_ids: list[Any]
    images: list[TripletImage]
    k_values: list[int]
    iou_threshold: float
    box_convention: str | None
    object_names: list[str] | None
    predicate_names: list[str] | None
    has_zeroshot_flags: bool = False
    ground_truth: TripletFile | None = None


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _row_problem(t: Any, role: str, base: int, n_obj: int | None, n_pred: int | None) -> str | None:
    """What is wrong with one triplet row (``None``: nothing), checked field by field."""
    if not isinstance(t, Mapping):
        return f"must be an object, got {type(t).__name__}"
    for part, limit in (("subject", n_obj), ("object", n_obj)):
        e = t.get(part)
        if not isinstance(e, Mapping):
            return f"{part!r} must be an object with 'label' and 'box'"
        lab = e.get("label")
        if not isinstance(lab, int) or isinstance(lab, bool):
            return f"{part}.label must be an integer, got {lab!r}"
        if lab < base:
            return f"{part}.label {lab} is below the label base {base}"
        if limit is not None and lab >= base + limit:
            return f"{part}.label {lab} is beyond the {limit} object names (label base {base})"
        box = e.get("box")
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
            return f"{part}.box must be 4 numbers [x1, y1, x2, y2], got {box!r}"
        if not all(math.isfinite(v) for v in box):
            return f"{part}.box {box} contains NaN or infinite coordinates"
        if box[2] < box[0] or box[3] < box[1]:
            return f"{part}.box {box} has x2 < x1 or y2 < y1 (boxes are [x1, y1, x2, y2])"
    p = t.get("predicate")
    if not isinstance(p, int) or isinstance(p, bool):
        return f"'predicate' must be an integer, got {p!r}"
    if p < base:
        return f"'predicate' {p} is below the label base {base}"
    if n_pred is not None and p >= base + n_pred:
        return f"'predicate' {p} is beyond the {n_pred} predicate names (label base {base})"
    if role == "results":
        s = t.get("score")
        if not _number(s) or not math.isfinite(s):
            return f"'score' must be a finite number, got {s!r}"
    elif "zeroshot" in t and not isinstance(t["zeroshot"], bool):
        return f"'zeroshot' must be true or false, got {t['zeroshot']!r}"
    return None


def _parse_triplets(
    trips: list[Any], where: str, role: str, base: int, n_obj: int | None, n_pred: int | None
) -> tuple[TripletImage, bool]:
    """One image's rows as a :class:`TripletImage` (0-based labels) and whether any row carries
    a ``zeroshot`` flag. A fast vectorised path; the first bad row is located on failure."""

    def fail() -> DataError:
        for r, t in enumerate(trips):
            problem = _row_problem(t, role, base, n_obj, n_pred)
            if problem:
                return DataError(f"{where}: triplets[{r}]: {problem}")
        return DataError(f"{where}: malformed triplets (integers beyond 64 bits?)")

    if not trips:
        empty = TripletImage(np.zeros((0, 3), np.int64), np.zeros((0, 4)), np.zeros((0, 4)))
        if role == "results":
            empty.confs = np.zeros(0)
        else:
            empty.zeroshot = np.zeros(0, dtype=bool)
        return empty, False
    try:
        labels = np.array(
            [(t["subject"]["label"], t["predicate"], t["object"]["label"]) for t in trips]
        )
        sub = np.array([t["subject"]["box"] for t in trips])
        obj = np.array([t["object"]["box"] for t in trips])
        confs = np.array([t["score"] for t in trips]) if role == "results" else None
        flags = [t.get("zeroshot", False) for t in trips] if role == "ground_truth" else []
    except (KeyError, TypeError, ValueError, IndexError):
        raise fail() from None
    ok = labels.dtype.kind == "i" and labels.shape == (len(trips), 3)
    ok = ok and sub.shape == obj.shape == (len(trips), 4)
    ok = ok and sub.dtype.kind in "iuf" and obj.dtype.kind in "iuf"  # no strings, no None
    ok = ok and (confs is None or confs.dtype.kind in "iuf" and confs.shape == (len(trips),))
    if ok:
        sub, obj = sub.astype(np.float64), obj.astype(np.float64)
        confs = None if confs is None else confs.astype(np.float64)
        lo = labels.min(0)
        ok = bool((lo >= base).all())
        if n_obj is not None:
            ok = ok and int(max(labels[:, 0].max(), labels[:, 2].max())) < base + n_obj
        if n_pred is not None:
            ok = ok and int(labels[:, 1].max()) < base + n_pred
        boxes = np.concatenate([sub, obj], 1)
        ok = ok and bool(np.isfinite(boxes).all())
        ok = (
            ok
            and not (
                (boxes[:, [2, 6]] < boxes[:, [0, 4]]) | (boxes[:, [3, 7]] < boxes[:, [1, 5]])
            ).any()
        )
        ok = ok and (confs is None or bool(np.isfinite(confs).all()))
        ok = ok and all(isinstance(f, bool) for f in flags)
        # numpy turns a JSON true among numbers into 1: only a per-value test sees it
        ok = ok and not any(
            isinstance(x, bool)
            for t in trips
            for x in (
                t["subject"]["label"],
                t["predicate"],
                t["object"]["label"],
                t.get("score"),
                *t["subject"]["box"],
                *t["object"]["box"],
            )
        )
    if not ok:
        raise fail()
    img = TripletImage(labels.astype(np.int64) - base, sub, obj, confs)
    has_flags = role == "ground_truth" and any("zeroshot" in t for t in trips)
    if role == "ground_truth":
        img.zeroshot = np.array(flags, dtype=bool)
    return img, has_flags


def _names(data: Mapping[str, Any], key: str, source: str) -> list[str] | None:
    names = data.get(key)
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise DataError(f"{source}: {key!r} must be a non-empty list of strings")
    return names


def parse_triplet_document(
    data: Any,
    *,
    source: str,
    role: str = "results",
    inherit: TripletFile | None = None,
) -> TripletFile:
    """Validate a parsed triplet document (schema in the module docstring).

    Args:
        data: the JSON object (for ``role="ground_truth"`` also a bare list of image records).
        source: the file name used in errors.
        role: ``"results"`` (rows need ``score``) or ``"ground_truth"``.
        inherit: for an embedded GT, the results whose ``label_base`` and names it defaults to.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if role == "ground_truth" and isinstance(data, list):
        data = {"images": data}
    if not isinstance(data, Mapping):
        raise DataError(f"{source}: the top level must be an object with 'images'")
    proto = data.get("protocol", "vrd")
    if proto != "vrd":
        raise DataError(f"{source}: 'protocol' is {proto!r}; this reader handles 'vrd' files")
    base = data.get("label_base", inherit.label_base if inherit else 0)
    if base not in (0, 1) or isinstance(base, bool):
        raise DataError(f"{source}: 'label_base' must be 0 or 1, got {base!r}")
    task = data.get("task", "relationship")
    if task not in FILE_TASKS:
        raise DataError(f"{source}: 'task' must be one of {', '.join(FILE_TASKS)}, got {task!r}")
    ks = data.get("k_values", [50, 100])
    if (
        not isinstance(ks, list)
        or not ks
        or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in ks)
    ):
        raise DataError(f"{source}: 'k_values' must be a list of positive integers, got {ks!r}")
    thr = data.get("iou_threshold", 0.5)
    if not _number(thr) or not 0 < thr <= 1:
        raise DataError(f"{source}: 'iou_threshold' must be a number in (0, 1], got {thr!r}")
    conv = data.get("box_convention")
    if conv is not None and conv not in BOX_CONVENTIONS:
        raise DataError(
            f"{source}: 'box_convention' must be one of {', '.join(BOX_CONVENTIONS)}, got {conv!r}"
        )
    obj_names = _names(data, "object_names", source)
    pred_names = _names(data, "predicate_names", source)
    if inherit is not None:
        obj_names = obj_names or inherit.object_names
        pred_names = pred_names or inherit.predicate_names
    records = data.get("images")
    if not isinstance(records, list):
        raise DataError(f"{source}: missing 'images' (a list of image records)")
    ids: list[Any] = []
    images: list[TripletImage] = []
    seen: set[Any] = set()
    any_flags = False
    n_obj = len(obj_names) if obj_names else None
    n_pred = len(pred_names) if pred_names else None
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping) or "image_id" not in rec:
            raise DataError(f"{source}: images[{i}] is not an object with an 'image_id'")
        iid = rec["image_id"]
        if not isinstance(iid, (int, str)) or isinstance(iid, bool):
            raise DataError(f"{source}: images[{i}]: 'image_id' must be an integer or a string")
        if iid in seen:
            raise DataError(f"{source}: duplicate image id {iid!r} (images[{i}])")
        seen.add(iid)
        trips = rec.get("triplets")
        if not isinstance(trips, list):
            raise DataError(f"{source}: image {iid!r}: missing 'triplets' (a list; [] for none)")
        img, flags = _parse_triplets(trips, f"{source}: image {iid!r}", role, base, n_obj, n_pred)
        img.image_id = iid
        any_flags |= flags
        ids.append(iid)
        images.append(img)
    out = TripletFile(
        path=source,
        role=role,
        task=task,
        label_base=base,
        image_ids=ids,
        images=images,
        k_values=list(ks),
        iou_threshold=float(thr),
        box_convention=conv,
        object_names=obj_names,
        predicate_names=pred_names,
        has_zeroshot_flags=any_flags,
    )
    if role == "results" and data.get("ground_truth") is not None:
        out.ground_truth = parse_triplet_document(
            data["ground_truth"],
            source=f"{source} (ground_truth)",
            role="ground_truth",
            inherit=out,
        )
    return out


def read_triplet_file(path: str | Path, role: str = "results") -> TripletFile:
    """Read and validate a results (``role="results"``) or GT (``"ground_truth"``) file."""
    what = "VRD triplet results" if role == "results" else "VRD triplet ground truth"
    return parse_triplet_document(read_json(path, what), source=str(path), role=role)


def align(
    gt: TripletFile, results: TripletFile
) -> tuple[list[TripletImage], list[TripletImage | None]]:
    """The GT images in GT order and, for each, the results' image (``None`` if absent)."""
    by_id = dict(zip(results.image_ids, results.images))
    known = set(gt.image_ids)
    extra = [i for i in results.image_ids if i not in known]
    if extra:
        raise DataError(
            f"{results.path}: image {extra[0]!r} is not in the ground truth {gt.path} "
            f"({len(extra)} such image(s))"
        )
    return list(gt.images), [by_id.get(i) for i in gt.image_ids]


def load_vrd_zero_shot(source: Any, label_base: int = 0) -> np.ndarray:
    """Zero-shot triplets ``[Z, 3]`` (subject, predicate, object), 0-based, from a JSON file (or
    an already parsed object): ``[[s, p, o], ...]`` in ``label_base``, or ``{"label_base": b,
    "triplets": [...]}``."""
    name = str(source) if isinstance(source, (str, Path)) else "zero-shot triplets"
    data = (
        read_json(source, "VRD zero-shot triplets") if isinstance(source, (str, Path)) else source
    )
    if isinstance(data, Mapping):
        label_base = data.get("label_base", label_base)
        if label_base not in (0, 1) or isinstance(label_base, bool):
            raise DataError(f"{name}: 'label_base' must be 0 or 1, got {label_base!r}")
        data = data.get("triplets")
    if not isinstance(data, list):
        raise DataError(f"{name}: expected a list of [subject, predicate, object] triplets")
    for r, t in enumerate(data):
        if (
            not isinstance(t, list)
            or len(t) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in t)
        ):
            raise DataError(f"{name}: row {r} must be 3 integers [subject, predicate, object]")
        if min(t) < label_base:
            raise DataError(f"{name}: row {r} = {t} has a label below the label base {label_base}")
    return np.asarray(data, dtype=np.int64).reshape(-1, 3) - label_base


def triplet_records(
    images: Sequence[TripletImage | Mapping[str, Any]],
    image_ids: Sequence[Any],
    *,
    label_base: int = 0,
    with_scores: bool = True,
) -> list[dict[str, Any]]:
    """The ``"images"`` list of a triplet file for 0-based images (labels written in
    ``label_base``; GT ``zeroshot`` flags kept, results' ``score`` from ``confs``)."""
    out = []
    for iid, img in zip(image_ids, images):
        get = (lambda k, im=img: getattr(im, k)) if isinstance(img, TripletImage) else img.get
        labels = np.asarray(get("labels"), dtype=np.int64).reshape(-1, 3) + label_base
        sub = np.asarray(get("sub_boxes"), dtype=np.float64).reshape(-1, 4)
        obj = np.asarray(get("obj_boxes"), dtype=np.float64).reshape(-1, 4)
        confs = get("confs") if with_scores else None
        zs = None if with_scores else get("zeroshot")
        rows = []
        for r in range(len(labels)):
            row: dict[str, Any] = {
                "subject": {"label": int(labels[r, 0]), "box": [_plain(v) for v in sub[r]]},
                "object": {"label": int(labels[r, 2]), "box": [_plain(v) for v in obj[r]]},
                "predicate": int(labels[r, 1]),
            }
            if confs is not None:
                row["score"] = float(confs[r])
            if zs is not None:
                row["zeroshot"] = bool(zs[r])
            rows.append(row)
        out.append({"image_id": iid, "triplets": rows})
    return out


def _plain(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def write_triplet_file(
    path: str | Path,
    images: Sequence[TripletImage | Mapping[str, Any]],
    image_ids: Sequence[Any],
    *,
    task: str = "relationship",
    label_base: int = 0,
    ground_truth: tuple[Sequence[Any], Sequence[Any]] | None = None,
    **extra: Any,
) -> Path:
    """Write a results file (0-based ``images`` with ``confs``); ``ground_truth`` = (GT images,
    their ids) embeds the GT; ``extra`` top-level keys (``k_values``, names...) are written as
    given."""
    doc: dict[str, Any] = {"protocol": "vrd", "task": task, "label_base": label_base, **extra}
    doc["images"] = triplet_records(images, image_ids, label_base=label_base)
    if ground_truth is not None:
        gt_images, gt_ids = ground_truth
        doc["ground_truth"] = {
            "images": triplet_records(gt_images, gt_ids, label_base=label_base, with_scores=False)
        }
    path = Path(path)
    path.write_text(json.dumps(doc))
    return path


def cli_score_vrd(args: argparse.Namespace) -> int:
    """``percepta score scene-graph FILE --protocol vrd [--gt GT.json] [--zero-shot Z.json]
    [--box-convention vrd|xyxy] [--gt-count rows|matlab_length] [--json]`` (file formats:
    :mod:`percepta.scene_graph.triplet_io`).

    The file's ``task`` decides the rows: ``relationship`` (default) -> phrase and relationship
    detection, ``predicate`` -> predicate detection. Zero-shot rows appear with ``--zero-shot``
    or when GT rows carry ``zeroshot`` flags (``--zero-shot`` wins)."""
    for flag, name in (("mode", "--mode"), ("plot", "--plot")):
        if getattr(args, flag, None):
            raise DataError(f"{name} applies to --protocol sgg only")
    results = read_triplet_file(args.file, role="results")
    gt_path = getattr(args, "gt", None)
    if gt_path:
        gt = read_triplet_file(gt_path, role="ground_truth")
    elif results.ground_truth is not None:
        gt = results.ground_truth
    else:
        raise DataError(
            f"{args.file}: no ground truth: pass --gt GT.json or embed it under 'ground_truth'"
        )
    gt_images, pred_images = align(gt, results)
    zs_path = getattr(args, "zero_shot", None)
    zero_shot = gt.has_zeroshot_flags
    if zs_path:
        zs = ZeroShotSet(load_vrd_zero_shot(zs_path, label_base=gt.label_base))
        for img in gt_images:
            img.zeroshot = zs.contains(img.labels)
        zero_shot = True
    convention = getattr(args, "box_convention", None) or results.box_convention or "vrd"
    mode = "predcls" if results.task == "predicate" else "sgdet"
    try:
        ev = VRDEvaluator(
            mode=mode,
            k=results.k_values,
            zero_shot=zero_shot,
            iou_threshold=results.iou_threshold,
            box_convention=convention,
            gt_count=getattr(args, "gt_count", None) or "rows",
            primary_metric=f"R@{max(results.k_values)}",
        )
    except ValueError as e:
        raise DataError(f"{args.file}: {e}") from None
    ev.update_triplets(list(range(len(gt_images))), gt_images, pred_images)
    result = ev.compute()
    result["per_image"]["image_ids"] = list(gt.image_ids)  # positions back to the file's ids
    if getattr(args, "json", False):
        print(json.dumps(to_jsonable({"protocol": "vrd", "task": results.task, **result})))
    else:
        sys.stdout.write(ev.format_table(result))
    return 0
