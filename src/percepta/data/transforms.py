"""Detection augmentations built from ``torchvision.transforms.v2`` (boxes and masks move with
the image).

Training pipeline (``build_transforms(train=True, augment=True)``), cheap on purpose:

1. ``RandomHorizontalFlip`` (p = 0.5);
2. mild ``ColorJitter`` (brightness / contrast / saturation 0.2, no hue: the hue path converts
   to HSV in float and costs more than the rest together), applied with p = 0.8;
3. scale jitter without resizing: ``RandomZoomOut`` (canvas up to 1.5x, p = 0.3) and SSD's
   ``RandomIoUCrop`` (scale 0.5..1, min IoU one of 0/0.1/0.3/0.5/0.7/none, p = 0.3, 10 trials,
   skipped on images without boxes), so objects appear smaller or larger
   relative to the image; the model letterboxes every image to its own input size, so nothing
   here resizes to a fixed size;
4. ``SanitizeBoundingBoxes`` (drops boxes that became smaller than 1 px or were cut away by the
   crop, together with their labels, areas and masks).

Images stay ``uint8``. Validation uses no transform (``None``).

The random draws come from torch's global RNG (as everywhere in ``transforms.v2``); the
training loader seeds it per sample from ``(seed, epoch, index)``
(:mod:`percepta.data.loader`), so a sample's augmentation is the same with any number of
workers and after a resume. Custom transforms must not keep generators of their own.

Crowd / ignore regions (``target["ignore_boxes"]``, a ``BoundingBoxes`` of its own) must move with
the image too, but v2 assumes one ``BoundingBoxes`` per sample; :class:`DetectionAugment`
therefore appends them to ``boxes`` with label ``-1`` for the duration of the pipeline and
splits them off again afterwards. ``target["area"]`` is filtered with the boxes but keeps the
annotation's original value (it is not rescaled by zoom or crop).
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["DetectionAugment", "build_transforms"]


def _labels_and_area(sample: Any) -> tuple[torch.Tensor, ...]:
    target = sample[1]
    return (target["labels"], target["area"]) if "area" in target else (target["labels"],)


class DetectionAugment(v2.Transform):
    """Run a v2 pipeline on ``(image, target)`` and keep ``ignore_boxes`` in step.

    Args:
        pipeline: the v2 transforms to apply (should end with ``SanitizeBoundingBoxes``).
    """

    def __init__(self, pipeline: v2.Transform) -> None:
        super().__init__()
        self.pipeline = pipeline

    def forward(
        self, image: torch.Tensor, target: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, Any]]:  # type: ignore[override]
        boxes = target["boxes"]
        ign = target.get("ignore_boxes")
        m = 0 if ign is None else int(ign.shape[0])
        work = dict(target)
        if m:
            ign = ign.to(boxes.dtype)
            work["boxes"] = tv_tensors.wrap(
                torch.cat([boxes.as_subclass(torch.Tensor), ign]), like=boxes
            )
            work["labels"] = torch.cat([target["labels"], target["labels"].new_full((m,), -1)])
            if "area" in target:
                ign_area = (ign[:, 2] - ign[:, 0]) * (ign[:, 3] - ign[:, 1])
                work["area"] = torch.cat([target["area"], ign_area.to(target["area"].dtype)])
            if "masks" in target:
                masks = target["masks"]
                pad = masks.new_zeros((m, *masks.shape[-2:]))
                work["masks"] = tv_tensors.Mask(torch.cat([masks.as_subclass(torch.Tensor), pad]))
        work.pop("ignore_boxes", None)
        img, out = self.pipeline(tv_tensors.Image(image), work)
        img = img.as_subclass(torch.Tensor)
        if m:
            keep = out["labels"] >= 0
            b = out["boxes"].as_subclass(torch.Tensor)
            out["ignore_boxes"] = tv_tensors.wrap(b[~keep].to(torch.float32), like=out["boxes"])
            out["boxes"] = tv_tensors.wrap(b[keep], like=out["boxes"])
            out["labels"] = out["labels"][keep]
            if "area" in out:
                out["area"] = out["area"][keep]
            if "masks" in out:
                out["masks"] = tv_tensors.Mask(out["masks"].as_subclass(torch.Tensor)[keep])
        elif ign is not None:  # none: an empty BoundingBoxes on the augmented canvas
            out["ignore_boxes"] = tv_tensors.wrap(
                ign.as_subclass(torch.Tensor).to(torch.float32).reshape(0, 4), like=out["boxes"]
            )
        return img, out


class _IoUCropIfBoxes(v2.RandomIoUCrop):
    """SSD's IoU crop, skipped on images without boxes (torchvision's version keeps drawing
    crops until it happens to pick the "leave as is" option, ~30 ms of wasted work)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        boxes = next((x for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes)), None)
        if boxes is None or boxes.shape[0] == 0:
            return {}
        return super().make_params(flat_inputs)


def build_transforms(train: bool, augment: bool = True) -> v2.Transform | None:
    """The augmentation pipeline for a split: ``None`` (identity) unless ``train and augment``."""
    if not (train and augment):
        return None
    pipeline = v2.Compose(
        [
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)], p=0.8),
            v2.RandomApply([v2.RandomZoomOut(fill=114, side_range=(1.0, 1.5))], p=0.3),
            v2.RandomApply(
                [
                    _IoUCropIfBoxes(
                        min_scale=0.5,
                        max_scale=1.0,
                        trials=10,
                        sampler_options=[0.0, 0.1, 0.3, 0.5, 0.7, 1.0],
                    )
                ],
                p=0.3,
            ),
            v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=_labels_and_area),
        ]
    )
    return DetectionAugment(pipeline)
