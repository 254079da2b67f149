"""Export: ONNX with the decode in the graph (:mod:`.onnx`) and an onnxruntime predictor."""

from __future__ import annotations

from typing import Any

__all__ = ["OnnxPredictor", "export_onnx", "export_checkpoint"]


def __getattr__(name: str) -> Any:  # lazy: importing percepta.export must not load onnxruntime
    if name == "OnnxPredictor":
        from percepta.export.runtime import OnnxPredictor

        return OnnxPredictor
    if name in ("export_onnx", "export_checkpoint"):
        from percepta.export import onnx as _onnx

        return getattr(_onnx, name)
    raise AttributeError(name)
