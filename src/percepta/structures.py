"""The few shared conventions, as typed helpers (no new box class; torchvision's ``tv_tensors``).

- Images enter models as ``uint8`` or ``float`` tensors ``[B,3,H,W]`` or a list of ``[3,H,W]``,
  raw 0-255 RGB; normalisation happens inside the model.
- Targets are dicts: ``boxes`` (``tv_tensors.BoundingBoxes``, XYXY, absolute pixels), ``labels``
  (int64, contiguous 0..C-1), ``image_id`` (int), ``orig_size`` (``(H, W)``); scene graphs add
  ``relations`` (int64 ``[R,3]``: subject index, object index, predicate 1..P); quality adds
  ``score`` and optionally ``reference``.
- Detection targets may add ``ignore_boxes`` (``tv_tensors.BoundingBoxes [M,4]``, XYXY, same
  canvas): ignore regions (COCO ``iscrowd=1``, VOC "difficult" objects) that are neither
  objects nor background. They are kept apart from ``boxes`` (not a flag aligned with them) so
  a model that ignores the key still never trains on them as objects; a loss that knows them
  skips its negatives there (CenterNet: :mod:`percepta.detection.centernet_targets`).
  v2 transforms move a second ``BoundingBoxes`` with flips and resizes, but ``RandomIoUCrop``
  and ``SanitizeBoundingBoxes`` act on the first one only, so percepta's augmentation
  (:class:`percepta.data.transforms.DetectionAugment`) runs them inside ``boxes`` and splits
  them off afterwards.
- Predictions are dicts in original-image pixels: ``boxes [K,4]``, ``scores [K]``, ``labels [K]``;
  scene graphs add ``rel_pairs [R,2]``, ``rel_scores [R,P+1]``, ``rel_labels [R]``; quality adds
  ``score []``.
"""

from __future__ import annotations

from typing import Any, TypedDict

import torch
from torchvision import tv_tensors

__all__ = ["Target", "Prediction", "make_boxes", "make_target", "collate"]


class Target(TypedDict, total=False):
    boxes: tv_tensors.BoundingBoxes
    labels: torch.Tensor
    image_id: int
    orig_size: tuple[int, int]
    relations: torch.Tensor
    score: float
    reference: torch.Tensor


class Prediction(TypedDict, total=False):
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    rel_pairs: torch.Tensor
    rel_scores: torch.Tensor
    rel_labels: torch.Tensor
    score: torch.Tensor


def make_boxes(boxes: Any, canvas_size: tuple[int, int]) -> tv_tensors.BoundingBoxes:
    """XYXY absolute-pixel boxes on an image of ``canvas_size = (H, W)``; ``[0,4]`` when empty."""
    t = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return tv_tensors.BoundingBoxes(
        t,
        format=tv_tensors.BoundingBoxFormat.XYXY,
        canvas_size=(int(canvas_size[0]), int(canvas_size[1])),
    )


def make_target(
    boxes: Any, labels: Any, image_id: int, orig_size: tuple[int, int], **extra: Any
) -> dict[str, Any]:
    """A detection target dict following the conventions above."""
    target: dict[str, Any] = {
        "boxes": make_boxes(boxes, orig_size),
        "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
        "image_id": int(image_id),
        "orig_size": (int(orig_size[0]), int(orig_size[1])),
    }
    target.update(extra)
    return target


def collate(batch: list[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    """DataLoader collate: ``[(image, target), ...] -> ([images], [targets])`` (no padding)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
