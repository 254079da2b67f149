"""RS-CenterNet: a ranking loss (Rank & Sort, AP or aLRP) on CenterNet's heat-map peaks.

CenterNet ("Objects as Points", Zhou et al. 2019) trains its heat map with the penalty-reduced
focal loss and its size/offset heads with hand-weighted L1 terms (``hm 1 / wh 0.1 / off 1``).
RS-CenterNet keeps the network, the targets (:mod:`.centernet_targets`) and the decode
(:mod:`.centernet_decode`) and replaces the focal loss and the fixed weights by a ranking loss
with the Rank & Sort recipe (Oksuz et al., ICCV 2021; ``notes/detection.md`` section 3, RS-ATSS
being the closest one-stage analogue), combined by the shared
:class:`~percepta.losses.ranking_objective.RankingObjective` (score weighting, value-based task
balancing: no loss weight to tune). Chosen with ``model.cls_loss: {name: rank_sort}`` (or
``ap_loss`` / ``alrp``); ``model.ranking`` holds the balancing options.

**Examples ranked.** One logit per heat-map cell of every class channel of every image of the
batch, flattened into one vector (``[B*C*H*W]``, heat-map layout order); one ranking over the
whole batch, as the official heads do (more examples, a better estimate of the ranking).

* **Positives**: for each ground-truth object (a valid slot of :func:`build_targets`), the cell
  of its floored centre in its class channel: ``ind``/``mask``/``cls`` index exactly the cells
  whose target heat is 1. Two same-class objects whose centres fall in one cell give *one*
  positive (CenterNet can output one box per cell and class): the object whose box best matches
  the box predicted there (highest IoU; on a tie the earlier object slot). Its box loss is the
  only one counted for that cell; the other object cannot be detected by CenterNet anyway.
  Objects of different classes at one cell are different positives (different channels).
* **Negatives** (target 0): every other cell of every channel, except, with
  ``rs_ignore_radius: r`` (the preset uses 1), the cells within ``r`` (Chebyshev distance) of a
  peak in its class channel, which are ignored. The decode keeps only 3x3 local maxima, so a
  neighbour below its peak is suppressed anyway and only a neighbour *above* its peak becomes a
  (shifted) detection; but the neighbours share most of the peak's receptive field, and as
  negatives of a global ranking they must fall ``delta`` below *every* positive, a constraint
  the network fights rather than learns. Measured (built-in data, preset recipe, one seed each):
  AP 0.408 / AP50 0.545 with them as negatives (``r = 0``, the literal RS recipe), 0.551 / 0.729
  with ``r = 1``, 0.564 / 0.743 with ``r = 2``; ``rs_ignore_heat: t`` ignores instead every
  cell whose Gaussian target heat is ``>= t`` (with ``r = 1``: 0.571 / 0.749 at ``t = 0.1``,
  0.551 at ``t = 0.5``, which lies inside the 3x3 window here). The focal loss only down-weights
  these cells (``(1 - y)^4``) for the same reason. ``rs_positive_radius: 1`` (with ``r = 1``)
  makes the 3x3 cells around each centre positives instead (RS-ATSS ranks ~9 per object), each
  predicting the box from where it is (:func:`expand_positive_cells`): 0.570 / 0.740. None of
  these reached the focal CenterNet's 0.617 / 0.846 on that seed (all at ``delta = 0.5``).

**The window ``delta``** (``cls_loss.delta``; the preset uses 2). Sorting the false positives
of the ``delta = 0.5`` model by score showed what it got wrong: among its ``#GT`` best
detections 363 were a *wrong class at a true object* (IoU >= 0.5 with an object of another
class) against 13 localisation errors, 14 background boxes and no duplicates; at the object
centres the true class's probability was 0.23 (median) against 0.15 for the best wrong class,
which outranked the true one at 22 % of the centres (focal CenterNet: 0.58 against 0.18, 13 %).
A ranking loss stops pushing a negative once it is ``delta`` below every positive, and with
``delta = 0.5`` the true and the wrong class at one cell sat about that far apart. A wider
window asks for a wider margin: one seed each, AP 0.568 / AP50 0.749 at ``delta = 0.5``,
0.659 / 0.884 at 1, 0.658 / 0.920 at 2 (the focal model of the same session: 0.624 / 0.852).
Over seeds 0 / 1 / 2 at ``delta = 2``: AP 0.658 / 0.662 / 0.666 against the focal model's 0.624
/ 0.618 / 0.610; among its ``#GT`` best detections the wrong classes fell to 139 (focal: 258).
``ranking.per_class: true`` ranks each class channel on its own instead (COCO AP ranks each
class separately; :class:`~percepta.losses.ranking_objective.RankingObjective`).
* **Ignored** (target -1): the cells covered by ignore regions (crowd boxes, ``tg["ignore"]``,
  all channels), the cells where the focal loss adds no negative term, so both losses see the
  same data. A positive inside an ignore region stays positive (as in the focal loss).

**IoU targets** (the continuous labels of RS): the IoU, detached, between the box decoded at the
positive's cell and its ground-truth box, both in output-map units. The decoded box is exactly
:func:`~.centernet_decode.decode`'s: centre ``(x + off_x, y + off_y)`` at the integer cell
``(x, y)``, size ``(w, h)`` gathered there (the class's pair with ``cat_spec_wh``), clamped at 0
so that an untrained size head gives an empty box rather than an inverted one. The ground-truth
box is rebuilt from the targets (centre ``cell + reg``, size ``wh``: the clipped box). Paired
IoU from torchvision's element-wise intersection/union (the one ``generalized_box_iou_loss``
uses). Floored at ``ranking.min_iou`` (:meth:`RankingObjective.iou_targets`): 0 is the official
semantics (a positive whose box misses entirely counts as a negative). CenterNet's size head
starts at ``wh ~ 0`` with either sign, i.e. empty boxes of IoU exactly 0: with 0 a batch can
have no positive at all, and then no gradient at all (the ranking losses give 0, and value
balancing scales the box term to that 0); a small untrained model in the tests had all its
positives at IoU 0 at initialisation. The preset ``rs_centernet_r18_builtin.yaml`` therefore
uses 0.05, which keeps every object a positive while the size head learns.

**Box loss per positive** (``model.rs_box_loss``):

* ``"l1"`` (default): CenterNet's own terms for that object, ``wh_weight * mean|wh - wh*| +
  off_weight * mean|off - off*|`` (mean over the two coordinates, ``norm_wh`` honoured); their
  plain mean over the positives is the focal CenterNet's ``loss_wh + loss_offset``. The value
  balancing removes the overall scale, so only the ratio ``wh_weight : off_weight`` (0.1 : 1)
  matters.
* ``"giou"``: ``1 - GIoU`` of the decoded box (RS-ATSS's choice) plus the ``"l1"`` terms. GIoU
  alone does not reliably start from CenterNet's initialisation: the size head starts at
  ``wh ~ 0`` (clamped), a point box whose intersection with the ground truth is ``w * h``, so
  the IoU's gradient with respect to ``w`` and ``h`` is about ``w * h ~ 0`` (and exactly 0
  through the clamp for negative sizes). Measured on a tiny overfit (two 64 px images, three
  objects, ResNet-18, 40 steps, ``min_iou`` 0.05): with Adam (lr 1e-3) GIoU alone does learn
  (Adam rescales the vanishing gradient), but with SGD (lr 0.05, momentum 0.9) the sizes stayed
  at exactly 0 (IoU 0) for all 40 steps, while with the L1 terms they grew (``"l1"``: IoU
  0.3-0.7 after 30 steps, though SGD at that lr was unstable on the toy and fell back by step
  40; GIoU + L1: slower, sizes 0.2-0.9 cells after 30). The L1 terms (as DETR pairs L1 with
  GIoU) give the gradient until the box has an area. With ``alrp`` the box losses
  are also aLRP's localisation errors ``E_i`` (officially a GIoU loss, in ``[0, 2]``); here they
  include the unbounded L1 terms (``wh_weight`` 0.1 keeps them near that range once sizes are
  roughly right).

**Balancing** (:class:`RankingObjective`, ``model.ranking``): each positive's box loss is
weighted by its own detached sigmoid score (the score its detection gets from the decode: a
CenterNet cell scores one class per channel, so the positive's channel, not a max over classes),
normalised by the sum of the weights; with ``task_balance: value`` the box term is rescaled
every step to the value of ``loss_rank + loss_sort``, so its gradient is
``L_RS grad(L_box) / L_box``: it fades as the ranking is learnt (in the overfit above
``loss_rank`` reached 0 within 10 steps and Adam's step normalisation kept the size head
learning). ``hm_weight`` is not used (the ranking loss is not weighted; its identity-update
gradient must be optimised with weight 1).

Returned terms: those of the objective (``loss_rank``, ``loss_sort``, ``loss_box`` for RS;
``loss_ap``, ``loss_box``; ``loss_alrp_cls``, ``loss_alrp_loc``); the model adds
``num_objects``. A batch without objects has no positive: every term is a finite 0 (the
ranking losses return 0 with zero gradient). The logits are the head's pre-sigmoid map, kept in
float32 under autocast (CenterNetHead returns them as ``logits``). Inference, decode and export
are unchanged: they use the sigmoid heat map as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torchvision.ops import generalized_box_iou_loss

from percepta.errors import ConfigError
from percepta.losses.focal import gather_slots
from percepta.losses.ranking_objective import RankingObjective
from percepta.ops import aligned_box_iou

__all__ = [
    "RS_BOX_LOSSES",
    "HeatmapPositives",
    "check_box_loss",
    "slot_predictions",
    "slot_boxes",
    "select_positives",
    "ranking_targets",
    "l1_box_losses",
    "centernet_ranking_losses",
    "expand_positive_cells",
]

RS_BOX_LOSSES = ("l1", "giou")


@dataclass
class HeatmapPositives:
    """The positives of a batch: one per (image, class, cell), in heat-map layout order."""

    flat: torch.Tensor  # [P] int64: index into the flattened [B*C*H*W] heat map, ascending
    slot: torch.Tensor  # [P] int64: index into the flattened [B*M] object slots
    iou: torch.Tensor  # [P] IoU (detached) of the decoded predicted box with its ground truth


def check_box_loss(name: str) -> str:
    """``model.rs_box_loss`` validated (one-line ConfigError)."""
    if name not in RS_BOX_LOSSES:
        raise ConfigError(
            f"model.rs_box_loss must be one of {', '.join(RS_BOX_LOSSES)}, got {name!r}"
        )
    return name


def slot_predictions(
    out: dict[str, torch.Tensor], tg: dict[str, torch.Tensor], num_classes: int, cat_spec_wh: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted sizes and offsets at every object slot: ``[B,M,2]`` each, float32
    (the ground-truth class's pair with ``cat_spec_wh``, as the focal path supervises)."""
    wh = gather_slots(out["wh"].float(), tg["ind"])
    if cat_spec_wh:
        b, m = tg["ind"].shape
        wh = wh.reshape(b, m, num_classes, 2)
        wh = wh.gather(2, tg["cls"].view(b, m, 1, 1).expand(b, m, 1, 2)).reshape(b, m, 2)
    return wh, gather_slots(out["reg"].float(), tg["ind"])


def slot_boxes(ind: torch.Tensor, width: int, wh: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    """XYXY boxes in output-map units at cells ``ind`` (``y * W + x``): centre ``(x, y) + off``,
    size ``wh`` clamped at 0, as :func:`~.centernet_decode.decode` assembles them."""
    y = torch.div(ind, width, rounding_mode="floor")
    cell = torch.stack([ind - y * width, y], dim=-1).to(off.dtype)
    centre = cell + off
    half = wh.clamp(min=0) / 2
    return torch.cat([centre - half, centre + half], dim=-1)


def select_positives(
    tg: dict[str, torch.Tensor],
    pred_boxes: torch.Tensor,
    gt_boxes: torch.Tensor,
    num_classes: int,
) -> HeatmapPositives:
    """One positive per (image, class, cell) holding a valid object slot (module docstring).

    Args:
        tg: :func:`build_targets` output (``ind``, ``mask``, ``cls``, ``heatmap``).
        pred_boxes, gt_boxes: ``[B,M,4]`` decoded predicted and ground-truth boxes per slot.
        num_classes: C.
    """
    bsz, m = tg["ind"].shape
    hw = tg["heatmap"].shape[-2] * tg["heatmap"].shape[-1]
    slot = tg["mask"].reshape(-1).nonzero().squeeze(1)
    image = torch.div(slot, m, rounding_mode="floor")
    flat = (image * num_classes + tg["cls"].reshape(-1)[slot]) * hw + tg["ind"].reshape(-1)[slot]
    with torch.no_grad():
        iou = aligned_box_iou(pred_boxes.reshape(-1, 4)[slot], gt_boxes.reshape(-1, 4)[slot])
    # order by cell, then by IoU (descending), then by slot: keep the first object of each cell
    order = torch.argsort(-iou, stable=True)
    order = order[torch.argsort(flat[order], stable=True)]
    flat, slot, iou = flat[order], slot[order], iou[order]
    first = torch.ones_like(flat, dtype=torch.bool)
    first[1:] = flat[1:] != flat[:-1]
    return HeatmapPositives(flat[first], slot[first], iou[first])


def ranking_targets(
    shape: tuple[int, int, int, int],
    positives: HeatmapPositives,
    iou_targets: torch.Tensor,
    ignore: torch.Tensor | None,
    ignore_radius: int = 0,
    heatmap: torch.Tensor | None = None,
    ignore_heat: float = 0.0,
) -> torch.Tensor:
    """Flat ``[B*C*H*W]`` targets: the positives' IoU targets, -1 on ignored cells (and, with
    ``ignore_radius`` r, on the other cells within r of a positive in its channel), 0 elsewhere."""
    targets = torch.zeros(shape, dtype=torch.float32, device=iou_targets.device)
    if ignore is not None:
        targets = targets.masked_fill(ignore.to(torch.bool).expand(shape), -1.0)
    targets = targets.reshape(-1)
    if ignore_heat > 0:  # the cells of an object's Gaussian (its own channel), peaks aside
        targets[heatmap.reshape(-1) >= ignore_heat] = -1.0
    if ignore_radius > 0:  # the cells around each peak, in its class channel (not the peak)
        peaks = torch.zeros(targets.numel(), dtype=torch.float32, device=targets.device)
        peaks[positives.flat] = 1.0
        k = 2 * ignore_radius + 1
        near = F.max_pool2d(peaks.view(-1, 1, *shape[-2:]), k, 1, ignore_radius).reshape(-1)
        targets[near > 0] = -1.0
    targets[positives.flat] = iou_targets.to(targets.dtype)
    return targets


def l1_box_losses(
    wh: torch.Tensor,
    off: torch.Tensor,
    tg: dict[str, torch.Tensor],
    wh_weight: float,
    off_weight: float,
    norm_wh: bool = False,
) -> torch.Tensor:
    """``[B,M]`` CenterNet L1 terms per slot: ``wh_weight * mean|wh - wh*| + off_weight *
    mean|off - off*|`` (mean over the two coordinates; ``norm_wh`` as in :func:`reg_l1_loss`)."""
    target_wh = tg["wh"]
    if norm_wh:
        scale = target_wh.mean(dim=2, keepdim=True) + 1e-4
        wh, target_wh = wh / scale, target_wh / scale
    size = (wh - target_wh).abs().mean(dim=2)
    offset = (off - tg["reg"]).abs().mean(dim=2)
    return wh_weight * size + off_weight * offset


def expand_positive_cells(tg: dict[str, torch.Tensor], radius: int) -> dict[str, torch.Tensor]:
    """The targets with every object slot repeated at each cell within ``radius`` of its centre
    cell (RS-ATSS-like positives: each such cell predicts the object's box from where it is).

    Slot ``(b, m)`` at cell ``(x, y)`` becomes ``(2r + 1)^2`` slots at ``(x + dx, y + dy)``
    (those inside the map) with the offset target ``reg - (dx, dy)`` (the same true centre seen
    from the other cell) and the same size and class; :func:`select_positives` then keeps one
    positive per (image, class, cell), the best-matching one.
    """
    if radius <= 0:
        return tg
    h, w = tg["heatmap"].shape[-2:]
    ind = tg["ind"].long()
    y, x = torch.div(ind, w, rounding_mode="floor"), ind % w
    r = torch.arange(-radius, radius + 1, device=ind.device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    dy, dx = dy.reshape(-1), dx.reshape(-1)  # [K]
    ny, nx = y[..., None] + dy, x[..., None] + dx  # [B, M, K]
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    b, m, k = ny.shape
    shift = torch.stack([dx, dy], -1).to(tg["reg"].dtype)  # [K, 2]
    out = dict(tg)
    out["ind"] = (ny.clamp(0, h - 1) * w + nx.clamp(0, w - 1)).reshape(b, m * k)
    out["mask"] = (tg["mask"][..., None].bool() & inside).reshape(b, m * k).to(tg["mask"].dtype)
    out["cls"] = tg["cls"][..., None].expand(b, m, k).reshape(b, m * k)
    out["wh"] = tg["wh"][:, :, None, :].expand(b, m, k, 2).reshape(b, m * k, 2)
    out["reg"] = (tg["reg"][:, :, None, :] - shift).reshape(b, m * k, 2)
    return out


def centernet_ranking_losses(
    objective: RankingObjective,
    out: dict[str, torch.Tensor],
    tg: dict[str, torch.Tensor],
    *,
    num_classes: int,
    cat_spec_wh: bool = False,
    box_loss: str = "l1",
    wh_weight: float = 0.1,
    off_weight: float = 1.0,
    norm_wh: bool = False,
    ignore_radius: int = 0,
    ignore_heat: float = 0.0,
    positive_radius: int = 0,
) -> dict[str, torch.Tensor]:
    """The RS-CenterNet loss terms of one batch (module docstring).

    Args:
        objective: the head's :class:`RankingObjective` (``build_ranking_objective``).
        out: head outputs: ``logits [B,C,H,W]`` (pre-sigmoid; recovered from ``heat`` when
            absent), ``wh``, ``reg``.
        tg: :func:`build_targets` output.
        num_classes, cat_spec_wh, wh_weight, off_weight, norm_wh: the model's options.
        box_loss: ``"l1"`` or ``"giou"`` (``model.rs_box_loss``).
    """
    logits = out.get("logits")
    if logits is None:  # a head that gives only probabilities (hand-made output dicts)
        logits = torch.logit(out["heat"].float(), eps=1e-6)
    logits = logits.float()
    shape = tuple(logits.shape)
    width = shape[-1]
    tg = expand_positive_cells(tg, positive_radius)
    wh, off = slot_predictions(out, tg, num_classes, cat_spec_wh)
    pred_boxes = slot_boxes(tg["ind"], width, wh, off)
    gt_boxes = slot_boxes(tg["ind"], width, tg["wh"], tg["reg"])
    pos = select_positives(tg, pred_boxes, gt_boxes, num_classes)
    targets = ranking_targets(
        shape,
        pos,
        objective.iou_targets(pos.iou),
        tg.get("ignore"),
        ignore_radius,
        tg["heatmap"],
        ignore_heat,
    )

    per_slot = l1_box_losses(wh, off, tg, wh_weight, off_weight, norm_wh).reshape(-1)
    box = per_slot[pos.slot]
    if box_loss == "giou":
        box = box + generalized_box_iou_loss(
            pred_boxes.reshape(-1, 4)[pos.slot], gt_boxes.reshape(-1, 4)[pos.slot]
        )
    flat_logits = logits.reshape(-1)
    scores = torch.sigmoid(flat_logits[pos.flat].detach())
    if objective.per_class:  # [C, B*H*W]: one ranking per class channel

        def rows(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(shape).transpose(0, 1).reshape(shape[1], -1)

        return objective(rows(logits), rows(targets), box, scores)
    return objective(flat_logits, targets, box, scores)
