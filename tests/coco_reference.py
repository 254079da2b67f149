"""Independent COCO scoring for tests: a loaded checkpoint run image by image (no percepta
loader or evaluator) and pycocotools' reference ``COCOeval`` (percepta itself uses
faster-coco-eval). Importable from any test as ``coco_reference`` (see tests/conftest.py)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import torch
from torchvision.io import read_image

import percepta


def predict_as_coco_results(
    ckpt: str | Path, ann_file: Path, image_dir: Path
) -> tuple[list[dict], dict]:
    """``(COCO results list, ground-truth dict)`` of the model in ``ckpt`` on ``ann_file``."""
    gt = json.loads(Path(ann_file).read_text())
    model = percepta.load(str(ckpt)).eval()
    cat_of = {c["name"]: c["id"] for c in gt["categories"]}
    results = []
    with torch.no_grad():
        for img in gt["images"]:
            pred = model([read_image(str(Path(image_dir) / img["file_name"]))])[0]
            for (x1, y1, x2, y2), s, lab in zip(
                pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()
            ):
                results.append(
                    {
                        "image_id": img["id"],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": s,
                        "category_id": cat_of[model.class_names[lab]],
                    }
                )
    return results, gt


def pycocotools_stats(gt: dict, results: list[dict]) -> list[float]:
    """The 12 COCO stats from pycocotools' ``COCOeval`` (zeros when there is no detection)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return [0.0] * 12
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(x) for x in ev.stats]
