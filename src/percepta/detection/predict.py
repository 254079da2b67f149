"""``percepta predict``: run a detector (checkpoint or exported ONNX) on image files and folders.

Writes ``<out>/predictions.json`` — a COCO-style results list with ``file_name`` added — and,
unless ``--no-draw``, one PNG per image with labelled boxes under ``<out>/images/``. Files that
are not readable images are reported and skipped; the run goes on.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.io import ImageReadMode, decode_image
from tqdm import tqdm

from percepta.errors import PerceptaError

__all__ = ["IMAGE_EXTENSIONS", "find_images", "read_image", "predict_files", "load_predictor",
           "cli_predict"]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into a list of candidate image files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.is_file():
            out.append(p)
        else:
            raise PerceptaError(f"no such file or folder: {p}")
    return out


def read_image(path: Path) -> torch.Tensor:
    """Decode an image file to uint8 RGB ``[3,H,W]``; raises ``ValueError`` naming the file."""
    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except Exception as e:  # torchvision raises RuntimeError for corrupt/non-image data
        raise ValueError(f"{path}: not a readable image ({str(e).splitlines()[0]})") from None


def _batches(items: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def predict_files(predictor: Callable[[list[torch.Tensor]], list[dict]], files: Sequence[Path],
                  batch_size: int = 8, on_error: Callable[[str], None] = print,
                  progress: bool = True) -> list[tuple[Path, torch.Tensor, dict]]:
    """Run ``predictor`` over ``files`` in batches; unreadable files are reported and skipped."""
    results = []
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=not progress)
    for chunk in _batches(list(files), max(1, batch_size)):
        images, kept = [], []
        for f in chunk:
            try:
                images.append(read_image(f))
                kept.append(f)
            except ValueError as e:
                on_error(f"skipped: {e}")
        if images:
            with torch.inference_mode():
                preds = predictor(images)
            results.extend(zip(kept, images, preds))
        bar.update(len(chunk))
    bar.close()
    return results


def load_predictor(path: str, device: str) -> tuple[Callable[[list[torch.Tensor]], list[dict]], list[str]]:
    if path.endswith(".onnx"):
        from percepta.export.runtime import OnnxPredictor

        onnx_model = OnnxPredictor(path)
        return onnx_model, list(onnx_model.class_names)
    from percepta.engine.checkpoint import check_task, load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)
    check_task(ckpt, "detection")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model = model_from_checkpoint(ckpt, path, device=dev)

    def run(images: list[torch.Tensor]) -> list[dict]:
        return [{k: v.cpu() for k, v in p.items()} for p in model([im.to(dev) for im in images])]

    return run, list(getattr(model, "class_names", []) or [])


def cli_predict(args: argparse.Namespace) -> int:
    from percepta.viz.boxes import draw_detections, save_png

    files = find_images(args.images)
    if not files:
        raise PerceptaError(f"no image files found in {', '.join(args.images)}")
    predictor, class_names = load_predictor(args.checkpoint, args.device)
    skipped: list[str] = []
    results = predict_files(predictor, files, args.batch_size,
                            on_error=lambda m: (skipped.append(m), print(m)))
    out = Path(args.out)
    records = []
    for image_id, (path, image, pred) in enumerate(results):
        boxes = pred["boxes"].reshape(-1, 4)
        for box, score, label in zip(boxes.tolist(), pred["scores"].tolist(), pred["labels"].tolist()):
            x1, y1, x2, y2 = box
            records.append({
                "image_id": image_id, "file_name": str(path), "category_id": int(label) + 1,
                "label": int(label), "category_name": class_names[label] if label < len(class_names) else str(label),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score),
            })
        if not args.no_draw:
            drawn = draw_detections(image, boxes, pred["labels"], pred["scores"], class_names,
                                    score_threshold=args.score_threshold)
            save_png(drawn, out / "images" / f"{image_id:05d}_{path.stem}.png")
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.json").write_text(json.dumps(records))
    n_shown = sum(r["score"] >= args.score_threshold for r in records)
    print(f"{len(results)} images, {len(records)} detections ({n_shown} >= {args.score_threshold}) "
          f"-> {out / 'predictions.json'}" + (f"; {len(skipped)} files skipped" if skipped else ""))
    return 0
