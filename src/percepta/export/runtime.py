"""Run an exported percepta ONNX detector with onnxruntime and return PyTorch-identical predictions.

:class:`OnnxPredictor` needs only the ``.onnx`` file: class names, input size, stride, top-K,
score threshold and decode mode come from the model's ``metadata_props`` (written by
:func:`percepta.export.onnx.export_onnx`).

The host-side steps are *the same functions* the PyTorch model runs, not re-implementations:
``CenterNet.preprocess`` letterboxes (resize with antialias keeping the aspect ratio, zero pad
bottom/right) and ``CenterNet.postprocess`` applies the score threshold, divides by the letterbox
scale and clips to the original image. They are borrowed as methods of :class:`_Geometry`, a
weight-free object that carries only the attributes those methods read (``input_size``,
``stride``, ``score_threshold``, ``top_k``). For a ``decode="peaks"`` export the predictor runs
``centernet_decode.decode`` on the returned peak maps (the peak map's own maxima are exactly the
original peaks, so the result equals the full decode).

Images follow torchvision's rule, as the PyTorch model: ``uint8`` in 0-255, float in 0-1. The
letterboxed 0-255 canvas is divided by 255 for the graph, which takes float32 in 0-1
(``input_range`` metadata; exports without that key took 0-255 and get the canvas unscaled).

:func:`compare_predictions` pairs two lists of prediction dicts for parity checks.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from percepta.errors import CheckpointError, NotAvailableError, PerceptaError

__all__ = ["OnnxPredictor", "compare_predictions", "read_metadata"]

_REQUIRED = (
    "task",
    "decode",
    "class_names",
    "input_size",
    "stride",
    "top_k",
    "score_threshold",
    "cat_spec_wh",
)
# graph input range (metadata ``input_range``) -> divisor of the model's 0-255 letterbox canvas.
# Division (not a multiplication by 1/255) round-trips exactly through the graph's "x 255" for
# every canvas value tried (all integers, 1e6 uniform floats), so the graph sees the PyTorch canvas.
_INPUT_DIVISOR = {"0-1": 255.0, "0-255": 1.0}


def _centernet_cls() -> type:
    from percepta.detection.centernet import CenterNet

    return CenterNet


def open_session(
    path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path`` (all graph optimisations; ``threads``
    intra-op threads), or one-line errors: a missing file or an unreadable model
    (:class:`CheckpointError`), a provider this onnxruntime lacks (:class:`NotAvailableError`).
    Every percepta ONNX predictor opens its model through this."""
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise NotAvailableError(f"onnxruntime is needed to run {path}: {e}") from None
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX model not found: {path}")
    providers = list(providers or ["CPUExecutionProvider"])
    unknown = [p for p in providers if p not in ort.get_available_providers()]
    if unknown:
        raise NotAvailableError(
            f"onnxruntime providers {unknown} are not available here "
            f"(available: {ort.get_available_providers()})"
        )
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot load ONNX model {path}: {first}") from None


class _Geometry:
    """Carrier for ``CenterNet.preprocess``/``postprocess`` without a network (see module doc)."""

    def __init__(self, input_size: int, stride: int, score_threshold: float, top_k: int) -> None:
        self.input_size, self.stride = int(input_size), int(stride)
        self.score_threshold, self.top_k = float(score_threshold), int(top_k)
        cls = _centernet_cls()
        self._pre, self._post = cls.preprocess, cls.postprocess

    def preprocess(self, images: Any) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        return self._pre(self, images)

    def postprocess(
        self, dets: torch.Tensor, scales: torch.Tensor, sizes: Sequence[tuple[int, int]]
    ) -> list[dict[str, torch.Tensor]]:
        return self._post(self, dets, scales, sizes)


def read_metadata(session: Any, path: str | Path) -> dict[str, Any]:
    """The parsed percepta ``metadata_props`` of an onnxruntime session (errors name ``path``)."""
    raw = dict(session.get_modelmeta().custom_metadata_map)
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(
            f"{path} is not a percepta ONNX export: its metadata lacks "
            f"{missing}; export it with `percepta export CKPT --format onnx`"
        )
    try:
        meta = {
            "task": raw["task"],
            "decode": raw["decode"],
            "class_names": [str(n) for n in json.loads(raw["class_names"])],
            "input_size": int(raw["input_size"]),
            "stride": int(raw["stride"]),
            "top_k": int(raw["top_k"]),
            "score_threshold": float(raw["score_threshold"]),
            "cat_spec_wh": bool(json.loads(raw["cat_spec_wh"])),
            "percepta_version": raw.get("percepta_version", "?"),
            "input_dtype": raw.get("input_dtype", "float32"),
            # exports without the key predate the 0-1 rule: their graph takes 0-255
            "input_range": raw.get("input_range", "0-255"),
        }
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable percepta metadata ({e})") from None
    if meta["task"] != "detection":
        raise CheckpointError(
            f"{path} holds a {meta['task']!r} model; OnnxPredictor runs detection exports"
        )
    if meta["decode"] not in ("full", "peaks"):
        raise CheckpointError(f"{path}: unknown decode mode {meta['decode']!r} in its metadata")
    if meta["input_range"] not in _INPUT_DIVISOR:
        raise CheckpointError(
            f"{path}: unknown input_range {meta['input_range']!r} in its "
            f"metadata (known: {sorted(_INPUT_DIVISOR)})"
        )
    return meta


class OnnxPredictor:
    """onnxruntime predictor for a percepta ONNX detector; same output as ``model.eval()(images)``.

    Args:
        path: ``.onnx`` file written by :func:`percepta.export.onnx.export_onnx`.
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
        input_size: letterbox canvas (default: the exported model's ``input_size``); another
            multiple of 32 works because the graph has dynamic height/width.
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).

    Attributes:
        class_names, num_classes, input_size, stride, top_k, score_threshold, decode, metadata.
    """

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] | None = None,
        input_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.session = open_session(self.path, providers, threads)
        self.metadata = read_metadata(self.session, self.path)
        m = self.metadata
        self.class_names: list[str] = m["class_names"]
        self.decode: str = m["decode"]
        self.stride: int = m["stride"]
        self.top_k: int = m["top_k"]
        self.score_threshold: float = m["score_threshold"]
        self.cat_spec_wh: bool = m["cat_spec_wh"]
        self.input_size: int = int(input_size or m["input_size"])
        if self.input_size % 32 or self.input_size < 32:
            raise PerceptaError(
                f"input_size must be a positive multiple of 32, got {self.input_size}"
            )
        cells = (self.input_size // self.stride) ** 2
        if self.decode == "full" and cells < self.top_k:
            raise PerceptaError(
                f"input_size {self.input_size} gives {cells} output cells, fewer "
                f"than the graph's top_k={self.top_k}"
            )
        self.num_classes = len(self.class_names)
        self._input = self.session.get_inputs()[0].name
        self._outputs = [o.name for o in self.session.get_outputs()]
        # full graphs return boxes already in input pixels (x stride): map back with stride 1
        out_stride = 1 if self.decode == "full" else self.stride
        self._geometry = _Geometry(self.input_size, out_stride, self.score_threshold, self.top_k)

    def __repr__(self) -> str:
        return (
            f"OnnxPredictor({str(self.path)!r}, decode={self.decode}, "
            f"input_size={self.input_size}, classes={len(self.class_names)})"
        )

    def run_graph(self, batch: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph on an already letterboxed float batch ``[B,3,H,W]`` in the graph's
        input range (``metadata["input_range"]``: 0-1 for current exports)."""
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        outs = self.session.run(self._outputs, {self._input: batch})
        return dict(zip(self._outputs, outs))

    def __call__(
        self, images: torch.Tensor | Sequence[torch.Tensor]
    ) -> list[dict[str, torch.Tensor]]:
        """RGB ``[B,3,H,W]`` or list of ``[3,H,W]`` of any sizes, ``uint8`` in 0-255 or float in
        0-1 (torchvision's convention, as the PyTorch model) -> one dict per image:
        ``boxes [K,4]``, ``scores [K]``, ``labels [K]`` (CPU tensors, original-image pixels)."""
        with torch.no_grad():  # plain tensors, like the model's own eval output
            batch, scales, sizes = self._geometry.preprocess(images)  # 0-255 canvas
            batch = batch / _INPUT_DIVISOR[self.metadata["input_range"]]
            out = {k: torch.from_numpy(v) for k, v in self.run_graph(batch).items()}
            if self.decode == "full":
                boxes, scores, labels = out["boxes"], out["scores"], out["labels"]
                dets = torch.cat(
                    [boxes, scores.unsqueeze(2), labels.unsqueeze(2).to(boxes.dtype)], 2
                )
            else:
                from percepta.detection.centernet_decode import decode

                dets = decode(
                    out["heat_peaks"],
                    out["wh"],
                    out["reg"],
                    k=self.top_k,
                    cat_spec_wh=self.cat_spec_wh,
                )
            return self._geometry.postprocess(dets, scales.cpu(), sizes)


def compare_predictions(
    ref: Sequence[dict[str, torch.Tensor]],
    ours: Sequence[dict[str, torch.Tensor]],
    box_tol: float = 1e-3,
    score_tol: float = 1e-5,
    score_threshold: float | None = None,
    top_k: int | None = None,
) -> dict[str, Any]:
    """Pair two lists of prediction dicts and report the largest differences.

    Per image, detections are paired by an optimal assignment (``scipy.optimize.
    linear_sum_assignment``) on max-abs box difference + score difference, with a prohibitive
    cost across labels, so the result does not depend on the order of (near-)tied scores, which
    ``topk`` implementations order differently. A detection without a partner within the
    tolerances is allowed only if it is *borderline*: its score is within ``score_tol`` of the
    score threshold, or the image has ``top_k`` detections and its score is within ``score_tol``
    of the lowest one (the last top-K slot is then a tie).

    Returns:
        ``{"images", "detections", "max_box_diff", "max_score_diff", "labels_equal",
        "borderline", "unmatched", "ok", "box_tol", "score_tol"}``.
    """
    from scipy.optimize import linear_sum_assignment

    if len(ref) != len(ours):
        raise PerceptaError(f"cannot compare {len(ref)} with {len(ours)} prediction dicts")
    max_box = max_score = 0.0
    borderline = unmatched = detections = 0
    labels_equal = True

    def is_borderline(scores: torch.Tensor, j: int) -> bool:
        s = float(scores[j])
        if score_threshold is not None and abs(s - score_threshold) <= score_tol:
            return True
        return (
            top_k is not None and len(scores) >= top_k and abs(s - float(scores.min())) <= score_tol
        )

    for r, o in zip(ref, ours):
        rb, rs, rl = (r[k].detach().cpu().double() for k in ("boxes", "scores", "labels"))
        ob, os_, ol = (o[k].detach().cpu().double() for k in ("boxes", "scores", "labels"))
        rb, ob = rb.reshape(-1, 4), ob.reshape(-1, 4)
        detections += len(rs)
        good_r: set[int] = set()
        good_o: set[int] = set()
        if len(rs) and len(os_):
            box_d = (rb[:, None, :] - ob[None, :, :]).abs().amax(2)
            score_d = (rs[:, None] - os_[None, :]).abs()
            same = rl[:, None] == ol[None, :]
            cost = torch.where(same, box_d + score_d, torch.full_like(box_d, 1e12))
            rows, cols = linear_sum_assignment(cost.numpy())
            for a, b in zip(rows.tolist(), cols.tolist()):
                if not bool(same[a, b]):
                    continue
                bd, sd = float(box_d[a, b]), float(score_d[a, b])
                max_box, max_score = max(max_box, bd), max(max_score, sd)
                if bd <= box_tol and sd <= score_tol:
                    good_r.add(a)
                    good_o.add(b)
        rest_r = [j for j in range(len(rs)) if j not in good_r]
        rest_o = [j for j in range(len(os_)) if j not in good_o]
        for scores, rest in ((rs, rest_r), (os_, rest_o)):
            for j in rest:
                if is_borderline(scores, j):
                    borderline += 1
                else:
                    unmatched += 1
        keep_r = [j for j in range(len(rs)) if j in good_r or not is_borderline(rs, j)]
        keep_o = [j for j in range(len(os_)) if j in good_o or not is_borderline(os_, j)]
        if Counter(rl[keep_r].long().tolist()) != Counter(ol[keep_o].long().tolist()):
            labels_equal = False
    return {
        "images": len(ref),
        "detections": detections,
        "max_box_diff": max_box,
        "max_score_diff": max_score,
        "labels_equal": labels_equal,
        "borderline": borderline,
        "unmatched": unmatched,
        "ok": unmatched == 0 and labels_equal,
        "box_tol": box_tol,
        "score_tol": score_tol,
    }
