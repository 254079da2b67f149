"""``percepta predict`` for scene-graph checkpoints: images -> scene-graph JSON + pictures.

SGDet models need only the images. PredCls / SGCls models are given the objects: ``--coco
ANNOTATIONS.json`` supplies each image's boxes (and, for PredCls, labels; matched by file
name, as for detection). Output in ``--out``:

* ``scene_graphs.json``: one record per image: ``file``, ``image_id``, ``objects`` (``box``
  XYXY pixels, ``label``, ``name``, ``score``) and ``relations`` ranked by triplet score
  (``subject`` / ``object`` indices into ``objects``, ``predicate`` 1..P, ``predicate_name``,
  ``score`` = predicate x subject x object, the official ranking), the top ``--top-k`` (100);
* ``images/<id>_<name>.png``: the boxes on the image and the top 10 relations drawn beside it
  (:func:`percepta.viz.scene_graph.draw_scene_graph`), unless ``--no-draw``.

A file that is not a readable image is skipped with a message naming it (counted in the
summary); nothing is written only when no file could be read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from percepta.detection.predict import coco_image_ids, find_images, resolve_device
from percepta.errors import DataError, PerceptaError

__all__ = ["cli_predict_scene_graph", "graph_record", "coco_objects"]

DRAWN_RELATIONS = 10


def coco_objects(coco: dict, image_id: int) -> dict[str, torch.Tensor]:
    """Boxes (XYXY) and labels (0..C-1 in sorted category-id order, as the COCO dataset
    numbers them) of one image of a COCO dict."""
    cat_ids = sorted(c["id"] for c in coco.get("categories", []))
    label_of = {cid: i for i, cid in enumerate(cat_ids)}
    anns = [a for a in coco.get("annotations", []) if a.get("image_id") == image_id]
    boxes = [
        [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
        for a in anns
    ]
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64),
    }


def graph_record(
    pred: dict[str, torch.Tensor],
    object_names: list[str],
    predicate_names: list[str],
    top_k: int = 100,
) -> dict[str, Any]:
    """A model's eval output for one image as the JSON record (see the module docstring)."""
    boxes, labels = pred["boxes"].tolist(), pred["labels"].tolist()
    scores = pred["scores"].tolist() if "scores" in pred else [1.0] * len(boxes)
    objects = [
        {
            "box": [round(float(v), 2) for v in b],
            "label": int(lab),
            "name": object_names[int(lab)] if 0 <= int(lab) < len(object_names) else None,
            "score": round(float(s), 4),
        }
        for b, lab, s in zip(boxes, labels, scores)
    ]
    pairs = pred["rel_pairs"][:top_k].tolist()
    rel_scores = pred["rel_scores"][:top_k]
    if "rel_labels" in pred:  # the post-processor's own predicate choice
        preds = pred["rel_labels"][:top_k]
    else:
        preds = rel_scores[:, 1:].argmax(1) + 1 if len(rel_scores) else torch.zeros(0, dtype=int)
    relations = []
    for (s, o), p, row in zip(pairs, preds.tolist(), rel_scores):
        triple = float(row[p]) * objects[s]["score"] * objects[o]["score"]
        relations.append(
            {
                "subject": int(s),
                "object": int(o),
                "predicate": int(p),
                "predicate_name": predicate_names[p - 1] if p - 1 < len(predicate_names) else None,
                "score": round(triple, 6),
            }
        )
    return {"objects": objects, "relations": relations}


def cli_predict_scene_graph(args: argparse.Namespace) -> int:
    """``percepta predict RELATION.pt IMAGES... --out DIR [--coco ANN.json]``."""
    import percepta
    from percepta.data.images import read_rgb
    from percepta.inference import run_model

    files = find_images(args.images)
    if not files:
        raise PerceptaError(f"no image files found in {', '.join(args.images)}")
    model = percepta.load(args.checkpoint, device=str(resolve_device(args.device)))
    opts = model.options
    needs = tuple(model.inference_inputs)
    coco_file = getattr(args, "coco", None)
    if needs and not coco_file:
        raise PerceptaError(
            f"{args.checkpoint} is a {opts.mode} model: it needs each image's objects "
            f"({', '.join(needs)}); give them with --coco ANNOTATIONS.json"
        )
    if coco_file:
        image_ids, coco = coco_image_ids(coco_file, files)
    else:
        image_ids, coco = {f: i for i, f in enumerate(files)}, None
    out = Path(args.out)
    records, skipped = [], []
    for path in files:
        try:
            image = read_rgb(path)
        except DataError as e:
            skipped.append(str(e))
            print(f"skipped: {e}")
            continue
        target = coco_objects(coco, image_ids[path]) if coco is not None else {}
        pred = run_model(model, [image], [target])[0]
        rec = graph_record(pred, list(opts.object_names), list(opts.predicate_names))
        records.append({"file": str(path), "image_id": image_ids[path], **rec})
        if not getattr(args, "no_draw", False):
            from percepta.viz.scene_graph import draw_scene_graph

            top = [
                (r["subject"], r["object"], r["predicate_name"], r["score"])
                for r in rec["relations"][:DRAWN_RELATIONS]
            ]
            draw_scene_graph(
                image,
                pred["boxes"],
                pred["labels"].tolist(),
                list(opts.object_names),
                top,
                out / "images" / f"{image_ids[path]:05d}_{path.stem}.png",
                title=f"{path.name} ({opts.mode})",
            )
    if not records:
        raise DataError(
            f"none of the {len(files)} files could be read as an image "
            f"(first: {skipped[0]}); nothing was written"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "scene_graphs.json").write_text(json.dumps(records, indent=1))
    n_rel = sum(len(r["relations"]) for r in records)
    print(
        f"{len(records)} images, {n_rel} ranked relations -> {out / 'scene_graphs.json'}"
        + (f"; {len(skipped)} files skipped" if skipped else "")
    )
    return 0
