"""Where a detector's confident detections of one class land, on a fully labelled COCO set.

Each detection of ``--cls`` with score > ``--score`` is put in one bin: a true positive (IoU > 0.5
with an object of that class; no one-to-one matching, so a duplicate counts too), "on <other class>" (IoU > 0.3 with an object of
another class: the detector confuses the two), "poor localisation" (IoU 0.1-0.5 with its own
class) or "background". It answered why the one-class teachers of the multi-teacher experiment
are weak (they fire on other shapes, not on textured backgrounds).

    .venv/bin/python experiments/where_detections_land.py runs/mt_teacher_b/checkpoints/last.pt \\
        --cls triangle [--ann data/builtin/annotations/instances_val.json --images data/builtin/val]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
from torchvision.ops import box_iou

from percepta.detection.predict import load_predictor, predict_files


def landing(
    predictions: list[dict],
    ground_truth: list[list[tuple[str, list[float]]]],
    cls: int,
    name: str,
    score: float,
) -> Counter:
    """Bin the detections of class index ``cls`` (named ``name``) above ``score`` per image.

    ``ground_truth[i]``: ``(class name, [x0, y0, x1, y1])`` of every object of image ``i``.
    """
    bins: Counter = Counter()
    for pred, gts in zip(predictions, ground_truth):
        keep = (pred["labels"] == cls) & (pred["scores"] > score)
        boxes = pred["boxes"][keep].float()
        if not len(boxes):
            continue
        gt_boxes = torch.tensor([b for _, b in gts], dtype=torch.float32).reshape(-1, 4)
        is_same = torch.tensor([n == name for n, _ in gts], dtype=torch.bool)
        iou = box_iou(boxes, gt_boxes)  # [detections, objects]
        best_same = iou[:, is_same].max(dim=1).values if is_same.any() else torch.zeros(len(boxes))
        iou_other = iou.masked_fill(is_same[None], -1.0)
        best_other, which = (
            iou_other.max(dim=1)
            if len(gts)
            else (torch.zeros(len(boxes)), torch.zeros(len(boxes), dtype=torch.long))
        )
        for same, other, j in zip(best_same.tolist(), best_other.tolist(), which.tolist()):
            if same > 0.5:
                bins["true positive"] += 1
            elif other > 0.3:
                bins[f"on {gts[j][0]}"] += 1
            else:
                bins["poor localisation" if same > 0.1 else "background"] += 1
    return bins


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--cls", required=True, help="class name (as the model calls it)")
    ap.add_argument("--ann", default="data/builtin/annotations/instances_val.json")
    ap.add_argument("--images", default="data/builtin/val")
    ap.add_argument("--score", type=float, default=0.3)
    args = ap.parse_args()
    coco = json.loads(Path(args.ann).read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    objects: dict[int, list] = {}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        objects.setdefault(a["image_id"], []).append(
            (names[a["category_id"]], [x, y, x + w, y + h])
        )
    predictor, classes = load_predictor(args.checkpoint, "cpu")
    if args.cls not in classes:
        raise SystemExit(f"{args.checkpoint}: no class {args.cls!r}; it has {classes}")
    image_ids = {Path(args.images) / im["file_name"]: im["id"] for im in coco["images"]}
    results = predict_files(predictor, list(image_ids), batch_size=16)  # unreadable files skipped
    truth = [objects.get(image_ids[f], []) for f, _, _ in results]
    bins = landing([p for _, _, p in results], truth, classes.index(args.cls), args.cls, args.score)
    n_gt = sum(1 for gts in truth for n, _ in gts if n == args.cls)
    print(
        json.dumps(
            {
                "checkpoint": args.checkpoint,
                "class": args.cls,
                "score_above": args.score,
                "objects_of_class": n_gt,
                "detections": dict(bins.most_common()),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
