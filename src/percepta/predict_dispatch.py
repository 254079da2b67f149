"""``percepta predict`` and ``percepta export`` for every task: route on the checkpoint's task.

Detection checkpoints and exports go to their handlers unchanged
(:func:`percepta.detection.predict.cli_predict`, :func:`percepta.export.onnx.cli_export`);
quality ones (a ``.pt`` whose ``task`` is ``"quality"``, or an ``.onnx`` whose metadata says
``task=quality``) go to :func:`percepta.quality.predict.cli_predict_quality` and
:func:`percepta.export.onnx_quality.cli_export_quality`; scene-graph checkpoints to
:func:`percepta.scene_graph.predict.cli_predict_scene_graph`.

The task is read cheaply: ``torch.load(mmap=True, weights_only=True)`` (tensors are mapped, not
read) or the ONNX file's ``metadata_props`` (``onnx.load`` without external data). A file that
cannot be read this way goes to the detection handler, which reports the problem as it always
has. Options of one task given to the other are refused with one line naming them.

This module is above the tasks (the CLI's layer): it may import both.
"""

from __future__ import annotations

import argparse
import os

from percepta.errors import PerceptaError

__all__ = ["checkpoint_task", "cli_predict", "cli_export"]

# options (argparse dests) only quality checkpoints use, with their flags for messages
QUALITY_PREDICT_OPTIONS = {
    "reference": "--reference",
    "pairs": "--pairs",
    "attention": "--attention",
}
QUALITY_EXPORT_OPTIONS = {"image_size": "--image-size", "dynamic": "--dynamic"}


def checkpoint_task(path: str | os.PathLike) -> str | None:
    """The task a checkpoint (``.pt``) or percepta ONNX export (``.onnx``) was made for, or
    ``None`` when the file cannot be read cheaply (the task's handler then reports why)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return None
    try:
        if path.endswith(".onnx"):
            import onnx

            proto = onnx.load(path, load_external_data=False)
            task = {p.key: p.value for p in proto.metadata_props}.get("task")
        else:
            import torch

            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            task = ckpt.get("task") if isinstance(ckpt, dict) else None
    except Exception:  # unreadable here: the handler gives the precise error
        return None
    return task if isinstance(task, str) else None


def _refuse(args: argparse.Namespace, options: dict[str, str]) -> None:
    given = [flag for dest, flag in options.items() if getattr(args, dest, None)]
    if given:
        raise PerceptaError(
            f"{', '.join(given)}: only for quality checkpoints, and {args.checkpoint} is not one"
        )


def cli_predict(args: argparse.Namespace) -> int:
    """``percepta predict``: quality checkpoints -> CSV of scores; scene graphs -> graph JSON +
    pictures; others -> detection."""
    task = checkpoint_task(args.checkpoint)
    if task == "quality":
        from percepta.quality.predict import cli_predict_quality

        return cli_predict_quality(args)
    _refuse(args, QUALITY_PREDICT_OPTIONS)
    if task == "scene_graph":
        if not getattr(args, "images", None):
            raise PerceptaError("give at least one image file or folder to predict")
        from percepta.scene_graph.predict import cli_predict_scene_graph

        return cli_predict_scene_graph(args)
    if not getattr(args, "images", None):
        raise PerceptaError("give at least one image file or folder to predict")
    from percepta.detection.predict import cli_predict as detection_predict

    return detection_predict(args)


def cli_export(args: argparse.Namespace) -> int:
    """``percepta export``: quality checkpoints -> IQT/TRIQ ONNX; others -> detection."""
    if checkpoint_task(args.checkpoint) == "quality":
        from percepta.export.onnx_quality import cli_export_quality

        return cli_export_quality(args)
    _refuse(args, QUALITY_EXPORT_OPTIONS)
    from percepta.export.onnx import cli_export as detection_export

    return detection_export(args)
