"""RS-R-CNN: torchvision's Faster R-CNN trained with ranking losses (Oksuz et al., ICCV 2021).

Rank & Sort (RS) Faster R-CNN (``notes/detection.md`` section 3.2; official code
kemaloksuz/RankSortLoss ``RankBasedRPNHead`` and ``RankBasedShared2FCBBoxHead``) replaces both
heads' cross-entropy + sampler + Smooth-L1 by one ranking objective per head
(:class:`~percepta.losses.ranking_objective.RankingObjective`, chosen by
``model.cls_loss.name``: ``rank_sort``, ``ap_loss`` or ``alrp``):

* **RPN** (:class:`RankBasedRPN`): no ``fg_bg_sampler``. Every anchor torchvision's matcher
  labels 1 (IoU >= ``rpn_fg_iou_thresh`` or a GT's best anchor) is a positive, label 0 a
  negative, label -1 (between the thresholds) is ignored. All images x all levels x all anchors
  form ONE logit vector (one loss call per batch, as the official code: more examples, better
  ranking). A positive's target is the IoU of its decoded predicted box (detached) with its GT;
  its box loss is the GIoU loss (``torchvision.ops.generalized_box_iou_loss``) of the decoded
  box, weighted by ``sigmoid(objectness)`` (detached). Every RPN term is multiplied by
  ``rpn_head_weight`` (0.2 officially).
* **RoI head** (:class:`RankBasedRoIHeads`): no sampler. All proposals plus the GT boxes
  (torchvision adds them in training, as mmdet's ``add_gt_as_proposals``) are matched by
  torchvision's ``proposal_matcher`` (0.5 / 0.5). The classifier (:class:`RankBasedPredictor`)
  has C sigmoid outputs (no background logit); the ``[R, C]`` logits are flattened with targets
  one-hot at the GT class of positive RoIs, valued by the IoU of the decoded class-specific box
  of that class (detached) with the matched GT, 0 elsewhere, -1 on the whole row of an ignored
  RoI. The box loss is the GIoU loss of that decoded box, weighted by the max class sigmoid
  (detached). In eval, scores are sigmoids, then exactly the steps of torchvision's
  ``postprocess_detections`` (score threshold, small-box removal, per-class NMS, top K).

Balancing (value-based ``lambda = L_cls / L_box`` for RS, aLRP self-balancing, score weighting)
is all :class:`RankingObjective`'s; these heads only build its inputs.

Shapes kept for the rest of percepta: :class:`RankBasedPredictor` returns torchvision's
``[R, C+1]`` logits and ``[R, 4(C+1)]`` deltas, column 0 (the background) being a constant 0
logit / zero deltas that no loss touches and no parameter produces. So torchvision's decoding,
the relation adapter and the ONNX graph work unchanged; class probabilities are
:meth:`RankBasedPredictor.class_probabilities` (``[0, sigmoid(l_1..l_C)]``), not a softmax.

Where this differs from the official code, and why:

* **RPN box coder**: torchvision's RPN uses weights (1, 1, 1, 1); the official RS RPN uses mmdet
  stds (0.1, 0.1, 0.2, 0.2) = torchvision weights (10, 10, 5, 5), which :class:`RankBasedRPN`
  adopts (for training and for decoding proposals). The RoI box coder is torchvision's
  (10, 10, 5, 5), the same as the official. The official RPN decodes both boxes relative to a
  unit anchor at the origin; IoU and GIoU are invariant to that per-anchor affine map, so
  decoding with the real anchors (as here) gives the same targets and losses.
* **No positive in the batch**: the official heads return ``0 * sum + 1`` (value 1); here every
  term is exactly 0 (as :class:`RankingObjective` returns) and connected to the graph.
* **aLRP in the RPN**: the official RPN scales the localisation error fed to the classification
  part by ``1 / (2 (1 - 0.7))``; :class:`RankingObjective` uses the GIoU loss as-is (as the
  official RoI head and RetinaNet do).
* **AP / aLRP targets** are binary (every positive counts 1, as officially); only RS uses the
  IoU targets. With RS a positive whose predicted box misses its GT (IoU 0) becomes a negative
  of the ranking loss but keeps its box loss, as officially.
* **Initialisation**: the RS classifier and box regressor are ``nn.Linear`` with PyTorch's
  default initialisation, as torchvision's ``FastRCNNPredictor`` (mmdet: normal 0.01 / 0.001).
* **Assignment** is torchvision's (``Matcher`` with low-quality matches in the RPN, none in the
  RoI head), the counterpart of mmdet's ``MaxIoUAssigner`` in the official configs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.ops import (
    batched_nms,
    clip_boxes_to_image,
    generalized_box_iou_loss,
    remove_small_boxes,
)

from percepta.errors import DataError
from percepta.losses.ranking_objective import RankingObjective
from percepta.ops import aligned_box_iou

__all__ = [
    "RPN_BOX_CODER_WEIGHTS",
    "RankBasedPredictor",
    "RankBasedRPN",
    "RankBasedRoIHeads",
]

RPN_BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # official RS RPN: mmdet stds 0.1/0.1/0.2/0.2


def _positive_targets(objective: RankingObjective, iou: torch.Tensor) -> torch.Tensor:
    """The classification targets of the positives: their IoU for RS, 1 for AP / aLRP."""
    if objective.kind == "rank_sort":
        return objective.iou_targets(iou)
    return torch.ones_like(iou)


# ------------------------------------------------------------------------------ predictor
class RankBasedPredictor(nn.Module):
    """C sigmoid class logits and C class-specific boxes, in torchvision's shapes.

    ``forward(x) -> (class_logits [R, C+1], box_regression [R, 4(C+1)])`` where column 0 is a
    constant (logit 0, deltas 0) standing for torchvision's background: no parameter, no loss.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.cls_score = nn.Linear(in_channels, self.num_classes)
        self.bbox_pred = nn.Linear(in_channels, self.num_classes * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(start_dim=1)
        logits = self.cls_score(x)
        deltas = self.bbox_pred(x)
        logits = torch.cat([logits.new_zeros(logits.shape[0], 1), logits], 1)
        deltas = torch.cat([deltas.new_zeros(deltas.shape[0], 4), deltas], 1)
        return logits, deltas

    @staticmethod
    def class_probabilities(class_logits: torch.Tensor) -> torch.Tensor:
        """``[R, C+1]`` logits -> ``[R, C+1]``: 0 in the background column, sigmoids after."""
        fg = torch.sigmoid(class_logits[:, 1:])
        return torch.cat([fg.new_zeros(fg.shape[0], 1), fg], 1)


# ------------------------------------------------------------------------------ RPN
class RankBasedRPN(RegionProposalNetwork):
    """torchvision's RPN trained with a ranking objective, no sampling (module docstring).

    Args:
        anchor_generator, head: torchvision's (shared with the model they came from).
        fg_iou_thresh, bg_iou_thresh: torchvision's anchor matcher (low-quality matches on).
        pre_nms_top_n, post_nms_top_n: ``{"training": n, "testing": n}`` as torchvision's.
        nms_thresh, score_thresh: proposal filtering, as torchvision's.
        objective: the RPN's :class:`RankingObjective` (prefix ``"rpn_"``).
        head_weight: every returned term is multiplied by it (official 0.2).
        box_coder_weights: the delta weights (official RS: (10, 10, 5, 5)).
    """

    def __init__(
        self,
        anchor_generator: nn.Module,
        head: nn.Module,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        pre_nms_top_n: dict[str, int],
        post_nms_top_n: dict[str, int],
        nms_thresh: float,
        score_thresh: float,
        *,
        objective: RankingObjective,
        head_weight: float = 0.2,
        box_coder_weights: Sequence[float] = RPN_BOX_CODER_WEIGHTS,
    ) -> None:
        super().__init__(
            anchor_generator,
            head,
            fg_iou_thresh,
            bg_iou_thresh,
            1,  # the sampler's size: unused, there is no sampler
            0.5,
            pre_nms_top_n,
            post_nms_top_n,
            nms_thresh,
            score_thresh,
        )
        self.fg_bg_sampler = None  # every non-ignored anchor enters the loss
        self.box_coder = det_utils.BoxCoder(weights=tuple(float(w) for w in box_coder_weights))
        self.objective = objective
        self.head_weight = float(head_weight)

    @classmethod
    def from_rpn(
        cls, rpn: RegionProposalNetwork, objective: RankingObjective, head_weight: float = 0.2
    ) -> RankBasedRPN:
        """The ranking RPN with the modules and settings of torchvision's ``rpn``."""
        return cls(
            rpn.anchor_generator,
            rpn.head,
            rpn.proposal_matcher.high_threshold,
            rpn.proposal_matcher.low_threshold,
            dict(rpn._pre_nms_top_n),
            dict(rpn._post_nms_top_n),
            rpn.nms_thresh,
            rpn.score_thresh,
            objective=objective,
            head_weight=head_weight,
        )

    def forward(
        self,
        images: ImageList,
        features: dict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """torchvision's RPN forward; in training the losses are the ranking objective's."""
        if not self.training:
            return super().forward(images, features, targets)
        if targets is None:
            raise DataError("RankBasedRPN in training mode needs targets")
        maps = list(features.values())
        objectness, pred_bbox_deltas = self.head(maps)
        anchors = self.anchor_generator(images, maps)
        num_images = len(anchors)
        num_anchors_per_level = [o[0].numel() for o in objectness]
        objectness, pred_bbox_deltas = concat_box_prediction_layers(objectness, pred_bbox_deltas)
        proposals = self.box_coder.decode(pred_bbox_deltas.detach(), anchors)
        proposals = proposals.view(num_images, -1, 4)
        boxes, _ = self.filter_proposals(
            proposals, objectness, images.image_sizes, num_anchors_per_level
        )
        labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
        losses = self.ranking_losses(
            objectness, pred_bbox_deltas, anchors, labels, matched_gt_boxes
        )
        return boxes, losses

    def ranking_losses(
        self,
        objectness: torch.Tensor,
        pred_bbox_deltas: torch.Tensor,
        anchors: list[torch.Tensor],
        labels: list[torch.Tensor],
        matched_gt_boxes: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The objective over all anchors of the batch (labels 1 / 0 / -1 per anchor, images
        concatenated in the order of ``concat_box_prediction_layers``), times ``head_weight``."""
        labels_flat = torch.cat(labels).to(torch.float32)
        anchors_flat = torch.cat(anchors)
        gt_flat = torch.cat(matched_gt_boxes).to(torch.float32)
        logits = objectness.reshape(-1).float()
        pos = torch.where(labels_flat > 0)[0]
        pred = self.box_coder.decode_single(pred_bbox_deltas[pos].float(), anchors_flat[pos])
        gt = gt_flat[pos]
        box_losses = generalized_box_iou_loss(pred, gt, reduction="none")
        targets = labels_flat.clone()
        targets[pos] = _positive_targets(self.objective, aligned_box_iou(pred.detach(), gt))
        scores = torch.sigmoid(logits[pos]).detach()
        terms = self.objective(logits, targets, box_losses, scores)
        return {k: v * self.head_weight for k, v in terms.items()}


# ------------------------------------------------------------------------------ RoI head
class RankBasedRoIHeads(RoIHeads):
    """torchvision's box RoI heads trained with a ranking objective, no sampling, sigmoid
    scores at test time (module docstring). Box branch only (no masks or keypoints).

    Args:
        box_roi_pool, box_head: torchvision's.
        box_predictor: a :class:`RankBasedPredictor`.
        fg_iou_thresh, bg_iou_thresh: torchvision's proposal matcher.
        bbox_reg_weights: the box coder's (``None`` = torchvision's (10, 10, 5, 5)).
        score_thresh, nms_thresh, detections_per_img: inference, as torchvision's.
        objective: the head's :class:`RankingObjective` (prefix ``"roi_"``).
    """

    def __init__(
        self,
        box_roi_pool: nn.Module,
        box_head: nn.Module,
        box_predictor: RankBasedPredictor,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        bbox_reg_weights: Sequence[float] | None,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        *,
        objective: RankingObjective,
    ) -> None:
        super().__init__(
            box_roi_pool,
            box_head,
            box_predictor,
            fg_iou_thresh,
            bg_iou_thresh,
            1,  # the sampler's size: unused, there is no sampler
            0.5,
            tuple(bbox_reg_weights) if bbox_reg_weights is not None else None,
            score_thresh,
            nms_thresh,
            detections_per_img,
        )
        self.fg_bg_sampler = None  # every proposal (+ GT box) enters the loss
        self.objective = objective

    @classmethod
    def from_roi_heads(
        cls, heads: RoIHeads, box_predictor: RankBasedPredictor, objective: RankingObjective
    ) -> RankBasedRoIHeads:
        """The ranking head with the modules and settings of torchvision's ``heads``."""
        return cls(
            heads.box_roi_pool,
            heads.box_head,
            box_predictor,
            heads.proposal_matcher.high_threshold,
            heads.proposal_matcher.low_threshold,
            heads.box_coder.weights,
            heads.score_thresh,
            heads.nms_thresh,
            heads.detections_per_img,
            objective=objective,
        )

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """torchvision's forward in eval (with sigmoid scores); ranking losses in training."""
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        if targets is None:
            raise DataError("RankBasedRoIHeads in training mode needs targets")
        self.check_targets(targets)
        dtype = proposals[0].dtype
        gt_boxes = [t["boxes"].to(dtype) for t in targets]
        proposals = self.add_gt_proposals(proposals, gt_boxes)
        matched_idxs, labels = self.assign_targets_to_proposals(
            proposals, gt_boxes, [t["labels"] for t in targets]
        )
        matched = [
            (g if g.numel() else g.new_zeros(1, 4))[m] for g, m in zip(gt_boxes, matched_idxs)
        ]
        x = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(x)
        losses = self.ranking_losses(class_logits, box_regression, proposals, labels, matched)
        return [], losses

    def ranking_losses(
        self,
        class_logits: torch.Tensor,
        box_regression: torch.Tensor,
        proposals: list[torch.Tensor],
        labels: list[torch.Tensor],
        matched_gt_boxes: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The objective over all RoIs x C classes of the batch (``labels``: torchvision's
        1..C positive, 0 background, -1 ignored, per RoI)."""
        labels_flat = torch.cat(labels)
        n = labels_flat.numel()
        logits = class_logits[:, 1:].float()  # [R, C]: the constant background column is out
        pos = torch.where(labels_flat > 0)[0]
        cls = labels_flat[pos]
        deltas = box_regression.reshape(n, -1, 4)[pos, cls].float()
        pred = self.box_coder.decode_single(deltas, torch.cat(proposals)[pos].float())
        gt = torch.cat(matched_gt_boxes)[pos].float()
        box_losses = generalized_box_iou_loss(pred, gt, reduction="none")
        targets = torch.zeros_like(logits)
        targets[labels_flat < 0] = -1.0
        targets[pos, cls - 1] = _positive_targets(
            self.objective, aligned_box_iou(pred.detach(), gt)
        )
        scores = torch.sigmoid(logits[pos]).max(1).values.detach()
        return self.objective(logits.reshape(-1), targets.reshape(-1), box_losses, scores)

    def postprocess_detections(
        self,
        class_logits: torch.Tensor,
        box_regression: torch.Tensor,
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """torchvision's ``postprocess_detections`` with sigmoid instead of softmax scores."""
        per_image = [len(p) for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals).split(per_image, 0)
        pred_scores = self.box_predictor.class_probabilities(class_logits).split(per_image, 0)
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, scores, image_shape in zip(pred_boxes, pred_scores, image_shapes):
            boxes = clip_boxes_to_image(boxes, image_shape)
            labels = torch.arange(scores.shape[-1], device=scores.device)
            labels = labels.view(1, -1).expand_as(scores)
            # drop the background column; every class prediction becomes an instance
            boxes = boxes[:, 1:].reshape(-1, 4)
            scores = scores[:, 1:].reshape(-1)
            labels = labels[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_labels.append(labels[keep])
        return all_boxes, all_scores, all_labels
