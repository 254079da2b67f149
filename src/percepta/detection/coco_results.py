"""Reading and validating COCO ground truth and COCO results ("detections") files.

Both files come from other tools, so every defect is reported as one
:class:`percepta.errors.DataError` that names the file and the record (its index in the list and
its ids), instead of an ``AssertionError``/``KeyError`` from deep inside pycocotools. The rules
are those of :mod:`percepta.data.check`, the one COCO validator (the same the dataset loader and
``percepta data check`` apply; ``purpose="evaluation"`` for the ground truth); files are read by
:func:`percepta.jsonable.read_json`. This module only normalises and indexes.

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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from percepta.data.check import CheckReport, check_coco_dict, results_rows
from percepta.errors import DataError
from percepta.jsonable import read_json

__all__ = [
    "GroundTruth",
    "load_ground_truth",
    "load_results",
    "results_to_array",
    "array_to_records",
    "read_json",  # re-exported: percepta.jsonable.read_json, the one JSON file reader
]


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
        raise DataError(
            f"ground truth must be a COCO dict or a json path, got {type(src).__name__}"
        )
    if not isinstance(data, dict):
        raise DataError(
            f"{source}: a COCO ground truth must be a JSON object, got {type(data).__name__}"
        )
    report = CheckReport(file=source)
    check_coco_dict(data, report, purpose="evaluation")
    report.raise_for_errors()

    images = [dict(img) for img in data["images"]]
    image_ids = np.array([img["id"] for img in images], dtype=np.int64)
    cats, names = [], {}
    for c in data["categories"]:
        c = dict(c)
        c.setdefault("name", str(c["id"]))
        names[int(c["id"])] = str(c["name"])
        cats.append(c)
    fill_ids = not any("id" in a for a in data["annotations"])
    anns = []
    for i, a in enumerate(data["annotations"]):
        a = dict(a)
        if fill_ids:
            a["id"] = i + 1
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            a["area"] = float(a["bbox"][2]) * float(a["bbox"][3])
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


def results_to_array(records: Any, gt: GroundTruth, source: str = "results") -> np.ndarray:
    """Validate a COCO results list against ``gt``'s ids and return ``[N, 7]`` float64 rows
    ``[image_id, x, y, w, h, score, category_id]``; see :func:`percepta.data.check.results_rows`
    (a bad record raises :class:`DataError` naming ``source``, its index, image_id and
    category_id)."""
    return results_rows(records, gt.image_ids, gt.cat_ids, source)


def load_results(src: list | str | Path, gt: GroundTruth) -> np.ndarray:
    """Read (if a path) and validate a COCO results list; see :func:`results_to_array`."""
    if isinstance(src, (str, Path)):
        data = read_json(src, "results", empty_hint=" (write [] for a result with no detections)")
        return results_to_array(data, gt, source=str(src))
    return results_to_array(src, gt)


def array_to_records(rows: np.ndarray) -> list[dict[str, Any]]:
    """``[N, 7]`` rows back to COCO result dicts (what ``COCO.loadRes`` consumes)."""
    if len(rows) == 0:
        return []
    img = rows[:, 0].astype(np.int64).tolist()
    cat = rows[:, 6].astype(np.int64).tolist()
    box = rows[:, 1:5].tolist()
    score = rows[:, 5].tolist()
    return [
        {"image_id": i, "category_id": c, "bbox": b, "score": s}
        for i, c, b, s in zip(img, cat, box, score)
    ]
