"""ONNX export of Faster R-CNN (torchvision's own ONNX path) and its onnxruntime predictor.

torchvision's detection models trace into ONNX (opset >= 11) with the whole inference inside
the graph: ``GeneralizedRCNNTransform`` (resize computed in the graph, ImageNet normalisation),
backbone + FPN, RPN (anchors, top-N, NMS), RoI heads (MultiScaleRoIAlign, box decoding,
per-class NMS) and the mapping back to the input image. :class:`FasterRCNNGraph` wraps
:class:`percepta.detection.faster_rcnn.FasterRCNN` so that the graph also applies percepta's
conventions: labels ``0..C-1`` and boxes clipped to the image.

Graph: input ``image`` float32 ``[3,H,W]`` RGB in 0-1 (torchvision's float convention; one
image per run, ``H`` and ``W`` dynamic) -> ``boxes [K,4]`` XYXY in the input image's pixels,
``scores [K]``, ``labels [K]`` int64, ``K <= top_k`` (dynamic). The exporter is the
TorchScript-based ``torch.onnx.export(..., dynamo=False)``, as for CenterNet
(:mod:`percepta.export.onnx`), which is the path torchvision tests its detectors with.

:class:`FasterRCNNOnnxPredictor` runs the file with onnxruntime on images of any size
(``uint8`` 0-255 or float 0-1, converted as the PyTorch model does) and returns the same
prediction dicts; :func:`export_faster_rcnn_checkpoint` is what ``percepta export`` runs for
a Faster R-CNN checkpoint (export, ``onnx.checker``, parity against PyTorch on the built-in
sample images with :func:`percepta.export.runtime.compare_predictions`). Parity is checked one
image at a time on both sides: torchvision pads a batch to its largest image and places anchors
on the padded maps, so in PyTorch an image's detections depend slightly on its batch-mates.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.onnx.operators import shape_as_tensor

from percepta.errors import CheckpointError

__all__ = [
    "MODEL_NAME",
    "FasterRCNNGraph",
    "FasterRCNNOnnxPredictor",
    "check_parity",
    "export_faster_rcnn",
    "export_faster_rcnn_checkpoint",
    "is_faster_rcnn",
    "is_faster_rcnn_onnx",
]

MODEL_NAME = "faster_rcnn"  # metadata "model" of these exports
MIN_OPSET = 11  # torchvision's detection models need opset 11 (dynamic resize, NMS)
MAX_OPSET = 20


def is_faster_rcnn(model: nn.Module) -> bool:
    """Whether ``model`` is a percepta :class:`~percepta.detection.faster_rcnn.FasterRCNN`."""
    from percepta.detection.faster_rcnn import FasterRCNN

    return isinstance(model, FasterRCNN)


def is_faster_rcnn_onnx(path: str | Path) -> bool:
    """Whether the ONNX file at ``path`` is a percepta Faster R-CNN export (its metadata says
    ``model=faster_rcnn``); ``False`` for anything unreadable (its loader reports that)."""
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return any(p.key == "model" and p.value == MODEL_NAME for p in proto.metadata_props)


def _error(message: str) -> Exception:
    from percepta.export.onnx import ExportError

    return ExportError(message)


class FasterRCNNGraph(nn.Module):
    """The exported graph: one float 0-1 image ``[3,H,W]`` -> boxes, scores, labels (0..C-1)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        det = self.model.net([image.float()])[0]
        # clip to the input image with its traced (dynamic) size, as FasterRCNN.to_percepta
        shape = shape_as_tensor(image)
        limit = shape[torch.tensor([2, 1, 2, 1])].to(det["boxes"].dtype)
        boxes = torch.min(det["boxes"].clamp(min=0), limit)
        return boxes, det["scores"], det["labels"] - 1


def _metadata(model: nn.Module, top_k: int) -> dict[str, str]:
    import percepta

    cfg = getattr(model, "config", None)
    transform = model.net.transform
    return {
        "percepta_version": percepta.__version__,
        "task": "detection",
        "model": MODEL_NAME,
        "decode": "full",
        "class_names": json.dumps([str(n) for n in model.class_names]),
        "category_ids": json.dumps([int(c) for c in getattr(cfg, "category_ids", None) or []]),
        "num_classes": str(int(model.num_classes)),
        "min_size": str(int(transform.min_size[0])),
        "max_size": str(int(transform.max_size)),
        "top_k": str(int(top_k)),
        "score_threshold": repr(float(model.net.roi_heads.score_thresh)),
        "input_dtype": "float32",
        "input_range": "0-1",
        "input_layout": "CHW, one image per run",
        "outputs": json.dumps(["boxes", "scores", "labels"]),
    }


def export_faster_rcnn(
    model: nn.Module,
    path: str | Path,
    top_k: int | None = None,
    opset: int = 17,
    example_size: int | Sequence[int] | None = None,
) -> Path:
    """Write a percepta Faster R-CNN as an ONNX graph (see the module docstring).

    Args:
        model: a :class:`~percepta.detection.faster_rcnn.FasterRCNN` (its mode is restored).
        path: output ``.onnx`` file (folders are created).
        top_k: detections per image (default: the model's ``box_detections_per_img``).
        opset: ONNX opset, 11..20.
        example_size: ``S`` or ``(H, W)`` of the tracing example (default: the model's
            ``min_size`` square); the graph takes any size.

    Returns:
        The written path; ``onnx.checker.check_model`` has passed on it.

    Raises:
        ExportError: a bad option, or a model torchvision's exporter cannot trace.
    """
    import onnx

    if not is_faster_rcnn(model):
        raise _error(f"export_faster_rcnn: {type(model).__name__} is not a percepta FasterRCNN")
    rh = model.net.roi_heads
    top_k = int(rh.detections_per_img if top_k is None else top_k)
    if top_k < 1:
        raise _error(f"top_k must be >= 1, got {top_k}")
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise _error(
            f"opset {opset} is not supported for Faster R-CNN: use {MIN_OPSET}..{MAX_OPSET}"
        )
    side = int(model.net.transform.min_size[0])
    if example_size is None:
        size = (side, side)
    elif isinstance(example_size, int):
        size = (int(example_size), int(example_size))
    else:
        size = (int(example_size[0]), int(example_size[1]))
    if min(size) < 1:
        raise _error(f"example size {size} must be positive")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    example = torch.rand(3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    saved = (model.training, rh.detections_per_img)
    model.eval()
    rh.detections_per_img = top_k
    outputs = ["boxes", "scores", "labels"]
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.script notice
            torch.onnx.export(
                FasterRCNNGraph(model),
                (example,),
                str(path),
                dynamo=False,
                opset_version=int(opset),
                input_names=["image"],
                output_names=outputs,
                dynamic_axes={"image": {1: "height", 2: "width"}, **{k: {0: "k"} for k in outputs}},
                do_constant_folding=True,
            )
    except Exception as e:  # torch's errors are long; keep the first line and the cause
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _error(
            f"ONNX export of FasterRCNN to {path} failed: {type(e).__name__}: {first}"
        ) from e
    finally:
        model.train(saved[0])
        rh.detections_per_img = saved[1]
    proto = onnx.load(str(path))
    for key, value in _metadata(model, top_k).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        "percepta Faster R-CNN: input 'image' float32 [3,H,W] RGB in 0-1 (any size, one image); "
        "outputs boxes [K,4] XYXY input pixels, scores [K], labels [K] 0..C-1"
    )
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


class FasterRCNNOnnxPredictor:
    """onnxruntime predictor of a Faster R-CNN export; same output as ``model.eval()(images)``.

    Args:
        path: ``.onnx`` file written by :func:`export_faster_rcnn`.
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).

    Attributes:
        class_names, num_classes, top_k, score_threshold, metadata, session.
    """

    def __init__(
        self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None
    ) -> None:
        from percepta.export.runtime import open_session

        self.path = Path(path)
        self.session = open_session(self.path, providers, threads)
        raw = dict(self.session.get_modelmeta().custom_metadata_map)
        if raw.get("model") != MODEL_NAME:
            raise CheckpointError(f"{self.path} is not a percepta Faster R-CNN export")
        try:
            self.class_names: list[str] = [str(n) for n in json.loads(raw["class_names"])]
            self.top_k = int(raw["top_k"])
            self.score_threshold = float(raw["score_threshold"])
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{self.path}: unreadable percepta metadata ({e})") from None
        self.metadata = raw
        self.num_classes = len(self.class_names)
        self._input = self.session.get_inputs()[0].name

    def __repr__(self) -> str:
        return f"FasterRCNNOnnxPredictor({str(self.path)!r}, classes={self.num_classes})"

    def __call__(
        self, images: torch.Tensor | Sequence[torch.Tensor]
    ) -> list[dict[str, torch.Tensor]]:
        """``[B,3,H,W]`` or a list of ``[3,H,W]`` (``uint8`` 0-255 or float 0-1) -> one dict per
        image: ``boxes [K,4]``, ``scores [K]``, ``labels [K]`` (CPU tensors, image pixels)."""
        from percepta.detection.faster_rcnn import to_unit_float

        out = []
        with torch.no_grad():
            for im in to_unit_float(images):
                x = np.ascontiguousarray(im.detach().to("cpu", torch.float32).numpy())
                boxes, scores, labels = self.session.run(None, {self._input: x})
                out.append(
                    {
                        "boxes": torch.from_numpy(boxes).reshape(-1, 4),
                        "scores": torch.from_numpy(scores),
                        "labels": torch.from_numpy(labels).to(torch.int64),
                    }
                )
        return out


def check_parity(
    model: nn.Module,
    predictor: FasterRCNNOnnxPredictor,
    images: Sequence[torch.Tensor],
    box_tol: float = 1e-3,
    score_tol: float = 1e-5,
) -> dict[str, Any]:
    """PyTorch ``model.eval()`` (with the export's top-K) against ``predictor(images)``, paired
    by :func:`percepta.export.runtime.compare_predictions`.

    The PyTorch model runs one image at a time, as the graph does: torchvision pads a batch to
    its largest image and places anchors on the padded maps, so an image's detections depend
    slightly on the other images of its batch."""
    from percepta.export.runtime import compare_predictions

    rh = model.net.roi_heads
    saved = (model.training, rh.detections_per_img)
    rh.detections_per_img = predictor.top_k
    model.eval()
    try:
        with torch.no_grad():
            ref = [model([im])[0] for im in images]
    finally:
        model.train(saved[0])
        rh.detections_per_img = saved[1]
    return compare_predictions(
        ref,
        predictor(images),
        box_tol=box_tol,
        score_tol=score_tol,
        score_threshold=predictor.score_threshold,
        top_k=predictor.top_k,
    )


def export_faster_rcnn_checkpoint(
    model: nn.Module,
    ckpt_path: str | Path,
    out_path: str | Path | None = None,
    decode: str = "full",
    top_k: int = 100,
    opset: int = 17,
    check: bool = True,
) -> dict[str, Any]:
    """``percepta export`` for a loaded Faster R-CNN checkpoint: the same result dict as
    :func:`percepta.export.onnx.export_checkpoint` (``path``, ``decode``, ``opset``, ``top_k``,
    ``size_mb``, ``parity``)."""
    from percepta.export.onnx import parity_images

    if decode != "full":
        raise _error(
            f"decode={decode!r} is CenterNet's peak-map graph; a Faster R-CNN exports "
            "decode=full only (its NMS is inside the graph)"
        )
    ckpt_path = Path(ckpt_path)
    if out_path is None:
        out_path = ckpt_path.with_suffix(".onnx")
    path = export_faster_rcnn(model, out_path, top_k=top_k, opset=opset)
    parity = None
    if check:
        predictor = FasterRCNNOnnxPredictor(path)
        images = parity_images(int(model.net.transform.min_size[0]), n=3)
        parity = check_parity(model, predictor, images)
    return {
        "path": str(path),
        "decode": "full",
        "opset": int(opset),
        "top_k": int(top_k),
        "size_mb": round(path.stat().st_size / 2**20, 2),
        "parity": parity,
    }
