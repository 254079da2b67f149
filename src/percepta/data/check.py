"""Validate COCO detection json files: every defect, per file and per record.

``percepta data check PATH`` and :class:`percepta.data.coco.CocoDetection` share these checks.
The *fast* checks (:func:`check_coco_dict`) look only at the parsed json: missing top-level
keys, wrong field types, duplicate ids, unknown image/category ids, boxes with negative, zero
or out-of-image extent, empty categories, crowd counts. The *image* checks
(:func:`check_images`) open each file with PIL (header + ``verify()``, no full decode) and
compare its size with the json's ``width``/``height``.

Severity: ``error`` = the loader refuses the file (it would train on wrong data); ``warning`` =
the loader copes (zero-size boxes are dropped, boxes partly outside the image are clipped,
empty categories are allowed, as in COCO subsets). The json structure follows the COCO format
description (https://cocodataset.org/#format-data); pycocotools accepts the same files.

This module imports no torch, so the CLI check starts fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from percepta.errors import DataError

__all__ = [
    "Problem", "CheckReport", "OUTSIDE_TOLERANCE", "box_issue", "load_coco_json",
    "check_coco_dict", "image_dir_candidates", "guess_image_dir", "check_images", "check_coco",
    "cli_check",
]

#: Boxes may exceed the image by this many pixels before they count as "outside" (float noise
#: in real annotations); they are clipped to the image either way.
OUTSIDE_TOLERANCE = 1.0


@dataclass
class Problem:
    """One defect: ``severity`` is ``"error"`` or ``"warning"``; ``record`` names the json
    record (``"annotation id 7"``, ``"image id 3 ('a.jpg')"``, ``"line 4 col 17"``)."""

    severity: str
    kind: str
    file: str
    record: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.record}: {self.message}"


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

    def add(self, severity: str, kind: str, record: str, message: str) -> None:
        self.problems.append(Problem(severity, kind, self.file, record, message))

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

    def summary(self) -> str:
        return (f"{self.file}: {self.num_images} images, {self.num_annotations} annotations "
                f"({self.num_crowd} crowd), {self.num_categories} categories, "
                f"{self.num_images_without_annotations} images without annotations; "
                f"{len(self.errors)} errors, {len(self.warnings)} warnings")

    def format_text(self, max_per_kind: int = 50) -> str:
        """The summary line, then the problems grouped by severity and kind."""
        lines = [self.summary()]
        if self.image_dir:
            lines.append(f"  images: {self.image_dir}")
        groups: dict[tuple[str, str], list[Problem]] = defaultdict(list)
        for p in self.problems:
            groups[(p.severity, p.kind)].append(p)
        for (sev, kind), items in sorted(groups.items(), key=lambda kv: (kv[0][0] != "error", kv[0][1])):
            lines.append(f"  {sev} {kind} ({len(items)}):")
            for p in items[:max(0, max_per_kind)]:
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
# json parsing and the fast checks

def load_coco_json(path: str | os.PathLike) -> dict:
    """Parse ``path``; a missing file, invalid json (with line/col) or a non-object raises
    :class:`DataError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid json at line {e.lineno} col {e.colno}: {e.msg}"
                        " (truncated or not a json file?)") from None
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"{path}: cannot read as UTF-8 json: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: the top level must be a json object with 'images', "
                        f"'annotations' and 'categories', got {type(data).__name__}")
    return data


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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


def _check_segmentation(seg: Any, img: dict | None, report: CheckReport, rec: str) -> None:
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or not all(_is_num(v) for v in poly):
                report.add("error", "bad_segmentation", rec,
                           f"segmentation polygon {k} must be a list of numbers")
                return
            if len(poly) < 6 or len(poly) % 2:
                report.add("warning", "degenerate_polygon", rec,
                           f"segmentation polygon {k} has {len(poly)} coordinates "
                           "(needs an even number >= 6); ignored for masks")
    elif isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)) \
                or not isinstance(counts, (list, str)):
            report.add("error", "bad_segmentation", rec,
                       "RLE segmentation needs 'size': [h, w] and 'counts' (list or string)")
        elif img is not None and _is_int(img.get("height")) and _is_int(img.get("width")) \
                and list(size) != [img["height"], img["width"]]:
            report.add("error", "bad_segmentation", rec,
                       f"RLE size {size} differs from the image's [height, width] "
                       f"[{img['height']}, {img['width']}]")
    else:
        report.add("error", "bad_segmentation", rec,
                   f"segmentation must be a list of polygons or an RLE dict, got {type(seg).__name__}")


def check_coco_dict(data: dict, report: CheckReport) -> None:
    """Fast checks of a parsed COCO json (no file access); appends to ``report``."""
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    for k in missing:
        report.add("error", "missing_key", "(top level)", f"missing top-level key {k!r}")
    for k in ("images", "annotations", "categories"):
        if k in data and not isinstance(data[k], list):
            report.add("error", "wrong_type", "(top level)",
                       f"{k!r} must be a list, got {type(data[k]).__name__}")
    images = data.get("images") if isinstance(data.get("images"), list) else []
    anns = data.get("annotations") if isinstance(data.get("annotations"), list) else []
    cats = data.get("categories") if isinstance(data.get("categories"), list) else []
    report.num_images, report.num_annotations, report.num_categories = len(images), len(anns), len(cats)

    # categories
    cat_ids: set[int] = set()
    cat_names: dict[str, int] = {}
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            report.add("error", "bad_category", f"categories[{i}]",
                       "category must be an object with an integer 'id'")
            continue
        rec = f"category id {c['id']}"
        if c["id"] in cat_ids:
            report.add("error", "duplicate_id", rec, "duplicate category id")
        cat_ids.add(c["id"])
        name = c.get("name")
        if not isinstance(name, str) or not name:
            report.add("error", "bad_category", rec, "category needs a non-empty string 'name'")
        elif name in cat_names:
            report.add("warning", "duplicate_name", rec,
                       f"category name {name!r} also used by category id {cat_names[name]}")
        else:
            cat_names[name] = c["id"]

    # images
    imgs: dict[int, dict] = {}
    file_names: dict[str, int] = {}
    for i, im in enumerate(images):
        if not isinstance(im, dict) or not _is_int(im.get("id")):
            report.add("error", "bad_image", f"images[{i}]", "image must be an object with an integer 'id'")
            continue
        rec = f"image id {im['id']}"
        if im["id"] in imgs:
            report.add("error", "duplicate_id", rec, "duplicate image id")
            continue
        imgs[im["id"]] = im
        fn = im.get("file_name")
        if not isinstance(fn, str) or not fn:
            report.add("error", "bad_image", rec, "image needs a non-empty string 'file_name'")
        elif fn in file_names:
            report.add("warning", "duplicate_file_name", f"{rec} ({fn!r})",
                       f"file also used by image id {file_names[fn]}")
        else:
            file_names[fn] = im["id"]
        for key in ("width", "height"):
            v = im.get(key)
            if v is None:
                report.add("error", "missing_key", rec, f"image has no {key!r}")
            elif not _is_int(v) or v <= 0:
                report.add("error", "wrong_type", rec, f"{key!r} must be a positive integer, got {v!r}")

    # annotations
    ann_ids: set[int] = set()
    per_image: Counter[int] = Counter()
    per_cat: Counter[int] = Counter()
    outside = 0
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            report.add("error", "bad_annotation", f"annotations[{i}]", "annotation must be an object")
            continue
        if not _is_int(a.get("id")):
            rec = f"annotations[{i}]"
            report.add("error", "wrong_type", rec, f"annotation 'id' must be an integer, got {a.get('id')!r}")
        else:
            rec = f"annotation id {a['id']}"
            if a["id"] in ann_ids:
                report.add("error", "duplicate_id", rec, "duplicate annotation id")
            ann_ids.add(a["id"])
        img = None
        iid = a.get("image_id")
        if not _is_int(iid):
            report.add("error", "wrong_type", rec, f"'image_id' must be an integer, got {iid!r}")
        elif iid not in imgs:
            report.add("error", "unknown_image", rec, f"image_id {iid} is not in 'images'")
        else:
            img = imgs[iid]
            per_image[iid] += 1
        cid = a.get("category_id")
        if not _is_int(cid):
            report.add("error", "wrong_type", rec, f"'category_id' must be an integer, got {cid!r}")
        elif cid not in cat_ids:
            report.add("error", "unknown_category", rec, f"category_id {cid} is not in 'categories'")
        else:
            per_cat[cid] += 1
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, float):
            report.add("error", "wrong_type", rec, f"'iscrowd' must be 0 or 1, got {crowd!r}")
        elif crowd:
            report.num_crowd += 1
        if "area" in a and (not _is_num(a["area"]) or a["area"] < 0):
            report.add("error", "wrong_type", rec, f"'area' must be a number >= 0, got {a['area']!r}")
        if "segmentation" in a:
            _check_segmentation(a["segmentation"], img, report, rec)
        bbox = a.get("bbox")
        if bbox is None:
            report.add("error", "missing_key", rec, "annotation has no 'bbox'")
            continue
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_num(v) for v in bbox):
            report.add("error", "bad_bbox", rec, f"'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
            continue
        if img is None or not (_is_int(img.get("width")) and _is_int(img.get("height"))):
            continue
        issue = box_issue(*bbox, img["width"], img["height"])
        if issue == "negative":
            report.add("error", "negative_box_size", rec, f"bbox {bbox} has negative width or height")
        elif issue == "zero":
            report.add("warning", "zero_size_box", rec, f"bbox {bbox} has zero width or height (dropped when loading)")
        elif issue == "outside":
            report.add("warning", "box_outside_image", rec,
                       f"bbox {bbox} lies entirely outside the {img['width']}x{img['height']} image "
                       "(dropped when loading)")
        elif issue == "partly_outside":
            outside += 1
            report.add("warning", "box_partly_outside", rec,
                       f"bbox {bbox} exceeds the {img['width']}x{img['height']} image "
                       "(clipped when loading)")

    report.num_images_without_annotations = sum(1 for iid in imgs if per_image[iid] == 0)
    for c in cats:
        if isinstance(c, dict) and _is_int(c.get("id")) and per_cat[c["id"]] == 0 and anns:
            report.add("warning", "empty_category", f"category id {c['id']} ({c.get('name')!r})",
                       "no annotations in this file")


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
    splits = list(dict.fromkeys([stem.split("_", 1)[1] if "_" in stem else stem,
                                 stem.rsplit("_", 1)[-1], stem]))
    out = [base / splits[0], base / "images" / splits[0], base / "images", jdir, base]
    for s in splits[1:]:
        out += [base / s, base / "images" / s]
    out += [base / "JPEGImages", base / "PNGImages"]
    return list(dict.fromkeys(out))


def guess_image_dir(ann_file: str | os.PathLike, images: list[dict]) -> tuple[Path | None, list[Path]]:
    """First candidate folder holding any of the first few ``file_name`` s; ``(None, tried)``
    when none does (``tried`` lists the folders looked at)."""
    cands = image_dir_candidates(ann_file)
    names = [im["file_name"] for im in images[:5]
             if isinstance(im, dict) and isinstance(im.get("file_name"), str) and im["file_name"]]
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

    images = [im for im in data.get("images", []) if isinstance(im, dict)
              and _is_int(im.get("id")) and isinstance(im.get("file_name"), str) and im["file_name"]]
    seen: set[int] = set()
    for im in tqdm(images, desc=f"checking images of {Path(report.file).name}", unit="img",
                   disable=not progress or len(images) < 200, leave=False):
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
        if _is_int(w) and _is_int(h) and (w, h) != size:
            report.add("error", "size_mismatch", rec,
                       f"file is {size[0]}x{size[1]} (WxH) but the json says {w}x{h}")


def check_coco(ann_file: str | os.PathLike, image_dir: str | os.PathLike | None = None,
               open_images: bool = True, progress: bool = True) -> CheckReport:
    """Check one COCO json (and, with ``open_images``, its image files); never raises for
    defects in the data, which all go into the returned report."""
    ann_file = Path(ann_file)
    report = CheckReport(file=str(ann_file))
    try:
        data = load_coco_json(ann_file)
    except DataError as e:
        msg = str(e).removeprefix(f"{ann_file}: ")
        rec = "(file)"
        if " at line " in msg:
            pos = msg.split(" at line ", 1)[1].split(":", 1)[0]
            rec = "line " + pos
        report.add("error", "invalid_json", rec, msg)
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
            report.add("error", "missing_image_dir", "(images)",
                       "cannot find the image folder; looked in " + ", ".join(map(str, tried))
                       + " (pass --images DIR)")
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

    Prints one report per json file; exit status 1 when any file has errors.
    """
    files = _json_files(Path(args.path))
    reports = [check_coco(f, image_dir=args.images, open_images=not args.no_images,
                          progress=sys.stderr.isatty()) for f in files]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        for r in reports:
            print(r.format_text(max_per_kind=args.max_report))
        if len(reports) > 1:
            bad = sum(1 for r in reports if not r.ok)
            print(f"{len(reports)} files checked, {bad} with errors")
    return 0 if all(r.ok for r in reports) else 1
