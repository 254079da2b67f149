"""Validate COCO files: annotation files (every defect, per file and per record) and results.

This is the one COCO validator of percepta, with one set of rules (below) for the three users:

* ``percepta data check PATH`` and :class:`percepta.data.coco.CocoDetection` (the training /
  eval dataset) run :func:`check_coco_dict` with ``purpose="dataset"``;
* :func:`percepta.detection.coco_results.load_ground_truth` (the COCO evaluator's ground truth)
  runs it with ``purpose="evaluation"``, which needs only what bbox evaluation reads;
* :func:`percepta.detection.coco_results.results_to_array` (results files, i.e. lists of
  detections ``image_id, category_id, bbox, score``) runs :func:`results_rows`.

The *fast* checks (:func:`check_coco_dict`) look only at the parsed json: missing top-level
keys, wrong field types, duplicate ids, unknown image/category ids, boxes with negative, zero
or out-of-image extent, empty categories, crowd counts. The *image* checks
(:func:`check_images`) open each file with PIL (header + ``verify()``, no full decode) and
compare its size with the json's ``width``/``height``.

Rules (the same in every path; :func:`bbox_problem`, :func:`is_int`, :func:`is_number`):

* ids (``id``, ``image_id``, ``category_id``) are integers (Python or numpy), never booleans;
* ``bbox`` is a list of 4 finite real numbers ``[x, y, w, h]`` (no booleans, NaN or inf) with
  ``w >= 0`` and ``h >= 0``. A negative size is an error everywhere (COCO's IoU code gives
  meaningless overlaps for it). A **zero** width or height is valid: pycocotools and
  faster-coco-eval accept it (area 0, IoU 0 with every box: a ground truth nothing can match,
  a detection that matches nothing), so evaluation keeps it exactly as those tools do; the
  training loader drops zero-size ground-truth boxes (there is nothing to regress), so the
  annotation checker reports them as a warning;
* ``area`` (optional; ``w * h`` when absent) is a finite number ``>= 0`` (COCOeval silently
  ignores a ground truth of negative area in every area range);
* ``iscrowd`` is 0 or 1 (``false``/``true`` too); a result's ``score`` is a finite number.

``purpose="evaluation"`` differs only in what it does not need: image ``file_name``,
``width``/``height`` (checked when present), category ``name`` (checked when present;
defaults to the id), segmentations (bbox evaluation never reads them), the warnings about
boxes the training loader drops or clips (evaluation keeps every box, as the COCO tools do)
and annotation ``id`` s, which may be absent from *every* annotation (then numbered 1..N).

Severity: ``error`` = the loader refuses the file (it would train on wrong data); ``warning`` =
the loader copes (zero-size boxes are dropped, boxes partly outside the image are clipped,
empty categories are allowed, as in COCO subsets). The json structure follows the COCO format
description (https://cocodataset.org/#format-data); pycocotools accepts the same files.

This module imports no torch (numpy only inside :func:`results_rows`), so the CLI check starts
fast.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import numbers
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from percepta.errors import DataError
from percepta.jsonable import InvalidJsonError, read_json

__all__ = [
    "Problem",
    "CheckReport",
    "OUTSIDE_TOLERANCE",
    "is_int",
    "is_number",
    "bbox_problem",
    "box_issue",
    "load_coco_json",
    "check_coco_dict",
    "detection_problem",
    "results_rows",
    "image_dir_candidates",
    "guess_image_dir",
    "check_images",
    "check_coco",
    "cli_check",
]

#: Boxes may exceed the image by this many pixels before they count as "outside" (float noise
#: in real annotations); they are clipped to the image either way.
OUTSIDE_TOLERANCE = 1.0

Purpose = Literal["dataset", "evaluation"]


@dataclass
class Problem:
    """One defect: ``severity`` is ``"error"`` or ``"warning"``; ``record`` names the json
    record (``"annotation id 7"``, ``"image id 3 ('a.jpg')"``, ``"line 4 col 17"``); ``where``
    is its position in the file (``"annotations[6]"``) when it has one."""

    severity: str
    kind: str
    file: str
    record: str
    message: str
    where: str = ""

    def __str__(self) -> str:
        return f"{self.file}: {self.record}: {self.message}"

    def line(self) -> str:
        """One line naming the file, the position and the record: what a raised error says."""
        rec = (
            self.record
            if not self.where or self.where == self.record
            else f"{self.where} ({self.record})"
        )
        return f"{self.file}: {rec}: {self.message}"


@dataclass
class CheckReport:
    """Everything found in one annotation file."""

    file: str
    image_dir: str | None = None
    num_images: int = 0
    num_annotations: int = 0
    num_categories: int = 0
    num_crowd: int = 0
    num_images_without_annotations: int = 0
    problems: list[Problem] = field(default_factory=list)

    def add(self, severity: str, kind: str, record: str, message: str, where: str = "") -> None:
        self.problems.append(Problem(severity, kind, self.file, record, message, where))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings are allowed)."""
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise one :class:`DataError` line: the first error and how many more there are."""
        errs = self.errors
        if errs:
            more = f" (and {len(errs) - 1} more errors)" if len(errs) > 1 else ""
            raise DataError(errs[0].line() + more)

    def summary(self) -> str:
        return (
            f"{self.file}: {self.num_images} images, {self.num_annotations} annotations "
            f"({self.num_crowd} crowd), {self.num_categories} categories, "
            f"{self.num_images_without_annotations} images without annotations; "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings"
        )

    def format_text(self, max_per_kind: int = 50) -> str:
        """The summary line, then the problems grouped by severity and kind."""
        lines = [self.summary()]
        if self.image_dir:
            lines.append(f"  images: {self.image_dir}")
        groups: dict[tuple[str, str], list[Problem]] = defaultdict(list)
        for p in self.problems:
            groups[(p.severity, p.kind)].append(p)
        for (sev, kind), items in sorted(
            groups.items(), key=lambda kv: (kv[0][0] != "error", kv[0][1])
        ):
            lines.append(f"  {sev} {kind} ({len(items)}):")
            for p in items[: max(0, max_per_kind)]:
                lines.append(f"    {p.record}: {p.message}")
            if len(items) > max_per_kind:
                lines.append(f"    ... and {len(items) - max_per_kind} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["num_errors"], d["num_warnings"], d["ok"] = len(self.errors), len(self.warnings), self.ok
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# --------------------------------------------------------------------------------------------
# the rules


def is_int(v: Any) -> bool:
    """An integer id: Python or numpy integer, not a boolean."""
    t = type(v)
    if t is int:  # the common case first: ABC isinstance checks are slow
        return True
    return t is not bool and isinstance(v, numbers.Integral)


def is_number(v: Any, finite: bool = True) -> bool:
    """A real number (Python or numpy), not a boolean; finite unless ``finite=False``."""
    t = type(v)
    if t is float:
        return not finite or math.isfinite(v)
    if t is int:
        return not finite or -sys.float_info.max <= v <= sys.float_info.max
    if t is bool or not isinstance(v, numbers.Real) or t.__name__ == "bool_":
        return False
    return not finite or math.isfinite(v)


_PLAIN_NUMBERS = {int, float}


def bbox_problem(bbox: Any) -> tuple[str, str] | None:
    """``(kind, message)`` when ``bbox`` breaks the box rule (module docstring), else ``None``.

    Kinds: ``"bad_bbox"`` (not 4 real numbers, or NaN/inf), ``"negative_box_size"``.
    """
    if (
        not isinstance(bbox, (list, tuple))
        or len(bbox) != 4
        or not (set(map(type, bbox)) <= _PLAIN_NUMBERS or all(is_number(v, False) for v in bbox))
    ):
        return "bad_bbox", f"'bbox' must be a list of 4 numbers [x, y, w, h], got {bbox!r:.80}"
    if not all(map(is_number, bbox)):
        return "bad_bbox", f"'bbox' has a NaN or infinite value: {list(bbox)!r:.80}"
    if bbox[2] < 0 or bbox[3] < 0:
        return "negative_box_size", f"'bbox' has a negative width or height: {list(bbox)!r:.80}"
    return None


def box_issue(x: float, y: float, w: float, h: float, width: float, height: float) -> str | None:
    """Classify a COCO ``[x, y, w, h]`` box on a ``width x height`` image.

    Returns ``"negative"`` (w or h < 0), ``"zero"`` (w or h == 0), ``"outside"`` (no overlap
    with the image), ``"partly_outside"`` (exceeds the image by more than
    :data:`OUTSIDE_TOLERANCE` px) or ``None``. The loader drops the first three kinds (negative
    is refused as an error) and clips the fourth.
    """
    if w < 0 or h < 0:
        return "negative"
    if w == 0 or h == 0:
        return "zero"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "outside"
    t = OUTSIDE_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return "partly_outside"
    return None


# --------------------------------------------------------------------------------------------
# json parsing and the fast checks


def load_coco_json(path: str | os.PathLike) -> dict:
    """Parse ``path`` with :func:`percepta.jsonable.read_json`; a missing file, invalid json
    (with line/col) or a non-object raises :class:`DataError` naming the file."""
    data = read_json(path, "COCO annotation")
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: the top level must be a json object with 'images', "
            f"'annotations' and 'categories', got {type(data).__name__}"
        )
    return data


def _check_segmentation(
    seg: Any, img: dict | None, report: CheckReport, rec: str, where: str
) -> None:
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or not all(is_number(v) for v in poly):
                report.add(
                    "error",
                    "bad_segmentation",
                    rec,
                    f"segmentation polygon {k} must be a list of numbers",
                    where,
                )
                return
            if len(poly) < 6 or len(poly) % 2:
                report.add(
                    "warning",
                    "degenerate_polygon",
                    rec,
                    f"segmentation polygon {k} has {len(poly)} coordinates "
                    "(needs an even number >= 6); ignored for masks",
                    where,
                )
    elif isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (
            isinstance(size, list) and len(size) == 2 and all(is_int(v) for v in size)
        ) or not isinstance(counts, (list, str)):
            report.add(
                "error",
                "bad_segmentation",
                rec,
                "RLE segmentation needs 'size': [h, w] and 'counts' (list or string)",
                where,
            )
        elif (
            img is not None
            and is_int(img.get("height"))
            and is_int(img.get("width"))
            and list(size) != [img["height"], img["width"]]
        ):
            report.add(
                "error",
                "bad_segmentation",
                rec,
                f"RLE size {size} differs from the image's [height, width] "
                f"[{img['height']}, {img['width']}]",
                where,
            )
    else:
        report.add(
            "error",
            "bad_segmentation",
            rec,
            f"segmentation must be a list of polygons or an RLE dict, got {type(seg).__name__}",
            where,
        )


def _check_categories(cats: list, report: CheckReport, purpose: Purpose) -> set[int]:
    cat_ids: set[int] = set()
    cat_names: dict[str, int] = {}
    for i, c in enumerate(cats):
        where = f"categories[{i}]"
        if not isinstance(c, dict) or not is_int(c.get("id")):
            report.add(
                "error",
                "bad_category",
                where,
                "category must be an object with an integer 'id'",
                where,
            )
            continue
        rec = f"category id {c['id']}"
        if c["id"] in cat_ids:
            report.add("error", "duplicate_id", rec, "duplicate category id", where)
        cat_ids.add(c["id"])
        name = c.get("name")
        if name is None and purpose == "evaluation":
            continue
        if not isinstance(name, str) or not name:
            report.add(
                "error", "bad_category", rec, "category needs a non-empty string 'name'", where
            )
        elif name in cat_names:
            report.add(
                "warning",
                "duplicate_name",
                rec,
                f"category name {name!r} also used by category id {cat_names[name]}",
                where,
            )
        else:
            cat_names[name] = c["id"]
    return cat_ids


def _check_images(images: list, report: CheckReport, purpose: Purpose) -> dict[int, dict]:
    imgs: dict[int, dict] = {}
    file_names: dict[str, int] = {}
    for i, im in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(im, dict) or not is_int(im.get("id")):
            report.add(
                "error", "bad_image", where, "image must be an object with an integer 'id'", where
            )
            continue
        rec = f"image id {im['id']}"
        if im["id"] in imgs:
            report.add("error", "duplicate_id", rec, "duplicate image id", where)
            continue
        imgs[im["id"]] = im
        fn = im.get("file_name")
        if fn is None and purpose == "evaluation":
            pass
        elif not isinstance(fn, str) or not fn:
            report.add(
                "error", "bad_image", rec, "image needs a non-empty string 'file_name'", where
            )
        elif fn in file_names:
            report.add(
                "warning",
                "duplicate_file_name",
                f"{rec} ({fn!r})",
                f"file also used by image id {file_names[fn]}",
                where,
            )
        else:
            file_names[fn] = im["id"]
        for key in ("width", "height"):
            v = im.get(key)
            if v is None:
                if purpose == "dataset":
                    report.add("error", "missing_key", rec, f"image has no {key!r}", where)
            elif not is_int(v) or v <= 0:
                report.add(
                    "error",
                    "wrong_type",
                    rec,
                    f"{key!r} must be a positive integer, got {v!r}",
                    where,
                )
    return imgs


def _check_box_geometry(bbox: list, img: dict, report: CheckReport, rec: str, where: str) -> bool:
    """Warnings for a valid box relative to its image; True when partly outside."""
    issue = box_issue(*bbox, img["width"], img["height"])
    size = f"{img['width']}x{img['height']}"
    if issue == "zero":
        report.add(
            "warning",
            "zero_size_box",
            rec,
            f"bbox {bbox} has zero width or height (dropped when loading)",
            where,
        )
    elif issue == "outside":
        report.add(
            "warning",
            "box_outside_image",
            rec,
            f"bbox {bbox} lies entirely outside the {size} image (dropped when loading)",
            where,
        )
    elif issue == "partly_outside":
        report.add(
            "warning",
            "box_partly_outside",
            rec,
            f"bbox {bbox} exceeds the {size} image (clipped when loading)",
            where,
        )
    return issue == "partly_outside"


def check_coco_dict(data: dict, report: CheckReport, *, purpose: Purpose = "dataset") -> None:
    """Fast checks of a parsed COCO json (no file access); appends to ``report``.

    ``purpose="dataset"`` (the default) checks what the training loader needs;
    ``"evaluation"`` what bbox evaluation needs (see the module docstring).
    """
    if purpose not in ("dataset", "evaluation"):
        raise ValueError(f"purpose must be 'dataset' or 'evaluation', got {purpose!r}")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    for k in missing:
        report.add("error", "missing_key", "(top level)", f"missing top-level key {k!r}")
    for k in ("images", "annotations", "categories"):
        if k in data and not isinstance(data[k], list):
            report.add(
                "error",
                "wrong_type",
                "(top level)",
                f"{k!r} must be a list, got {type(data[k]).__name__}",
            )
    images = data.get("images") if isinstance(data.get("images"), list) else []
    anns = data.get("annotations") if isinstance(data.get("annotations"), list) else []
    cats = data.get("categories") if isinstance(data.get("categories"), list) else []
    report.num_images, report.num_annotations, report.num_categories = (
        len(images),
        len(anns),
        len(cats),
    )

    cat_ids = _check_categories(cats, report, purpose)
    imgs = _check_images(images, report, purpose)
    # evaluation may omit every annotation id (numbered 1..N), not some of them
    ids_optional = purpose == "evaluation" and not any(
        isinstance(a, dict) and "id" in a for a in anns
    )
    ann_ids: set[int] = set()
    per_image: Counter[int] = Counter()
    per_cat: Counter[int] = Counter()
    for i, a in enumerate(anns):
        where = f"annotations[{i}]"
        if not isinstance(a, dict):
            report.add("error", "bad_annotation", where, "annotation must be an object", where)
            continue
        rec = where
        if ids_optional:
            pass
        elif not is_int(a.get("id")):
            report.add(
                "error",
                "wrong_type",
                rec,
                f"annotation 'id' must be an integer, got {a.get('id')!r}",
                where,
            )
        else:
            rec = f"annotation id {a['id']}"
            if a["id"] in ann_ids:
                report.add("error", "duplicate_id", rec, "duplicate annotation id", where)
            ann_ids.add(a["id"])
        img = None
        iid = a.get("image_id")
        if not is_int(iid):
            report.add(
                "error", "wrong_type", rec, f"'image_id' must be an integer, got {iid!r}", where
            )
        elif iid not in imgs:
            report.add("error", "unknown_image", rec, f"image_id {iid} is not in 'images'", where)
        else:
            img = imgs[iid]
            per_image[iid] += 1
        cid = a.get("category_id")
        if not is_int(cid):
            report.add(
                "error", "wrong_type", rec, f"'category_id' must be an integer, got {cid!r}", where
            )
        elif cid not in cat_ids:
            report.add(
                "error", "unknown_category", rec, f"category_id {cid} is not in 'categories'", where
            )
        else:
            per_cat[cid] += 1
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, float):
            report.add(
                "error", "wrong_type", rec, f"'iscrowd' must be 0 or 1, got {crowd!r}", where
            )
        elif crowd:
            report.num_crowd += 1
        if "area" in a and (not is_number(a["area"]) or a["area"] < 0):
            report.add(
                "error",
                "wrong_type",
                rec,
                f"'area' must be a finite number >= 0, got {a['area']!r}",
                where,
            )
        if "segmentation" in a and purpose == "dataset":
            _check_segmentation(a["segmentation"], img, report, rec, where)
        bbox = a.get("bbox")
        if bbox is None:
            report.add("error", "missing_key", rec, "annotation has no 'bbox'", where)
            continue
        problem = bbox_problem(bbox)
        if problem:
            report.add("error", problem[0], rec, problem[1], where)
        elif (
            purpose == "dataset"
            and img is not None
            and is_int(img.get("width"))
            and is_int(img.get("height"))
        ):  # what the training loader drops or clips
            _check_box_geometry(bbox, img, report, rec, where)

    report.num_images_without_annotations = sum(1 for iid in imgs if per_image[iid] == 0)
    for c in cats:
        if isinstance(c, dict) and is_int(c.get("id")) and per_cat[c["id"]] == 0 and anns:
            report.add(
                "warning",
                "empty_category",
                f"category id {c['id']} ({c.get('name')!r})",
                "no annotations in this file",
            )


# --------------------------------------------------------------------------------------------
# results files: lists of detections checked against a ground truth's ids


def detection_problem(
    i: int, r: Any, image_ids: Collection[int], cat_ids: Sequence[int]
) -> str | None:
    """Why detection ``[i]`` of a results list is invalid (the record and the rule), or None.

    ``image_ids``/``cat_ids``: the ground truth's ids (fast membership: a set for the images).
    """
    if not isinstance(r, dict):
        return f"detection [{i}] must be an object, got {type(r).__name__}: {r!r:.60}"
    where = f"detection [{i}] (image_id={r.get('image_id')}, category_id={r.get('category_id')})"
    for key in ("image_id", "category_id", "bbox", "score"):
        if key not in r:
            return f"{where}: missing key '{key}'"
    if not is_int(r["image_id"]):
        return f"{where}: 'image_id' must be an integer"
    if not is_int(r["category_id"]):
        return f"{where}: 'category_id' must be an integer"
    problem = bbox_problem(r["bbox"])
    if problem:
        return f"{where}: {problem[1]}"
    if not is_number(r["score"]):
        return f"{where}: 'score' must be a finite number, got {r['score']!r:.40}"
    if int(r["image_id"]) not in image_ids:
        return f"{where}: image_id {r['image_id']} is not an image of the ground truth"
    if int(r["category_id"]) not in cat_ids:
        return (
            f"{where}: category_id {r['category_id']} is not a category of the ground truth "
            f"(known: {list(cat_ids)[:20]}{' ...' if len(cat_ids) > 20 else ''})"
        )
    return None


def results_rows(
    records: Any, image_ids: Sequence[int], cat_ids: Sequence[int], source: str = "results"
) -> Any:
    """Validate a COCO results list; return ``[N, 7]`` float64 numpy rows
    ``[image_id, x, y, w, h, score, category_id]`` (pycocotools' ``loadNumpyAnnotations``).

    A vectorised path applies the rules of :func:`detection_problem` to well-formed input
    (booleans, which numpy would silently turn into numbers, are looked for by type); on any
    defect a per-record scan finds the first bad record and raises :class:`DataError` naming
    ``source``, its index, image_id and category_id. An empty list is valid (no detections).
    """
    import numpy as np

    if not isinstance(records, list):
        raise DataError(
            f"{source}: COCO results must be a JSON list of detections, "
            f"got {type(records).__name__}"
        )
    n = len(records)
    if n == 0:
        return np.zeros((0, 7), dtype=np.float64)
    img_ids = np.asarray(image_ids, dtype=np.int64)
    cats = np.asarray(cat_ids, dtype=np.int64)
    try:
        img_l = [r["image_id"] for r in records]
        cat_l = [r["category_id"] for r in records]
        box_l = [r["bbox"] for r in records]
        score_l = [r["score"] for r in records]
        types = set(
            map(type, itertools.chain(img_l, cat_l, score_l, itertools.chain.from_iterable(box_l)))
        )
        img, cat, box, score = (np.array(v) for v in (img_l, cat_l, box_l, score_l))
        ok = (
            not any(t is bool or t is np.bool_ for t in types)
            and img.dtype.kind == "i"
            and cat.dtype.kind == "i"
            and score.dtype.kind in "if"
            and box.dtype.kind in "if"
            and box.shape == (n, 4)
            and score.shape == (n,)
        )
    except (TypeError, KeyError, ValueError, IndexError):
        ok = False
    if ok:
        box = box.astype(np.float64)
        score = score.astype(np.float64)
        bad = (
            ~np.isfinite(box).all(1)
            | (box[:, 2] < 0)
            | (box[:, 3] < 0)
            | ~np.isfinite(score)
            | ~np.isin(img, img_ids)
            | ~np.isin(cat, cats)
        )
        if not bad.any():
            rows = np.empty((n, 7), dtype=np.float64)
            rows[:, 0], rows[:, 1:5], rows[:, 5], rows[:, 6] = img, box, score, cat
            return rows
        scan = range(int(np.flatnonzero(bad)[0]), n)
    else:
        scan = range(n)
    known = set(img_ids.tolist())
    cat_list = cats.tolist()
    for i in scan:
        msg = detection_problem(i, records[i], known, cat_list)
        if msg:
            raise DataError(f"{source}: {msg}")
    raise DataError(f"{source}: malformed COCO results list")  # pragma: no cover - defensive


# --------------------------------------------------------------------------------------------
# image folders and image files


def image_dir_candidates(ann_file: str | os.PathLike) -> list[Path]:
    """Folders where the images of ``ann_file`` usually are, most likely first.

    For ``X/annotations/instances_val2017.json``: ``X/val2017``, ``X/images/val2017``,
    ``X/images``, ``X/annotations`` (the json's folder; converted files use names relative to
    it), ``X``.
    """
    ann = Path(ann_file)
    jdir = ann.parent
    base = jdir.parent if jdir.name == "annotations" else jdir
    stem = ann.stem
    splits = list(
        dict.fromkeys(
            [stem.split("_", 1)[1] if "_" in stem else stem, stem.rsplit("_", 1)[-1], stem]
        )
    )
    out = [base / splits[0], base / "images" / splits[0], base / "images", jdir, base]
    for s in splits[1:]:
        out += [base / s, base / "images" / s]
    out += [base / "JPEGImages", base / "PNGImages"]
    return list(dict.fromkeys(out))


def guess_image_dir(
    ann_file: str | os.PathLike, images: list[dict]
) -> tuple[Path | None, list[Path]]:
    """First candidate folder holding any of the first few ``file_name`` s; ``(None, tried)``
    when none does (``tried`` lists the folders looked at)."""
    cands = image_dir_candidates(ann_file)
    names = [
        im["file_name"]
        for im in images[:5]
        if isinstance(im, dict) and isinstance(im.get("file_name"), str) and im["file_name"]
    ]
    for d in cands:
        if d.is_dir() and any((d / n).is_file() for n in names):
            return d, cands
    if not names:  # no images listed: any existing candidate will do
        for d in cands:
            if d.is_dir():
                return d, cands
    return None, cands


def _jpeg_truncated(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 1024))
        return b"\xff\xd9" not in f.read()


def check_images(data: dict, image_dir: Path, report: CheckReport, progress: bool = True) -> None:
    """Open every listed image (PIL header + ``verify()``): missing, unreadable, truncated
    JPEG (no end marker) and size mismatches with the json become errors."""
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm

    images = [
        im
        for im in data.get("images", [])
        if isinstance(im, dict)
        and is_int(im.get("id"))
        and isinstance(im.get("file_name"), str)
        and im["file_name"]
    ]
    seen: set[int] = set()
    for im in tqdm(
        images,
        desc=f"checking images of {Path(report.file).name}",
        unit="img",
        disable=not progress or len(images) < 200,
        leave=False,
    ):
        if im["id"] in seen:
            continue
        seen.add(im["id"])
        path = image_dir / im["file_name"]
        rec = f"image id {im['id']} ({im['file_name']!r})"
        if not path.is_file():
            report.add("error", "missing_image", rec, f"image file not found: {path}")
            continue
        try:
            with Image.open(path) as pil:
                size, fmt = pil.size, pil.format
                pil.verify()
            if fmt == "JPEG" and _jpeg_truncated(path):
                raise OSError("JPEG data ends without an end-of-image marker (truncated file)")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            report.add("error", "corrupt_image", rec, f"cannot read image {path}: {e}")
            continue
        w, h = im.get("width"), im.get("height")
        if is_int(w) and is_int(h) and (w, h) != size:
            report.add(
                "error",
                "size_mismatch",
                rec,
                f"file is {size[0]}x{size[1]} (WxH) but the json says {w}x{h}",
            )


def check_coco(
    ann_file: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    open_images: bool = True,
    progress: bool = True,
) -> CheckReport:
    """Check one COCO json (and, with ``open_images``, its image files); never raises for
    defects in the data, which all go into the returned report."""
    ann_file = Path(ann_file)
    report = CheckReport(file=str(ann_file))
    try:
        data = load_coco_json(ann_file)
    except DataError as e:
        rec = f"line {e.lineno} col {e.colno}" if isinstance(e, InvalidJsonError) else "(file)"
        report.add("error", "invalid_json", rec, str(e).removeprefix(f"{ann_file}: "))
        return report
    check_coco_dict(data, report)
    if not open_images:
        return report
    images = data.get("images") if isinstance(data.get("images"), list) else []
    if image_dir is not None:
        d: Path | None = Path(image_dir)
        if not d.is_dir():
            report.add("error", "missing_image_dir", "(images)", f"image folder not found: {d}")
            return report
    else:
        d, tried = guess_image_dir(ann_file, images)
        if d is None:
            report.add(
                "error",
                "missing_image_dir",
                "(images)",
                "cannot find the image folder; looked in "
                + ", ".join(map(str, tried))
                + " (pass --images DIR)",
            )
            return report
    report.image_dir = str(d)
    check_images(data, d, report, progress=progress)
    return report


# --------------------------------------------------------------------------------------------
# CLI


def _json_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        for d in (path / "annotations", path):
            files = sorted(d.glob("*.json"))
            if files:
                return files
        raise DataError(f"{path}: no *.json files in {path / 'annotations'} or {path}")
    raise DataError(f"{path}: no such file or folder")


def cli_check(args: argparse.Namespace) -> int:
    """``percepta data check PATH [--images DIR] [--no-images] [--json] [--max-report N]``.

    Prints one report per json file; exit status 1 when any file has errors. A ``.csv`` path
    is an image-quality meta table (:func:`percepta.data.iqa_table.cli_check_table`); an
    ``.h5`` / ``.hdf5`` path or a folder holding ``VG-SGG*.h5`` is a Visual-Genome scene-graph
    dataset (:func:`percepta.data.vg_sgg_check.cli_check_vg_sgg`).
    """
    if Path(args.path).suffix.lower() == ".csv":
        from percepta.data.iqa_table import cli_check_table

        return cli_check_table(args)
    p = Path(args.path)
    if p.suffix.lower() in (".h5", ".hdf5") or (p.is_dir() and any(p.glob("VG-SGG*.h5"))):
        from percepta.data.vg_sgg_check import cli_check_vg_sgg

        return cli_check_vg_sgg(args)
    files = _json_files(Path(args.path))
    reports = [
        check_coco(
            f, image_dir=args.images, open_images=not args.no_images, progress=sys.stderr.isatty()
        )
        for f in files
    ]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        for r in reports:
            print(r.format_text(max_per_kind=args.max_report))
        if len(reports) > 1:
            bad = sum(1 for r in reports if not r.ok)
            print(f"{len(reports)} files checked, {bad} with errors")
    return 0 if all(r.ok for r in reports) else 1
