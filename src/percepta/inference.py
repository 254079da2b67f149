"""One way to call a model at inference, whatever its task.

A model that needs more than the images at inference declares it with a class attribute::

    inference_inputs = ("boxes", "labels")   # PredCls / SGCls: the ground-truth objects
    inference_inputs = ("reference",)        # full-reference quality: the pristine image

and is then called ``model(images, inputs)`` in eval mode, ``inputs`` being one dict per image
with exactly those keys taken from the targets. A model that declares nothing is called
``model(images)``, as torchvision's detectors are. The trainer's evaluation, ``percepta eval``
and ``percepta predict`` all go through :func:`run_model`, so the engine never asks which
task it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from percepta.errors import DataError

__all__ = ["inference_inputs", "select_inputs", "run_model"]


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, AveragedModel
        model = model.module
    return model


def inference_inputs(model: nn.Module) -> tuple[str, ...]:
    """The target keys ``model`` needs at inference besides the images (``()`` for none)."""
    return tuple(getattr(_unwrap(model), "inference_inputs", ()) or ())


def select_inputs(
    keys: Sequence[str], targets: Sequence[dict[str, Any]] | None, model_name: str = "the model"
) -> list[dict[str, Any]]:
    """Per image, the ``keys`` of its target; a clear error when a target lacks one."""
    if targets is None:
        raise DataError(
            f"{model_name} needs {list(keys)} at inference besides the images, and none were given"
        )
    out = []
    for i, t in enumerate(targets):
        missing = [k for k in keys if k not in t]
        if missing:
            ident = t.get("image_id", i) if isinstance(t, dict) else i
            raise DataError(
                f"image {ident}: {model_name} needs {missing} at inference, which "
                "its target does not have"
            )
        out.append({k: t[k] for k in keys})
    return out


def run_model(
    model: nn.Module, images: Any, targets: Sequence[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Eval-mode forward: ``model(images)``, or ``model(images, inputs)`` for a model that
    declares :func:`inference_inputs`."""
    keys = inference_inputs(model)
    if not keys:
        return model(images)
    return model(images, select_inputs(keys, targets, type(_unwrap(model)).__name__))
