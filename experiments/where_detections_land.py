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


def landing(predictions: list[dict], ground_truth: list[list[tuple[str, list[float]]]], cls: int,
            name: str, score: float) -> Counter:
    """Bin the detections of class index ``cls`` (named ``name``) above ``score`` per image.

    ``ground_truth[i]``: ``(class name, [x0, y0, x1, y1])`` of every object of image ``i``.
    """
    bins: Counter = Counter()
    for pred, gts in zip(predictions, ground_truth):
        keep = (pred["labels"] == cls) & (pred["scores"] > score)
        same = torch.tensor([b for n, b in gts if n == name], dtype=torch.float32).reshape(-1, 4)
        other = [(n, b) for n, b in gts if n != name]
        other_boxes = torch.tensor([b for _, b in other], dtype=torch.float32).reshape(-1, 4)
        for box in pred["boxes"][keep].float():
            iou_same = box_iou(box[None], same)[0].max().item() if len(same) else 0.0
            if iou_same > 0.5:
                bins["true positive"] += 1
                continue
            if len(other):
                ious = box_iou(box[None], other_boxes)[0]
                j = int(ious.argmax())
                if ious[j] > 0.3:
                    bins[f"on {other[j][0]}"] += 1
                    continue
            bins["poor localisation" if iou_same > 0.1 else "background"] += 1
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
        objects.setdefault(a["image_id"], []).append((names[a["category_id"]], [x, y, x + w, y + h]))
    predictor, classes = load_predictor(args.checkpoint, "cpu")
    if args.cls not in classes:
        raise SystemExit(f"{args.checkpoint}: no class {args.cls!r}; it has {classes}")
    images = coco["images"]
    results = predict_files(predictor, [Path(args.images) / im["file_name"] for im in images],
                            batch_size=16)
    by_file = {f: p for f, _, p in results}
    files = [Path(args.images) / im["file_name"] for im in images]
    kept = [i for i, f in enumerate(files) if f in by_file]
    bins = landing([by_file[files[i]] for i in kept], [objects.get(images[i]["id"], []) for i in kept],
                   classes.index(args.cls), args.cls, args.score)
    n_gt = sum(1 for i in kept for n, _ in objects.get(images[i]["id"], []) if n == args.cls)
    print(json.dumps({"checkpoint": args.checkpoint, "class": args.cls, "score_above": args.score,
                      "objects_of_class": n_gt, "detections": dict(bins.most_common())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
