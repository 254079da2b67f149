"""ONNX export of CenterNet with normalisation, network and the whole decode inside the graph.

``percepta export CKPT --format onnx`` (:func:`cli_export`) -> :func:`export_checkpoint` ->
:func:`export_onnx`. The graph takes the *letterboxed* RGB batch ``images`` (float32
``[B,3,H,W]``, values 0-1 as torchvision's float images; ``B``, ``H`` and ``W`` dynamic, ``H``
and ``W`` multiples of the backbone stride 32) and, with ``decode="full"`` (default), returns the
final detections

* ``boxes [B,K,4]`` float32 XYXY in pixels of the graph's input image,
* ``scores [B,K]`` float32 sorted descending, ``labels [B,K]`` int64,

computed by exactly the PyTorch code: ``x 255`` (:func:`graph_input_to_canvas`), then
:meth:`CenterNet.forward_heads` (ImageNet normalisation, backbone, neck, heads), then
:func:`percepta.detection.centernet_decode.decode` (3x3 max-pool peak picking with ``==``,
two-stage top-K, offset/size gathering, box assembly), times the output stride. Letterboxing,
the score threshold and the mapping back to the original image (divide by the letterbox scale,
clip) stay on the host, in :class:`percepta.export.runtime.OnnxPredictor`, because they are
per-image and data dependent (resize to a size that depends on the image).

``decode="peaks"`` writes centerX's "peaks only" graph instead (CPFLAME/centerX
``projects/speedup``): outputs ``heat_peaks = heat * keep`` with
``keep = relu(heat - maxpool3x3(heat) + 1e-9) * 1e9`` (1 at local maxima, 0 elsewhere; this
avoids ``==``, which some converters lack), ``reg`` and ``wh`` maps; the host then thresholds
or runs top-K. **fp16 pitfall**: in half precision 1e-9 rounds to 0 and 1e9 overflows to inf,
so ``keep`` becomes ``0 * inf = NaN``; :func:`peaks_only` therefore always computes in float32,
and a half-precision engine built from this graph (e.g. TensorRT ``--fp16``) must keep these
layers in fp32. In fp32 the result is bit-identical to the ``==`` mask for every score
>= 2**-6 ~ 0.0156 (its float spacing exceeds 1e-9). Below that, a non-peak whose 3x3 maximum is
larger by only d < 1e-9 (a few ulps) leaks ``h * (1 - 1e9 * d) <= max_h h * (1 - 59.6 h) ~ 0.0042``
(d >= ulp(h) >= h * 2**-24), so any score threshold >= 0.005 sees exactly the ``==`` result.

Input: float32 in 0-1 (metadata ``input_dtype=float32``, ``input_range=0-1``), the rule every
percepta model follows (torchvision's): ``uint8`` images are 0-255, float images 0-1. The host
letterbox (an antialiased resize in float, exactly as ``CenterNet.preprocess``) produces
non-integer pixel values, so a uint8 graph input would force a rounding step the PyTorch model
does not have and break exact parity; images that need no resize gain nothing either (the cast
is the first, cheapest node). The graph multiplies its input by 255 before the model's own
normalisation. Callers pass uint8 (0-255) or float (0-1) images of any size to
:class:`~percepta.export.runtime.OnnxPredictor`, which letterboxes them with the model's own
``preprocess`` and divides the canvas by 255; exports written before ``input_range`` existed
took 0-255 and are fed 0-255 by the predictor.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)`` with ``dynamic_axes``.
It is deprecated since torch 2.9 but still works in 2.14, traces the model in ~2-4 s and gives
a graph with dynamic batch/height/width. The ``torch.export`` (dynamo) exporter fails on this
decode with dynamic H/W (``aten.remainder.Scalar`` on a symbolic width, ``inds % width``, has
no ONNX translation in onnxscript 0.7) and, after rewriting the modulo, takes ~10x longer.
Tracing fixes ``K' = min(K, H/4 * W/4)`` at the traced size, so the graph needs
``(H/4)*(W/4) >= top_k`` at run time (always true at the model's ``input_size`` >= 128 for
K = 100); :func:`export_onnx` checks this for ``input_size``.

Everything the predictor needs is stored in the model's ``metadata_props`` (see
:data:`METADATA_KEYS`): class names (JSON), input size, stride, top-K, score threshold,
decode mode, input dtype and range, percepta version. Deformable convolutions (DCNv2,
``torchvision.ops.DeformConv2d``) have no ONNX operator: such models are refused up front.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.ops import DeformConv2d

from percepta.errors import PerceptaError

__all__ = [
    "ExportError",
    "METADATA_KEYS",
    "INPUT_RANGE",
    "graph_input_to_canvas",
    "peaks_only",
    "DetectionGraph",
    "PeaksGraph",
    "export_onnx",
    "export_checkpoint",
    "check_parity",
    "parity_images",
    "cli_export",
]

MIN_OPSET = 11  # float Equal, GatherElements, TopK with a K input
MAX_OPSET = 20  # highest opset of the TorchScript exporter in torch 2.14
METADATA_KEYS = (
    "percepta_version",
    "task",
    "model",
    "decode",
    "class_names",
    "num_classes",
    "input_size",
    "stride",
    "top_k",
    "score_threshold",
    "cat_spec_wh",
    "input_dtype",
    "input_range",
    "outputs",
)
INPUT_RANGE = "0-1"  # the graph's float input range (torchvision's float image convention)


class ExportError(PerceptaError):
    """A model or option that cannot be exported (deformable convs, unknown model, bad option)."""


def peaks_only(heat: torch.Tensor) -> torch.Tensor:
    """centerX's ``==``-free peak map: ``heat * relu(heat - maxpool3x3(heat) + 1e-9) * 1e9``.

    Always computed in float32 (see the module docstring for the fp16 NaN pitfall). The one
    peak picker, :func:`percepta.detection.centernet_decode.peak_mask`, with ``equality_free``.
    """
    from percepta.detection.centernet_decode import peak_mask

    return peak_mask(heat, 3, equality_free=True)


def graph_input_to_canvas(images: torch.Tensor) -> torch.Tensor:
    """The graph's float 0-1 input -> the 0-255 canvas :meth:`CenterNet.forward_heads` takes."""
    return images.float() * 255.0


class DetectionGraph(nn.Module):
    """The exported ``decode="full"`` graph: letterboxed images (float 0-1) -> boxes, scores,
    labels."""

    def __init__(self, model: nn.Module, top_k: int) -> None:
        super().__init__()
        self.model = model
        self.top_k = int(top_k)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from percepta.detection.centernet_decode import decode

        out = self.model.forward_heads(graph_input_to_canvas(images))
        dets = decode(
            out["heat"].float(),
            out["wh"].float(),
            out["reg"].float(),
            k=self.top_k,
            cat_spec_wh=self.model.cat_spec_wh,
        )
        boxes = dets[..., :4] * self.model.stride
        return boxes, dets[..., 4], dets[..., 5].to(torch.int64)


class PeaksGraph(nn.Module):
    """The exported ``decode="peaks"`` graph: letterboxed images (float 0-1) -> ``heat_peaks``,
    ``reg``, ``wh`` maps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model.forward_heads(graph_input_to_canvas(images))
        return peaks_only(out["heat"]), out["reg"].float(), out["wh"].float()


# -------------------------------------------------------------------------------- checks
_DEFORM_MESSAGE = (
    "cannot export {where} to ONNX: it uses deformable convolutions (model.deform=true, "
    "torchvision.ops.DeformConv2d), which have no ONNX operator; train with "
    "model.deform=false (centerX's 'nodeform' models) to export"
)


def _check_exportable(model: nn.Module) -> None:
    cfg = getattr(model, "config", None)
    if cfg is None:
        full = getattr(model, "percepta_config", None)
        cfg = getattr(full, "model", None) if full is not None else None
    if bool(getattr(cfg, "deform", False)) or any(
        isinstance(m, DeformConv2d) for m in model.modules()
    ):
        raise ExportError(_DEFORM_MESSAGE.format(where="the model"))
    needed = ("forward_heads", "preprocess", "postprocess", "input_size", "stride", "cat_spec_wh")
    missing = [a for a in needed if not hasattr(model, a)]
    if missing:
        raise ExportError(
            f"cannot export {type(model).__name__} to ONNX: only CenterNet "
            f"detectors are supported (it lacks {', '.join(missing)})"
        )


def _check_basic(decode: str, top_k: int, opset: int) -> None:
    if decode not in ("full", "peaks"):
        raise ExportError(f"decode must be 'full' or 'peaks', got {decode!r}")
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET}")
    if int(top_k) < 1:
        raise ExportError(f"top_k must be >= 1, got {top_k}")


def _check_options(
    model: nn.Module, decode: str, top_k: int, opset: int, size: tuple[int, int]
) -> None:
    _check_basic(decode, top_k, opset)
    step = int(getattr(model.backbone, "stride", 32))
    if size[0] % step or size[1] % step or min(size) < step:
        raise ExportError(
            f"example size {size} must be positive multiples of the backbone stride {step}"
        )
    cells = (model.input_size // model.stride) ** 2
    if decode == "full" and top_k > min(
        cells, (size[0] // model.stride) * (size[1] // model.stride)
    ):
        raise ExportError(
            f"top_k={top_k} exceeds the {cells} cells of the output map at "
            f"input_size={model.input_size}; use --top-k <= {cells}"
        )


# -------------------------------------------------------------------------------- export
def _metadata(model: nn.Module, decode: str, top_k: int) -> dict[str, str]:
    import percepta

    names = [str(n) for n in (getattr(model, "class_names", None) or [])]
    outputs = ["boxes", "scores", "labels"] if decode == "full" else ["heat_peaks", "reg", "wh"]
    return {
        "percepta_version": percepta.__version__,
        "task": "detection",
        "model": "centernet",
        "decode": decode,
        "class_names": json.dumps(names),
        "category_ids": json.dumps(
            [int(c) for c in getattr(getattr(model, "config", None), "category_ids", None) or []]
        ),
        "num_classes": str(int(model.num_classes)),
        "input_size": str(int(model.input_size)),
        "stride": str(int(model.stride)),
        "top_k": str(int(top_k)),
        "score_threshold": repr(float(model.score_threshold)),
        "cat_spec_wh": json.dumps(bool(model.cat_spec_wh)),
        "input_dtype": "float32",
        "input_range": INPUT_RANGE,
        "outputs": json.dumps(outputs),
    }


def export_onnx(
    model: nn.Module,
    path: str | Path,
    decode: str = "full",
    top_k: int = 100,
    opset: int = 17,
    example_size: int | Sequence[int] | None = None,
) -> Path:
    """Write ``model`` (a CenterNet) as an ONNX graph with the decode inside; see module docstring.

    Args:
        model: a :class:`~percepta.detection.centernet.CenterNet` (its mode is restored after).
        path: output ``.onnx`` file (folders are created).
        decode: ``"full"`` (boxes/scores/labels) or ``"peaks"`` (centerX peak maps).
        top_k: detections per image (``"full"``; stored in the metadata for both modes).
        opset: ONNX opset, 11..20.
        example_size: ``S`` or ``(H, W)`` of the tracing example (default ``model.input_size``);
            the graph accepts other multiples of 32 as well.

    Returns:
        The written path. ``onnx.checker.check_model`` has passed on it.

    Raises:
        ExportError: deformable convs, a model that is not a CenterNet, or a bad option.
    """
    import onnx

    from percepta.export.onnx_faster_rcnn import export_faster_rcnn, is_faster_rcnn

    if is_faster_rcnn(model):  # torchvision's own ONNX path (:mod:`.onnx_faster_rcnn`)
        if decode != "full":
            raise ExportError(f"decode={decode!r}: a Faster R-CNN exports decode=full only")
        return export_faster_rcnn(model, path, top_k=top_k, opset=opset, example_size=example_size)
    _check_exportable(model)
    if example_size is None:
        size = (int(model.input_size), int(model.input_size))
    elif isinstance(example_size, int):
        size = (example_size, example_size)
    else:
        size = (int(example_size[0]), int(example_size[1]))
    _check_options(model, decode, top_k, opset, size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    graph = DetectionGraph(model, top_k) if decode == "full" else PeaksGraph(model)
    outputs = ["boxes", "scores", "labels"] if decode == "full" else ["heat_peaks", "reg", "wh"]
    axes: dict[str, dict[int, str]] = {"images": {0: "batch", 2: "height", 3: "width"}}
    for name in outputs:
        axes[name] = {0: "batch"} if decode == "full" else {0: "batch", 2: "map_h", 3: "map_w"}
    device = next(model.parameters()).device
    example = torch.zeros(2, 3, *size, device=device)  # batch 2 so nothing specialises to 1
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # the legacy exporter's deprecation notice, and the tracer's note that
            # min(K, H*W) in decode() becomes a constant (documented above)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                graph,
                (example,),
                str(path),
                dynamo=False,
                opset_version=int(opset),
                input_names=["images"],
                output_names=outputs,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except ExportError:
        raise
    except Exception as e:  # torch's errors are long; keep the first line and the cause
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(
            f"ONNX export of {type(model).__name__} to {path} failed: {type(e).__name__}: {first}"
        ) from e
    finally:
        model.train(was_training)

    proto = onnx.load(str(path))
    for key, value in _metadata(model, decode, top_k).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"percepta CenterNet, decode={decode}: input 'images' float32 [B,3,H,W] "
        "RGB in 0-1, letterboxed (H, W multiples of 32); see metadata_props"
    )
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


# -------------------------------------------------------------------------------- parity
def parity_images(size: int, n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    """Deterministic uint8 sample images from the built-in shape generator, cycling through
    three letterbox cases: ``size x size`` (no resize), a wide ``3/4 size x size`` crop (padding
    only) and a tall ``3/2 size x size`` crop (down-scaled by 2/3, then padded)."""
    from percepta.data.synthetic.detection import render_image

    out = []
    for i in range(n):
        side = size * 3 // 2 if i % 3 == 2 else size
        im = torch.from_numpy(render_image(seed, i, side).image).permute(2, 0, 1).contiguous()
        if i % 3 == 1:
            im = im[:, : size * 3 // 4, :]  # wide
        elif i % 3 == 2:
            im = im[:, :, :size]  # tall
        out.append(im)
    return out


def check_parity(
    model: nn.Module,
    onnx_path: str | Path | Any,
    images: torch.Tensor | Sequence[torch.Tensor],
    box_tol: float = 1e-3,
    score_tol: float = 1e-5,
) -> dict[str, Any]:
    """Run ``model.eval()(images)`` and the ONNX model (onnxruntime, CPU) and compare.

    ``onnx_path`` may also be an :class:`~percepta.export.runtime.OnnxPredictor` (reused).

    The PyTorch model runs with the exported top-K and score threshold. Detections are paired
    per image (same label, nearest box; :func:`percepta.export.runtime.compare_predictions`).

    Returns:
        ``{"images", "detections", "max_box_diff", "max_score_diff", "labels_equal",
        "borderline", "ok", "box_tol", "score_tol"}``.
    """
    from percepta.export.runtime import OnnxPredictor, compare_predictions

    predictor = onnx_path if isinstance(onnx_path, OnnxPredictor) else OnnxPredictor(onnx_path)
    saved = (model.training, model.top_k, model.score_threshold)
    model.top_k, model.score_threshold = predictor.top_k, predictor.score_threshold
    model.eval()
    try:
        with torch.no_grad():
            ref = model(images)
    finally:
        model.train(saved[0])
        model.top_k, model.score_threshold = saved[1], saved[2]
    ours = predictor(images)
    return compare_predictions(
        ref,
        ours,
        box_tol=box_tol,
        score_tol=score_tol,
        score_threshold=predictor.score_threshold,
        top_k=predictor.top_k,
    )


def export_checkpoint(
    ckpt_path: str | Path,
    out_path: str | Path | None = None,
    decode: str = "full",
    top_k: int = 100,
    opset: int = 17,
    check: bool = True,
) -> dict[str, Any]:
    """Export a detection checkpoint to ONNX and (optionally) check it against PyTorch.

    Args:
        ckpt_path: a percepta detection checkpoint (``percepta train``).
        out_path: output file (default: the checkpoint's path with ``.onnx``, or
            ``-peaks.onnx`` for ``decode="peaks"``).
        check: compare with the PyTorch model on 3 built-in-style images (batch 1 and 3).

    Returns:
        ``{"path", "decode", "opset", "top_k", "size_mb", "parity": dict or None}``.
    """
    from percepta.checkpoints import check_task, load_checkpoint, load_model

    _check_basic(decode, top_k, opset)
    ckpt_path = Path(ckpt_path)
    ckpt = load_checkpoint(ckpt_path)
    check_task(ckpt, "detection", ckpt_path)
    model_cfg = (ckpt.get("config") or {}).get("model") or {}
    if isinstance(model_cfg, dict) and model_cfg.get("deform"):
        raise ExportError(_DEFORM_MESSAGE.format(where=f"checkpoint {ckpt_path}"))
    del ckpt
    model = load_model(ckpt_path, device="cpu", eval_mode=True)
    from percepta.export.onnx_faster_rcnn import export_faster_rcnn_checkpoint, is_faster_rcnn

    if is_faster_rcnn(model):  # torchvision's own ONNX path (:mod:`.onnx_faster_rcnn`)
        return export_faster_rcnn_checkpoint(
            model, ckpt_path, out_path, decode, top_k, opset, check
        )
    _check_exportable(model)
    if out_path is None:
        out_path = ckpt_path.with_name(
            ckpt_path.stem + ("-peaks" if decode == "peaks" else "") + ".onnx"
        )
    path = export_onnx(model, out_path, decode=decode, top_k=top_k, opset=opset)
    parity = None
    if check:
        from percepta.export.runtime import OnnxPredictor

        predictor = OnnxPredictor(path)
        images = parity_images(int(model.input_size), n=3)
        single = check_parity(model, predictor, images[:1])
        batch = check_parity(model, predictor, images)
        parity = {k: batch[k] for k in ("box_tol", "score_tol")}
        parity["images"] = single["images"] + batch["images"]
        parity["detections"] = single["detections"] + batch["detections"]
        parity["max_box_diff"] = max(single["max_box_diff"], batch["max_box_diff"])
        parity["max_score_diff"] = max(single["max_score_diff"], batch["max_score_diff"])
        parity["labels_equal"] = single["labels_equal"] and batch["labels_equal"]
        parity["borderline"] = single["borderline"] + batch["borderline"]
        parity["ok"] = single["ok"] and batch["ok"]
    return {
        "path": str(path),
        "decode": decode,
        "opset": int(opset),
        "top_k": int(top_k),
        "size_mb": round(path.stat().st_size / 2**20, 2),
        "parity": parity,
    }


def cli_export(args: argparse.Namespace) -> int:
    """``percepta export CKPT --format onnx [--out] [--decode] [--top-k] [--opset] [--no-check]``."""
    if getattr(args, "format", "onnx") != "onnx":
        raise ExportError(f"unsupported export format {args.format!r} (only onnx)")
    info = export_checkpoint(
        args.checkpoint,
        args.out,
        decode=args.decode,
        top_k=args.top_k,
        opset=args.opset,
        check=not args.no_check,
    )
    print(
        f"wrote {info['path']} ({info['size_mb']} MB, opset {info['opset']}, "
        f"decode={info['decode']}, top_k={info['top_k']}); onnx.checker: ok"
    )
    parity = info["parity"]
    if parity is None:
        return 0
    print(
        f"parity vs PyTorch on {parity['images']} images, {parity['detections']} detections: "
        f"max box diff {parity['max_box_diff']:.2e} px (tol {parity['box_tol']:g}), max score "
        f"diff {parity['max_score_diff']:.2e} (tol {parity['score_tol']:g}), labels equal: "
        f"{parity['labels_equal']} -> {'ok' if parity['ok'] else 'FAILED'}"
    )
    return 0 if parity["ok"] else 1
