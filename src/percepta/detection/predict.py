"""``percepta predict``: run a detector (checkpoint or exported ONNX) on image files and folders.

Writes ``<out>/predictions.json`` — a COCO results list (``image_id``, ``category_id``,
``bbox`` = ``[x, y, w, h]``, ``score``) with ``file_name``, ``label`` and ``category_name``
added, so ``percepta score detection --gt ANNOTATIONS.json --pred predictions.json`` reads it —
and, unless ``--no-draw``, one PNG per image with labelled boxes under ``<out>/images/``.

Ids:

* ``category_id`` is the dataset's own category id of each label (COCO ids are sparse, 1..90),
  which checkpoints carry in the model options (``model.category_ids``, filled from the training
  data). A checkpoint written before percepta stored them has none: then ``label + 1`` is
  written, with one warning (right only for datasets whose ids are 1..C in label order).
* ``image_id``: with ``--coco ANNOTATIONS.json`` the id of the image of that file whose
  ``file_name`` (a basename or a relative path such as ``val2017/x.jpg``) is the end of the
  image's path; the longest match wins. Every image must be in that file: images that are not
  are **refused** before the model runs (``percepta score`` would refuse their ids anyway), with
  the count and the first names. Without ``--coco``: the position of the file in the sorted list
  of inputs, from 0 (stable when some files are skipped).

Files that are not readable images are reported (one line naming the file and the reason) and
skipped; the run goes on, but a run that could read none of its files fails (exit status 2).
Images are decoded to ``uint8`` RGB (16-bit PNGs are scaled to 8 bits), the 0-255 half of the
convention every percepta model follows (torchvision's: ``uint8`` 0-255, float 0-1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from percepta.data.images import read_rgb
from percepta.errors import CheckpointError, DataError, NotAvailableError, PerceptaError

__all__ = [
    "IMAGE_EXTENSIONS",
    "Detector",
    "find_images",
    "read_image",
    "resolve_device",
    "predict_files",
    "load_detector",
    "load_predictor",
    "coco_image_ids",
    "label_to_category",
    "cli_predict",
]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
Predictor = Callable[[list[torch.Tensor]], list[dict]]


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# -------------------------------------------------------------------------------- inputs
def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into a list of candidate image files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(
                    q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS
                )
            )
        elif p.is_file():
            out.append(p)
        else:
            raise PerceptaError(f"no such file or folder: {p}")
    return out


def read_image(path: Path) -> torch.Tensor:
    """Decode an image file to uint8 RGB ``[3,H,W]`` (:func:`percepta.data.images.read_rgb`);
    raises a ``ValueError`` (a ``DataError``) ``<path>: not a readable image (<reason>)``."""
    return read_rgb(path)


def _batches(items: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def predict_files(
    predictor: Predictor,
    files: Sequence[Path],
    batch_size: int = 8,
    on_error: Callable[[str], None] = print,
    progress: bool = True,
) -> list[tuple[Path, torch.Tensor, dict]]:
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


# -------------------------------------------------------------------------------- models
def resolve_device(name: str) -> torch.device:
    """``--device`` value -> a usable ``torch.device`` (``auto``: CUDA when available, else CPU).

    Raises:
        PerceptaError: not a device name; NotAvailableError: a device this machine lacks.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise PerceptaError(
            f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NotAvailableError(
                f"--device {name}: CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NotAvailableError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return dev
    backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise NotAvailableError(
            f"--device {name}: {dev.type} is not available on this machine; use --device cpu"
        )
    return dev


@dataclass
class Detector:
    """A loaded detector for :func:`predict_files`: the callable and the dataset facts."""

    run: Predictor
    class_names: list[str]
    category_ids: list[int] = field(default_factory=list)  # per label; [] = not recorded
    num_classes: int = 0
    source: str = ""


def _onnx_detector(path: str, device: str) -> Detector:
    from percepta.export.runtime import OnnxPredictor

    # auto: onnxruntime's CPU provider (as OnnxPredictor's default); cuda: its CUDA provider
    dev = resolve_device(device) if device != "auto" else torch.device("cpu")
    if dev.type not in ("cpu", "cuda"):
        raise NotAvailableError(f"--device {device}: ONNX models run on cpu or cuda")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if dev.type == "cuda" else None
    from percepta.export.onnx_faster_rcnn import FasterRCNNOnnxPredictor, is_faster_rcnn_onnx

    runner = FasterRCNNOnnxPredictor if is_faster_rcnn_onnx(path) else OnnxPredictor
    onnx_model = runner(path, providers=providers)
    raw = dict(onnx_model.session.get_modelmeta().custom_metadata_map)
    try:  # exports that record the dataset's category ids (metadata "category_ids", JSON)
        ids = [int(i) for i in json.loads(raw.get("category_ids", "[]"))]
    except (ValueError, TypeError):
        raise CheckpointError(f"{path}: unreadable 'category_ids' in its metadata") from None
    return Detector(onnx_model, list(onnx_model.class_names), ids, onnx_model.num_classes, path)


def load_detector(path: str, device: str = "auto") -> Detector:
    """Load a detection checkpoint (``.pt``) or ONNX export (``.onnx``) for prediction."""
    if path.endswith(".onnx"):
        return _onnx_detector(path, device)
    from percepta.checkpoints import check_task, load_checkpoint, model_from_checkpoint
    from percepta.inference import run_model

    dev = resolve_device(device)
    ckpt = load_checkpoint(path)
    check_task(ckpt, "detection", path)
    model = model_from_checkpoint(ckpt, path, device=dev)
    options = (ckpt.get("config") or {}).get("model") or {}
    ids = [int(i) for i in (options.get("category_ids") or [])]

    def run(images: list[torch.Tensor]) -> list[dict]:
        preds = run_model(model, [im.to(dev) for im in images])  # images are all it gets here
        return [{k: v.cpu() for k, v in p.items()} for p in preds]

    names = list(getattr(model, "class_names", []) or [])
    return Detector(run, names, ids, int(getattr(model, "num_classes", len(names))), path)


def load_predictor(path: str, device: str) -> tuple[Predictor, list[str]]:
    """``(callable, class_names)`` of :func:`load_detector` (kept for existing callers)."""
    det = load_detector(path, device)
    return det.run, det.class_names


# -------------------------------------------------------------------------------- ids
def label_to_category(detector: Detector, warn: Callable[[str], None] = _warn) -> list[int]:
    """The dataset category id of every label; ``label + 1`` (one warning) when not recorded."""
    n = detector.num_classes or len(detector.class_names)
    ids = list(detector.category_ids)
    if ids and len(ids) != n:
        raise CheckpointError(
            f"{detector.source}: records {len(ids)} category ids for {n} "
            "classes (model.category_ids); it is inconsistent"
        )
    if not ids:
        warn(
            f"{detector.source} records no dataset category ids (model.category_ids; older "
            "checkpoints and exports lack them): writing category_id = label + 1, which is "
            "right only for datasets whose category ids are 1..C in label order"
        )
        ids = list(range(1, n + 1))
    return ids


def _norm(name: str) -> str:
    return "/".join(p for p in str(name).replace("\\", "/").split("/") if p not in ("", "."))


def coco_image_ids(ann_file: str | Path, files: Sequence[Path]) -> tuple[dict[Path, int], dict]:
    """Map each of ``files`` to its image id in the COCO file ``ann_file`` (see module doc).

    Returns:
        ``({file: image_id}, coco_dict)``.

    Raises:
        DataError: an unreadable file, an ambiguous name, two files with one id, or files that
            are not images of ``ann_file`` (count and first names).
    """
    from percepta.detection.coco_results import read_json

    data = read_json(ann_file, "COCO annotation")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DataError(f"{ann_file}: not a COCO file (no 'images' list)")
    index: dict[str, list[int]] = {}
    for i, img in enumerate(images):
        if not (
            isinstance(img, dict)
            and isinstance(img.get("id"), int)
            and isinstance(img.get("file_name"), str)
        ):
            raise DataError(f"{ann_file}: images[{i}] needs an integer 'id' and a 'file_name'")
        index.setdefault(_norm(img["file_name"]), []).append(img["id"])
    ids: dict[Path, int] = {}
    owner: dict[int, Path] = {}
    missing: list[Path] = []
    for f in files:
        parts = Path(os.path.abspath(f)).parts  # ".." folded, symlinks kept as named
        for k in range(len(parts), 0, -1):
            found = index.get("/".join(parts[-k:]))
            if found:
                break
        else:
            missing.append(f)
            continue
        if len(found) > 1:
            raise DataError(
                f"{ann_file}: {f} matches images {found[:5]} (same file_name); "
                "the file name is ambiguous"
            )
        if found[0] in owner:
            raise DataError(
                f"{ann_file}: {owner[found[0]]} and {f} both match image id "
                f"{found[0]}; predict one of them"
            )
        ids[f], owner[found[0]] = found[0], f
    if missing:
        shown = ", ".join(str(m) for m in missing[:3])
        raise DataError(
            f"{len(missing)} of {len(files)} images are not in {ann_file} (by file "
            f"name): {shown}{' ...' if len(missing) > 3 else ''}; predict only that "
            "file's images, or leave out --coco"
        )
    return ids, data


def _check_categories(category_ids: list[int], coco: dict, ann_file: str) -> None:
    known = {c.get("id") for c in coco.get("categories") or [] if isinstance(c, dict)}
    unknown = sorted(set(category_ids) - known)
    if known and unknown:
        _warn(
            f"{len(unknown)} of the model's category ids are not categories of {ann_file} "
            f"(e.g. {unknown[:5]}); `percepta score` will refuse detections of those classes"
        )


# -------------------------------------------------------------------------------- command
def _records(
    path: Path, image_id: int, pred: dict, class_names: list[str], category_ids: list[int]
) -> list[dict[str, Any]]:
    out = []
    boxes = pred["boxes"].reshape(-1, 4)
    for box, score, label in zip(boxes.tolist(), pred["scores"].tolist(), pred["labels"].tolist()):
        x1, y1, x2, y2 = box
        label = int(label)
        # COCO sizes are >= 0; a degenerate box (x2 < x1 by rounding, or a negative predicted
        # size) is written with size 0 rather than refused by `percepta score`
        w, h = max(0.0, x2 - x1), max(0.0, y2 - y1)
        out.append(
            {
                "image_id": image_id,
                "file_name": str(path),
                "category_id": category_ids[label],
                "label": label,
                "category_name": class_names[label] if label < len(class_names) else str(label),
                "bbox": [x1, y1, w, h],
                "score": float(score),
            }
        )
    return out


def cli_predict(args: argparse.Namespace) -> int:
    """``percepta predict MODEL IMAGES... --out DIR [--coco ANN.json] [--device] [--no-draw]``."""
    from percepta.viz.boxes import draw_detections, save_png

    files = find_images(args.images)
    if not files:
        raise PerceptaError(f"no image files found in {', '.join(args.images)}")
    coco_file = getattr(args, "coco", None)
    if coco_file:
        image_ids, coco = coco_image_ids(coco_file, files)
    else:
        image_ids, coco = {f: i for i, f in enumerate(files)}, None
    detector = load_detector(args.checkpoint, args.device)
    category_ids = label_to_category(detector)
    if coco is not None:
        _check_categories(category_ids, coco, coco_file)
    skipped: list[str] = []
    results = predict_files(
        detector.run, files, args.batch_size, on_error=lambda m: (skipped.append(m), print(m))
    )
    if not results:
        raise DataError(
            f"none of the {len(files)} files could be read as an image "
            f"(first: {skipped[0].removeprefix('skipped: ')}); nothing was written"
        )
    out = Path(args.out)
    records = []
    for path, image, pred in results:
        image_id = image_ids[path]
        records.extend(_records(path, image_id, pred, detector.class_names, category_ids))
        if not args.no_draw:
            drawn = draw_detections(
                image,
                pred["boxes"],
                pred["labels"],
                pred["scores"],
                detector.class_names,
                score_threshold=args.score_threshold,
            )
            save_png(drawn, out / "images" / f"{image_id:05d}_{path.stem}.png")
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.json").write_text(json.dumps(records))
    n_shown = sum(r["score"] >= args.score_threshold for r in records)
    print(
        f"{len(results)} images, {len(records)} detections ({n_shown} >= {args.score_threshold}) "
        f"-> {out / 'predictions.json'}" + (f"; {len(skipped)} files skipped" if skipped else "")
    )
    return 0
