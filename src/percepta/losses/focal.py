"""CenterNet's penalty-reduced focal loss and its L1 regression loss on gathered slots.

Follows ``xingyizhou/CenterNet`` (``src/lib/models/losses.py``: ``_neg_loss``, ``RegL1Loss``;
commit 4c50fd3a) operation by operation, so that the float32 results are bit-identical to the
official code (pinned by ``tests/fixtures/centernet/targets_and_losses.json``):

* focal loss (Law & Deng, CornerNet, eq. 1; alpha = 2, beta = 4): positives are the pixels whose
  target is exactly 1; ``loss = -(sum_pos (1-p)^a log p + sum_{y<1} (1-y)^b p^a log(1-p)) / n_pos``
  and, with no positive at all, only the (unnormalised) negative sum. The prediction is clamped
  to ``[1e-4, 1 - 1e-4]`` as CenterNet does (centerX only clamps below, which gives NaN when a
  sigmoid saturates at exactly 1.0: ``0 * log(0)``).
* L1 on slots: the prediction map ``[B,C,H,W]`` is gathered at the flat pixel index ``ind`` of
  each object slot, and ``sum |pred - target|`` over valid slots and both coordinates is divided
  by ``(2 * n_objects + 1e-4)``. With no object the loss is exactly 0.

Ignore regions (a deliberate improvement on both references): ``penalty_reduced_focal_loss``
takes an optional boolean ``ignore`` mask; a pixel where it is true contributes **no negative
term** (its positive term, if the pixel is a peak of a real object, stays, and ``n_pos`` is
unchanged). :func:`percepta.detection.centernet_targets.build_targets` draws the mask from the
dataset's crowd boxes (``target["ignore_boxes"]``). Neither reference does this: centerX's
``DatasetMapper`` drops ``iscrowd`` annotations (``obj.get("iscrowd", 0) == 0``), so a crowd of
people is trained as background and the detector is punished for firing on real, unlabelled
people; the official CenterNet ``ctdet.py`` reads every annotation (``getAnnIds(imgIds=...)``,
no crowd filter), so a crowd box becomes an ordinary object with a peak at its centre. Without
a mask (or with an all-false one) the loss is the official one, bit for bit.

Deliberate differences: the "no positive" branch is written without Python control flow (the
normaliser is ``max(n_pos, 1)``, which gives the same value in both cases and keeps gradients
finite); ``norm_wh`` (centerX's relative size error) is optional.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from percepta.registry import LOSSES

__all__ = [
    "penalty_reduced_focal_loss",
    "gather_slots",
    "reg_l1_loss",
    "CenterNetFocalLoss",
    "CenterNetFocalConfig",
    "build_centernet_focal",
]


def penalty_reduced_focal_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    alpha: float = 2.0,
    beta: float = 4.0,
    eps: float = 1e-4,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """CenterNet / CornerNet heat-map focal loss.

    Args:
        pred: probabilities (after sigmoid), any shape; clamped to ``[eps, 1 - eps]``.
        gt: Gaussian target heat map of the same shape, peaks exactly 1.0.
        alpha, beta: focusing and penalty-reduction exponents (2 and 4 in the paper).
        eps: clamp margin (CenterNet's ``_sigmoid`` uses 1e-4).
        ignore: optional boolean mask broadcastable to ``gt`` (e.g. ``[B,1,H,W]`` for every
            class); true pixels give no negative term (module docstring, "Ignore regions").

    Returns:
        Scalar loss (sum over positives and negatives divided by the number of positives, or the
        plain negative sum when there is none).
    """
    pred = pred.clamp(min=eps, max=1 - eps)
    pos_inds = gt.eq(1).float()
    neg = gt.lt(1)
    neg_inds = (neg & ~ignore.to(torch.bool)).float() if ignore is not None else neg.float()
    neg_weights = torch.pow(1 - gt, beta)
    pos_loss = torch.log(pred) * torch.pow(1 - pred, alpha) * pos_inds
    neg_loss = torch.log(1 - pred) * torch.pow(pred, alpha) * neg_weights * neg_inds
    num_pos = pos_inds.float().sum()
    pos_loss = pos_loss.sum()
    neg_loss = neg_loss.sum()
    # Official: ``-neg`` if num_pos == 0 else ``-(pos + neg) / num_pos``; pos is 0 in the first
    # case, so dividing by max(num_pos, 1) is the same number without data-dependent branching.
    return -(pos_loss + neg_loss) / num_pos.clamp(min=1)


def gather_slots(feat: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """``[B,C,H,W]`` map and ``[B,M]`` flat indices ``y*W + x`` -> ``[B,M,C]`` (CenterNet's
    ``_transpose_and_gather_feat``)."""
    b, c = feat.shape[:2]
    feat = feat.permute(0, 2, 3, 1).reshape(b, -1, c)
    return feat.gather(1, ind.long().unsqueeze(2).expand(-1, -1, c))


def reg_l1_loss(
    output: torch.Tensor,
    mask: torch.Tensor,
    ind: torch.Tensor,
    target: torch.Tensor,
    norm_wh: bool = False,
) -> torch.Tensor:
    """CenterNet ``RegL1Loss``: L1 at the object slots, normalised by ``2 * n_objects + 1e-4``.

    Args:
        output: predicted map ``[B,2,H,W]`` (size or offset), or already gathered ``[B,M,2]``.
        mask: ``[B,M]`` 1 for valid slots.
        ind: ``[B,M]`` flat pixel index of each slot (ignored when ``output`` is gathered).
        target: ``[B,M,2]``.
        norm_wh: centerX ``NORM_WH``: divide prediction and target by the target's mean side
            ``(w + h) / 2 + 1e-4`` (relative size error).
    """
    pred = output if output.dim() == 3 else gather_slots(output, ind)
    if norm_wh:
        scale = target.mean(dim=2, keepdim=True) + 1e-4
        pred, target = pred / scale, target / scale
    mask = mask.unsqueeze(2).expand_as(pred).float()
    loss = F.l1_loss(pred * mask, target * mask, reduction="sum")
    return loss / (mask.sum() + 1e-4)


@dataclass
class CenterNetFocalConfig:
    """Options of the penalty-reduced focal loss."""

    name: str = "centernet_focal"
    alpha: float = 2.0
    beta: float = 4.0
    eps: float = 1e-4


class CenterNetFocalLoss(nn.Module):
    """Module form of :func:`penalty_reduced_focal_loss` (``loss(pred_probs, gt_heatmap[,
    ignore])``)."""

    def __init__(self, alpha: float = 2.0, beta: float = 4.0, eps: float = 1e-4) -> None:
        super().__init__()
        self.alpha, self.beta, self.eps = alpha, beta, eps

    def forward(
        self, pred: torch.Tensor, gt: torch.Tensor, ignore: torch.Tensor | None = None
    ) -> torch.Tensor:
        return penalty_reduced_focal_loss(pred, gt, self.alpha, self.beta, self.eps, ignore)


@LOSSES.register("centernet_focal", options=CenterNetFocalConfig)
def build_centernet_focal(cfg: CenterNetFocalConfig | None = None) -> CenterNetFocalLoss:
    """CenterNet penalty-reduced focal loss (alpha 2, beta 4, clamp 1e-4)."""
    cfg = cfg or CenterNetFocalConfig()
    return CenterNetFocalLoss(cfg.alpha, cfg.beta, cfg.eps)
