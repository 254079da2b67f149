"""The detector interface of relation heads: any percepta detector, frozen, behind one protocol.

A scene-graph model (``percepta.scene_graph``) holds a trained detector and needs from it, for a
batch of images: feature maps, RoI features of given boxes (PredCls / SGCls: the ground-truth
boxes; SGDet: the detections) and the detections themselves with per-class logits (SGDet
re-labels objects from them, as Scene-Graph-Benchmark's ``RelationHead`` does with its
detector's class logits). :func:`relation_detector` returns that view of a model by calling the
model's own ``relation_interface()``; every adapter

* keeps the detector in eval mode (it is put back in eval mode on every call, since a parent
  module's ``.train()`` recurses into it) and runs under ``torch.no_grad()``: frozen;
* takes images as the detectors do (``[3,H,W]`` float in 0-1, or ``uint8`` 0-255, at their
  original size) and does the detector's own resize / letterbox and normalisation;
* speaks **original image pixels**: boxes in and out are XYXY in the pixels of each image as
  given, labels ``0..C-1``, logits with column 0 = background.

RoI features are pooled with ``torchvision.ops`` RoIAlign and torchvision's settings for
Faster R-CNN (``sampling_ratio=2``, ``aligned=False``), for every detector alike:

* :class:`FasterRCNNRelationAdapter`: the model's own ``MultiScaleRoIAlign`` on its FPN levels
  (level per box by torchvision's ``LevelMapper``), boxes scaled by torchvision's
  ``resize_boxes`` into the resized image; ``detect`` runs the RPN and box head once and keeps
  for every final detection its proposal's ``class_logits`` (``[n, C+1]``) and class-specific
  boxes (``[n, C+1, 4]``), using the same steps as ``RoIHeads.postprocess_detections`` (score
  threshold, small-box removal, per-class NMS, top detections), so its boxes, scores and labels
  are the model's own eval output. An RS-R-CNN model (``cls_loss`` set, sigmoid classifier)
  scores with its sigmoids (``model.class_probabilities``), and its ``class_logits`` are built
  from them as CenterNet's below (``log s_c``, background ``log(1 - max_c s_c)``), since its raw
  logits are not softmax logits.
* :class:`CenterNetRelationAdapter`: ``roi_align`` on the stride-4 neck output with
  ``spatial_scale = 1 / stride`` after multiplying the boxes by each image's letterbox scale.
  CenterNet has no softmax classifier; its ``class_logits`` are derived from the C sigmoid
  heat-map scores ``s_c`` at the detection's peak cell: ``logit_c = log(s_c)`` and, for the
  background column, ``logit_0 = log(1 - max_c s_c)`` (both clamped at ``log(1e-6)``), so that
  ``softmax(logits)`` is proportional to ``(1 - max_c s_c, s_1, ..., s_C)``: the foreground
  ranking is exactly the heat map's, and a confident peak leaves little background mass.
  Its boxes are class-agnostic, so ``boxes_per_cls`` repeats each box C + 1 times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import MultiScaleRoIAlign, batched_nms, remove_small_boxes, roi_align
from torchvision.ops.boxes import clip_boxes_to_image

from percepta.errors import DataError, NotAvailableError

__all__ = [
    "DetectorFeatures",
    "RelationDetector",
    "relation_detector",
    "FasterRCNNRelationAdapter",
    "CenterNetRelationAdapter",
    "LOGIT_FLOOR",
    "sigmoid_class_logits",
]

SAMPLING_RATIO = 2  # torchvision's MultiScaleRoIAlign for Faster R-CNN
LOGIT_FLOOR = 1e-6  # CenterNet class_logits: scores clamped here before the log


@dataclass
class DetectorFeatures:
    """What :meth:`RelationDetector.features` returns for a batch."""

    maps: list[torch.Tensor]  # the detector's feature maps for the batch
    image_sizes: list[tuple[int, int]]  # (h, w) of each ORIGINAL image (pixels)
    extra: dict[str, Any] = field(default_factory=dict)  # what the adapter needs later


@runtime_checkable
class RelationDetector(Protocol):
    """A frozen detector as a relation head sees it (see the module docstring)."""

    num_classes: int  # foreground classes; labels 0..C-1
    out_channels: int  # channels of the pooled RoI features

    def features(self, images: Sequence[torch.Tensor]) -> DetectorFeatures:
        """Images (``[3,H,W]``, float 0-1 or uint8, original size) -> their features."""
        ...

    def roi_features(
        self, feats: DetectorFeatures, boxes: Sequence[torch.Tensor], output_size: int = 7
    ) -> torch.Tensor:
        """Boxes per image (``[n_i,4]`` XYXY, original pixels) -> ``[sum n_i, out_channels,
        output_size, output_size]``, in image order."""
        ...

    def detect(self, feats: DetectorFeatures) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes [n,4]`` (original pixels), ``labels [n]`` (0..C-1), ``scores
        [n]``, ``class_logits [n,C+1]`` (column 0 = background), ``boxes_per_cls [n,C+1,4]``."""
        ...


def sigmoid_class_logits(scores: torch.Tensor) -> torch.Tensor:
    """C independent class scores ``[n, C]`` -> ``[n, C+1]`` logits with column 0 =
    background: ``log s_c`` and ``log(1 - max_c s_c)``, clamped at ``log(LOGIT_FLOOR)``, so their
    softmax is proportional to ``(1 - max_c s_c, s_1, ..., s_C)`` (module docstring)."""
    s = scores.float().clamp(LOGIT_FLOOR, 1.0)
    bg = (1.0 - s.max(1, keepdim=True).values).clamp(min=LOGIT_FLOOR)
    return torch.cat([bg, s], 1).log()


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, AveragedModel
        model = model.module
    return model


def relation_detector(model: nn.Module) -> RelationDetector:
    """The :class:`RelationDetector` view of a percepta detector (``model.relation_interface()``).

    Raises:
        NotAvailableError: the model offers no relation interface.
    """
    inner = _unwrap(model)
    make = getattr(inner, "relation_interface", None)
    if not callable(make):
        raise NotAvailableError(
            f"{type(inner).__name__} cannot feed a relation head: it has no "
            "relation_interface() (detectors that have one: faster_rcnn, centernet)"
        )
    return make()


def _check_boxes(boxes: Sequence[torch.Tensor], n_images: int) -> list[torch.Tensor]:
    if len(boxes) != n_images:
        raise DataError(f"roi_features: got boxes for {len(boxes)} images, features for {n_images}")
    out = []
    for i, b in enumerate(boxes):
        b = torch.as_tensor(b).as_subclass(torch.Tensor)
        if b.numel() == 0:
            b = b.reshape(0, 4)
        if b.dim() != 2 or b.shape[1] != 4:
            raise DataError(f"roi_features: boxes of image {i} must be [n,4], got {tuple(b.shape)}")
        out.append(b)
    return out


class _Frozen:
    """Shared part of the adapters: the wrapped model, kept in eval mode."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.num_classes = int(model.num_classes)
        model.eval()

    def _eval(self) -> None:
        if self.model.training:
            self.model.eval()


# ------------------------------------------------------------------------------ Faster R-CNN
class FasterRCNNRelationAdapter(_Frozen):
    """:class:`RelationDetector` of a :class:`~.faster_rcnn.FasterRCNN` (module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.net = model.net
        self.out_channels = int(self.net.backbone.out_channels)
        self._pools: dict[int, MultiScaleRoIAlign] = {}

    def _pool(self, output_size: int) -> MultiScaleRoIAlign:
        own = self.net.roi_heads.box_roi_pool
        if tuple(own.output_size) == (output_size, output_size):
            return own
        if output_size not in self._pools:
            self._pools[output_size] = MultiScaleRoIAlign(
                featmap_names=list(own.featmap_names),
                output_size=output_size,
                sampling_ratio=own.sampling_ratio,
            )
        return self._pools[output_size]

    @torch.no_grad()
    def features(self, images: Sequence[torch.Tensor]) -> DetectorFeatures:
        from percepta.detection.faster_rcnn import to_unit_float

        self._eval()
        ims = to_unit_float(images)
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in ims]
        image_list, _ = self.net.transform(ims)
        fmap = self.net.backbone(image_list.tensors)
        # the padded batch itself is not kept (a feature cache would hold it: half of a 608 px
        # entry): torchvision's RPN reads only its shape (the anchors' strides)
        padded = image_list.tensors
        shape_only = ImageList(padded.new_zeros(()).expand(padded.shape), image_list.image_sizes)
        return DetectorFeatures(
            list(fmap.values()), sizes, {"features": fmap, "image_list": shape_only}
        )

    def _to_resized(self, feats: DetectorFeatures, boxes: list[torch.Tensor]) -> list[torch.Tensor]:
        resized = feats.extra["image_list"].image_sizes
        dev = feats.maps[0].device
        return [
            resize_boxes(b.to(dev, torch.float32), orig, new)
            for b, orig, new in zip(boxes, feats.image_sizes, resized)
        ]

    @torch.no_grad()
    def roi_features(
        self, feats: DetectorFeatures, boxes: Sequence[torch.Tensor], output_size: int = 7
    ) -> torch.Tensor:
        boxes = _check_boxes(boxes, len(feats.image_sizes))
        rois = self._to_resized(feats, boxes)
        pool = self._pool(int(output_size))
        return pool(feats.extra["features"], rois, feats.extra["image_list"].image_sizes)

    @torch.no_grad()
    def detect(self, feats: DetectorFeatures) -> list[dict[str, torch.Tensor]]:
        self._eval()
        from percepta.detection.faster_rcnn import FasterRCNN

        fmap, image_list = feats.extra["features"], feats.extra["image_list"]
        rh = self.net.roi_heads
        proposals, _ = self.net.rpn(image_list, fmap)
        x = rh.box_head(rh.box_roi_pool(fmap, proposals, image_list.image_sizes))
        class_logits, box_regression = rh.box_predictor(x)
        per_image = [len(p) for p in proposals]
        all_boxes = rh.box_coder.decode(box_regression, proposals).split(per_image)
        probs = self.model.class_probabilities(class_logits)  # softmax, or RS sigmoids
        if self.model.sigmoid_classifier:
            class_logits = sigmoid_class_logits(probs[:, 1:])
        all_scores = probs.split(per_image)
        all_logits = class_logits.split(per_image)
        out = []
        for boxes, scores, logits, new, orig in zip(
            all_boxes, all_scores, all_logits, image_list.image_sizes, feats.image_sizes
        ):
            boxes = clip_boxes_to_image(boxes, new)  # [N, C+1, 4], as postprocess_detections
            rows, labels = self._select(boxes, scores)
            n = len(rows)
            per_cls = resize_boxes(boxes[rows].reshape(-1, 4), new, orig)
            det = {
                "boxes": resize_boxes(boxes[rows, labels], new, orig),
                "scores": scores[rows, labels],
                "labels": labels,
            }
            # labels 1..C -> 0..C-1 and boxes clipped to the original image, as the model does
            (det,) = FasterRCNN.to_percepta([det], [orig])
            (cls,) = FasterRCNN.to_percepta([{**det, "boxes": per_cls}], [orig])
            det["class_logits"] = logits[rows]
            det["boxes_per_cls"] = cls["boxes"].reshape(n, -1, 4)
            out.append(det)
        return out

    def _select(
        self, boxes: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The steps of ``RoIHeads.postprocess_detections`` for one image (clipped ``boxes
        [N,C+1,4]``, class ``scores [N,C+1]``), keeping each detection's proposal row:
        ``(proposal rows, torchvision labels 1..C)`` of the kept detections, in their order."""
        rh = self.net.roi_heads
        n, c1 = scores.shape
        flat_boxes = boxes[:, 1:].reshape(-1, 4)
        flat_scores = scores[:, 1:].reshape(-1)
        labels = torch.arange(c1, device=scores.device).view(1, -1).expand(n, c1)[:, 1:]
        rows = torch.arange(n, device=scores.device).view(-1, 1).expand(n, c1)[:, 1:]
        labels, rows = labels.reshape(-1), rows.reshape(-1)
        keep = torch.where(flat_scores > rh.score_thresh)[0]
        keep = keep[remove_small_boxes(flat_boxes[keep], min_size=1e-2)]
        keep = keep[batched_nms(flat_boxes[keep], flat_scores[keep], labels[keep], rh.nms_thresh)]
        keep = keep[: rh.detections_per_img]
        return rows[keep], labels[keep]


# ------------------------------------------------------------------------------ CenterNet
class CenterNetRelationAdapter(_Frozen):
    """:class:`RelationDetector` of a :class:`~.centernet.CenterNet` (module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.out_channels = int(model.neck.out_channels)

    @torch.no_grad()
    def features(self, images: Sequence[torch.Tensor]) -> DetectorFeatures:
        self._eval()
        model = self.model
        batch, scales, sizes = model.preprocess(list(images))
        captured: dict[str, torch.Tensor] = {}
        hook = model.neck.register_forward_hook(lambda m, i, o: captured.__setitem__("neck", o))
        try:
            heads = model.forward_heads(batch)  # the model's own normalisation and heads
        finally:
            hook.remove()
        neck = captured["neck"].contiguous()
        sizes = [(int(h), int(w)) for h, w in sizes]
        return DetectorFeatures([neck], sizes, {"heads": heads, "scales": scales})

    @torch.no_grad()
    def roi_features(
        self, feats: DetectorFeatures, boxes: Sequence[torch.Tensor], output_size: int = 7
    ) -> torch.Tensor:
        boxes = _check_boxes(boxes, len(feats.image_sizes))
        fmap = feats.maps[0]
        scales = feats.extra["scales"].tolist()
        rois = [b.to(fmap.device, fmap.dtype) * float(s) for b, s in zip(boxes, scales)]
        return roi_align(
            fmap,
            rois,
            int(output_size),
            spatial_scale=1.0 / self.model.stride,
            sampling_ratio=SAMPLING_RATIO,
            aligned=False,
        )

    @torch.no_grad()
    def classify(
        self, feats: DetectorFeatures, boxes: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Class logits ``[n, C+1]`` of given boxes (original pixels): the heat-map scores of
        the cell holding each box centre, in the form of :meth:`detect`'s ``class_logits``
        (``log s_c``, background ``log(1 - max s_c)``). SGCls uses them as the object prior."""
        self._eval()
        heat = feats.extra["heads"]["heat"]
        stride = float(self.model.stride)
        h, w = heat.shape[-2:]
        out = []
        for i, b in enumerate(boxes):
            b = torch.as_tensor(b, dtype=torch.float32, device=heat.device).reshape(-1, 4)
            scale = float(feats.extra["scales"][i])
            cx = ((b[:, 0] + b[:, 2]) / 2 * scale / stride).floor().long().clamp(0, w - 1)
            cy = ((b[:, 1] + b[:, 3]) / 2 * scale / stride).floor().long().clamp(0, h - 1)
            out.append(sigmoid_class_logits(heat[i][:, cy, cx].t()))
        return out

    def detect(self, feats: DetectorFeatures) -> list[dict[str, torch.Tensor]]:
        from percepta.detection.centernet_decode import decode

        self._eval()
        model, heads = self.model, feats.extra["heads"]
        heat, wh = heads["heat"], heads["wh"].float()
        k, spec = model.top_k, model.cat_spec_wh
        dets = decode(heat, wh, heads["reg"].float(), k=k, cat_spec_wh=spec)
        # the same peaks without the offset: box centres = peak cell + 0.5 (same top-K order)
        cells = decode(heat, wh, None, k=k, cat_spec_wh=spec)
        preds = model.postprocess(dets, feats.extra["scales"], feats.image_sizes)
        width = heat.shape[-1]
        out = []
        for i, p in enumerate(preds):
            keep = dets[i, :, 4] > model.score_threshold  # postprocess's own selection
            c = cells[i][keep][: model.top_k]
            cx = ((c[:, 0] + c[:, 2]) / 2 - 0.5).round().long().clamp(0, width - 1)
            cy = ((c[:, 1] + c[:, 3]) / 2 - 0.5).round().long().clamp(0, heat.shape[-2] - 1)
            n = len(p["scores"])
            out.append(
                {
                    **p,
                    "class_logits": sigmoid_class_logits(heat[i][:, cy, cx].t()),  # [n, C+1]
                    "boxes_per_cls": p["boxes"].unsqueeze(1).expand(n, self.num_classes + 1, 4),
                }
            )
        return out
