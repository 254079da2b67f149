"""Reading and validating COCO ground truth and COCO results ("detections") files.

Both files come from other tools, so every defect is reported as one
:class:`percepta.errors.DataError` that names the file and the record (its index in the list and
its ids), instead of an ``AssertionError``/``KeyError`` from deep inside pycocotools.

* :func:`load_ground_truth` takes a COCO annotation dict or a path and returns a
  :class:`GroundTruth`: a cleaned copy of the dataset (the caller's dict is never mutated) plus
  flat numpy arrays of the annotations, and a lazily built ``faster_coco_eval.COCO`` index.
  Missing optional annotation fields are filled the way the COCO tools assume them: ``iscrowd``
  0, ``id`` = position + 1 (when no annotation has an id, or when some id is <= 0, which the
  COCO tools would confuse with "unmatched"), and ``area`` = bbox ``w * h``
  (pycocotools raises ``KeyError`` and faster-coco-eval silently uses 0 without it; real COCO
  files always carry ``area``, which is used as given, e.g. the polygon area).
* :func:`load_results` / :func:`results_to_array` turn a COCO results list (``image_id``,
  ``category_id``, ``bbox`` = ``[x, y, w, h]``, ``score``) into the ``[N, 7]`` float64 array
  ``[image_id, x, y, w, h, score, category_id]`` that pycocotools' ``loadNumpyAnnotations`` also
  uses. An empty list is valid (no detections); an empty *file* is not.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from percepta.errors import DataError

__all__ = [
    "GroundTruth",
    "load_ground_truth",
    "load_results",
    "results_to_array",
    "array_to_records",
    "read_json",
]


def read_json(path: str | Path, what: str) -> Any:
    """Read a JSON file; a missing, empty, unreadable or truncated file raises :class:`DataError`."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: {what} file not found")
    if p.is_dir():
        raise DataError(f"{p}: expected a {what} JSON file, got a folder")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"{p}: cannot read the {what} file ({e.strerror or e})") from None
    if not raw.strip():
        hint = " (write [] for a result with no detections)" if what == "results" else ""
        raise DataError(f"{p}: the {what} file is empty{hint}")
    try:
        return json.loads(raw)
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: the {what} file is not UTF-8 text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"{p}: the {what} file is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
            "is it truncated?"
        ) from None


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _bbox_problem(bb: Any) -> str | None:
    """Why ``bb`` is not a valid ``[x, y, w, h]`` box, or ``None``."""
    if not isinstance(bb, (list, tuple)) or len(bb) != 4 or not all(_is_num(v) for v in bb):
        return f"'bbox' must be a list of 4 numbers [x, y, w, h], got {bb!r:.80}"
    if not all(math.isfinite(float(v)) for v in bb):
        return f"'bbox' has a NaN or infinite value: {list(bb)}"
    if bb[2] < 0 or bb[3] < 0:
        return f"'bbox' has a negative width or height: {list(bb)}"
    return None


@dataclass(eq=False)
class GroundTruth:
    """A validated COCO ground truth: cleaned dataset dict + flat annotation arrays."""

    dataset: dict[str, Any]
    source: str
    image_ids: np.ndarray  # sorted unique image ids, int64
    cat_ids: list[int]  # sorted category ids
    cat_names: dict[int, str]
    ann_image_ids: np.ndarray  # [G] int64, annotation file order
    ann_cat_ids: np.ndarray  # [G] int64
    ann_boxes: np.ndarray  # [G, 4] float64 xywh
    ann_areas: np.ndarray  # [G] float64 (the annotation's 'area')
    ann_crowd: np.ndarray  # [G] bool
    _coco: Any = field(default=None, repr=False)
    _img_set: set[int] | None = field(default=None, repr=False)

    def known_images(self) -> set[int]:
        """The GT image ids as a Python set (built once)."""
        if self._img_set is None:
            self._img_set = set(self.image_ids.tolist())
        return self._img_set

    def coco(self) -> Any:
        """The ``faster_coco_eval.COCO`` index of :attr:`dataset` (built once)."""
        if self._coco is None:
            from faster_coco_eval import COCO

            self._coco = COCO(self.dataset)
        return self._coco


def load_ground_truth(src: dict | str | Path | GroundTruth) -> GroundTruth:
    """Validate a COCO ground truth (dict or json path) and index it.

    Raises:
        DataError: naming the file and the offending image / annotation / category record.
    """
    if isinstance(src, GroundTruth):
        return src
    if isinstance(src, dict):
        data, source = src, "ground truth"
    elif isinstance(src, (str, Path)):
        data, source = read_json(src, "ground-truth"), str(src)
    else:
        raise DataError(f"ground truth must be a COCO dict or a json path, got {type(src).__name__}")
    if not isinstance(data, dict):
        raise DataError(f"{source}: a COCO ground truth must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{source}: missing or non-list '{key}' (a COCO annotation file needs "
                            "'images', 'annotations' and 'categories')")

    images = []
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise DataError(f"{source}: images[{i}] needs an integer 'id', got {img!r:.80}")
        images.append(dict(img))
    image_ids = np.array([img["id"] for img in images], dtype=np.int64)
    uniq, counts = np.unique(image_ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{source}: image id {int(uniq[counts > 1][0])} appears more than once in 'images'")

    cats, names = [], {}
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            raise DataError(f"{source}: categories[{i}] needs an integer 'id', got {c!r:.80}")
        if int(c["id"]) in names:
            raise DataError(f"{source}: category id {c['id']} appears more than once in 'categories'")
        c = dict(c)
        c.setdefault("name", str(c["id"]))
        names[int(c["id"])] = str(c["name"])
        cats.append(c)

    anns_in = data["annotations"]
    has_id = [isinstance(a, dict) and "id" in a for a in anns_in]
    fill_ids = not any(has_id)
    known_img, seen_ids = set(image_ids.tolist()), set()
    anns = []
    for i, a in enumerate(anns_in):
        if not isinstance(a, dict):
            raise DataError(f"{source}: annotations[{i}] must be an object, got {type(a).__name__}")
        where = f"{source}: annotations[{i}] (id={a.get('id')}, image_id={a.get('image_id')}, " \
                f"category_id={a.get('category_id')})"
        for key in ("image_id", "category_id", "bbox"):
            if key not in a:
                raise DataError(f"{where}: missing key '{key}'")
        if not _is_int(a["image_id"]) or int(a["image_id"]) not in known_img:
            raise DataError(f"{where}: image_id is not one of the ids in 'images'")
        if not _is_int(a["category_id"]) or int(a["category_id"]) not in names:
            raise DataError(f"{where}: category_id is not one of the ids in 'categories'")
        problem = _bbox_problem(a["bbox"])
        if problem:
            raise DataError(f"{where}: {problem}")
        a = dict(a)
        if fill_ids:
            a["id"] = i + 1
        elif not has_id[i] or not _is_int(a["id"]):
            raise DataError(f"{where}: missing or non-integer 'id' (other annotations have one)")
        if a["id"] in seen_ids:
            raise DataError(f"{where}: annotation id {a['id']} is used twice")
        seen_ids.add(a["id"])
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            a["area"] = float(a["bbox"][2]) * float(a["bbox"][3])
        elif not _is_num(a["area"]) or not math.isfinite(float(a["area"])):
            raise DataError(f"{where}: 'area' must be a finite number, got {a['area']!r:.40}")
        anns.append(a)

    if any(a["id"] <= 0 for a in anns):
        # pycocotools/faster-coco-eval use annotation id 0 as "unmatched": renumber our copy
        for i, a in enumerate(anns):
            a["id"] = i + 1
    dataset = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
    dataset.update(images=images, annotations=anns, categories=cats)
    g = len(anns)
    return GroundTruth(
        dataset=dataset,
        source=source,
        image_ids=np.unique(image_ids),
        cat_ids=sorted(names),
        cat_names=names,
        ann_image_ids=np.fromiter((a["image_id"] for a in anns), np.int64, g),
        ann_cat_ids=np.fromiter((a["category_id"] for a in anns), np.int64, g),
        ann_boxes=np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(g, 4),
        ann_areas=np.fromiter((a["area"] for a in anns), np.float64, g),
        ann_crowd=np.fromiter((bool(a["iscrowd"]) for a in anns), bool, g),
    )


def _record_problem(i: int, r: Any, gt: GroundTruth, source: str) -> str | None:
    """The full error message for record ``i`` if it is invalid, else ``None`` (slow path)."""
    if not isinstance(r, dict):
        return f"{source}: detection [{i}] must be an object, got {type(r).__name__}: {r!r:.60}"
    where = f"{source}: detection [{i}] (image_id={r.get('image_id')}, category_id={r.get('category_id')})"
    for key in ("image_id", "category_id", "bbox", "score"):
        if key not in r:
            return f"{where}: missing key '{key}'"
    if not _is_int(r["image_id"]):
        return f"{where}: 'image_id' must be an integer"
    if not _is_int(r["category_id"]):
        return f"{where}: 'category_id' must be an integer"
    problem = _bbox_problem(r["bbox"])
    if problem:
        return f"{where}: {problem}"
    if not _is_num(r["score"]) or not math.isfinite(float(r["score"])):
        return f"{where}: 'score' must be a finite number, got {r['score']!r:.40}"
    if int(r["image_id"]) not in gt.known_images():
        return f"{where}: image_id {r['image_id']} is not an image of the ground truth"
    if int(r["category_id"]) not in gt.cat_names:
        return f"{where}: category_id {r['category_id']} is not a category of the ground truth " \
               f"(known: {gt.cat_ids[:20]}{' ...' if len(gt.cat_ids) > 20 else ''})"
    return None


def results_to_array(records: Any, gt: GroundTruth, source: str = "results") -> np.ndarray:
    """Validate a COCO results list and return ``[N, 7]`` float64 rows
    ``[image_id, x, y, w, h, score, category_id]``.

    A fast vectorised path handles well-formed input; on any defect a per-record scan finds the
    first bad record and raises :class:`DataError` naming its index, image_id, category_id and
    ``source``.
    """
    if not isinstance(records, list):
        raise DataError(f"{source}: COCO results must be a JSON list of detections, "
                        f"got {type(records).__name__}")
    n = len(records)
    if n == 0:
        return np.zeros((0, 7), dtype=np.float64)
    try:
        img = np.array([r["image_id"] for r in records])
        cat = np.array([r["category_id"] for r in records])
        box = np.array([r["bbox"] for r in records])
        score = np.array([r["score"] for r in records])
        ok = (img.dtype.kind == "i" and cat.dtype.kind == "i" and score.dtype.kind in "if"
              and box.dtype.kind in "if" and box.shape == (n, 4) and score.shape == (n,))
    except (TypeError, KeyError, ValueError, IndexError):
        ok = False
    if ok:
        box = box.astype(np.float64)
        score = score.astype(np.float64)
        bad = (~np.isfinite(box).all(1) | (box[:, 2] < 0) | (box[:, 3] < 0) | ~np.isfinite(score)
               | ~np.isin(img, gt.image_ids) | ~np.isin(cat, np.asarray(gt.cat_ids, dtype=np.int64)))
        if not bad.any():
            rows = np.empty((n, 7), dtype=np.float64)
            rows[:, 0], rows[:, 1:5], rows[:, 5], rows[:, 6] = img, box, score, cat
            return rows
        first = int(np.flatnonzero(bad)[0])
        scan = range(first, n)
    else:
        scan = range(n)
    for i in scan:
        msg = _record_problem(i, records[i], gt, source)
        if msg:
            raise DataError(msg)
    raise DataError(f"{source}: malformed COCO results list")  # pragma: no cover - defensive


def load_results(src: list | str | Path, gt: GroundTruth) -> np.ndarray:
    """Read (if a path) and validate a COCO results list; see :func:`results_to_array`."""
    if isinstance(src, (str, Path)):
        return results_to_array(read_json(src, "results"), gt, source=str(src))
    return results_to_array(src, gt)


def array_to_records(rows: np.ndarray) -> list[dict[str, Any]]:
    """``[N, 7]`` rows back to COCO result dicts (what ``COCO.loadRes`` consumes)."""
    if len(rows) == 0:
        return []
    img = rows[:, 0].astype(np.int64).tolist()
    cat = rows[:, 6].astype(np.int64).tolist()
    box = rows[:, 1:5].tolist()
    score = rows[:, 5].tolist()
    return [{"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, c, b, s in zip(img, cat, box, score)]
