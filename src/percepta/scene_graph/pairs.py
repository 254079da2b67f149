"""Which object pairs a relation head scores: test-time pairs, per-class overlaps, training samples.

Follows the official Scene-Graph-Benchmark.pytorch relation head
(KaihuaTang/Scene-Graph-Benchmark.pytorch @ 6f75881a: ``relation_head/sampling.py``
``RelationSampling`` and ``utils_relation.nms_overlaps``; project notes
``sgg_official_semantics.md`` "PostProcessor", ``sgg.md`` §3.1). Behaviour is restated, not copied.

* :func:`prepare_test_pairs` -- every ordered pair ``i != j`` in row-major order; in SGDet with
  ``require_overlap`` (``TEST.RELATION.REQUIRE_OVERLAP``) only pairs with IoU > 0 under the
  "+1 pixel" convention (boxes that touch overlap, a 1-pixel gap does not); when no pair qualifies
  the single placeholder pair ``[[0, 0]]``, as the official code.
* :func:`nms_overlaps` -- the ``[N, N, C]`` per-class IoU (+1 convention) that the SGDet label NMS
  of the post-processor uses.
* :func:`gtbox_relsample` (PredCls/SGCls training) -- positives = the non-zero cells of the GT
  relation map (row-major; at most ``int(batch_size_per_image * positive_fraction)``, a random
  subset when there are more), background = random ordered pairs ``i != j`` that are not GT pairs
  (a GT pair dropped by the positive cap is *not* used as background), ``batch_size_per_image``
  rows in all, positives first. The shipped yaml's counts are the defaults: 1024 and 0.25
  (``defaults.py`` has 64).
* :func:`detect_relsample` (SGDet training, the neural-motifs ``rel_assignments``) -- a proposal
  matches a GT box when the labels are equal and IoU > ``fg_iou_threshold`` (0.5, strict). Every
  matched (subject proposal, object proposal) combination of a GT relation, self pairs excluded,
  is a positive with the GT predicate; more than ``num_sample_per_gt_rel`` (4) of them are thinned
  by drawing that many without replacement with probability proportional to
  ``IoU_subject * IoU_object``; then the per-image positive cap; background = the remaining
  pairs of foreground proposals (only overlapping, non-identical ones, ``0 < IoU < 1``, with
  ``require_overlap``; the shipped yaml sets ``REQUIRE_BOX_OVERLAP False``), shuffled, up to
  ``batch_size_per_image`` rows in all; nothing at all gives the placeholder ``[0, 0]`` label 0.

Randomness: everything random takes a ``torch.Generator`` (``None``: torch's global RNG), so a
sample is reproducible per generator. The official code mixes ``torch.randperm`` with
``numpy.random.choice`` for the per-GT-relation thinning; here that draw is
``torch.multinomial(..., replacement=False)``, which samples from the same distribution
(successive draws proportional to the remaining weights) but not the same stream.

``MAX_PROPOSAL_PAIR`` (named in some planning notes) does not exist in the official code at this
commit: it is an inference-time pair cap of later forks (PySGG/BGNN) and is not implemented here.

IoU is written by hand (:func:`box_iou_vg`), not with ``torchvision.ops.box_iou``: the official
``boxlist_iou`` uses inclusive widths (``x2 - x1 + 1``) and a float32 operation order that decides
the strict ``> 0`` / ``> 0.5`` tests exactly; shifting boxes by +1 for torchvision rounds
differently, and the per-class ``[N, N, C]`` form has no torchvision counterpart.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from percepta.errors import ConfigError, DataError
from percepta.scene_graph.matching import MODES

__all__ = [
    "RelationSample",
    "box_iou_vg",
    "prepare_test_pairs",
    "nms_overlaps",
    "relation_map",
    "gtbox_relsample",
    "detect_relsample",
    "RelationSampler",
]


class RelationSample(NamedTuple):
    """One image's training pairs.

    Attributes:
        pairs: ``[S, 2]`` int64 (subject index, object index) into the image's boxes/proposals,
            positives first.
        labels: ``[S]`` int64 predicate of each row (0 = background).
        binary: ``[N, N]`` int64 symmetric 0/1 "related" map (VCTree's binary target): 1 for
            both orders of every GT relation (SGDet: of every matched proposal combination).
    """

    pairs: torch.Tensor
    labels: torch.Tensor
    binary: torch.Tensor


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    return mode


def _check_boxes(boxes: torch.Tensor, name: str) -> torch.Tensor:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"{name}: shape {list(boxes.shape)}, expected [N, 4] (x1, y1, x2, y2)")
    return boxes


def box_iou_vg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU ``[len(a), len(b)]`` with inclusive pixel widths, as the official ``boxlist_iou``.

    ``area = (x2 - x1 + 1) * (y2 - y1 + 1)``, ``inter = clamp(min(x2) - max(x1) + 1, 0) * (same
    for y)``, ``iou = inter / (area_a + area_b - inter)`` in the inputs' dtype (float32 for the
    official semantics), in that operation order.
    """
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    lt = torch.max(a[:, None, :2], b[:, :2])
    rb = torch.min(a[:, None, 2:], b[:, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area_a[:, None] + area_b - inter)


def prepare_test_pairs(
    boxes: torch.Tensor, mode: str, require_overlap: bool = True
) -> torch.Tensor:
    """Candidate pairs of one image at test time: ``[P, 2]`` int64 on ``boxes.device``.

    All ordered pairs ``i != j``, row-major (``(0,1), (0,2), ..., (1,0), ...``). Only in SGDet and
    with ``require_overlap`` (official ``TEST.RELATION.REQUIRE_OVERLAP``, default True; the
    shipped yaml sets False) a pair also needs IoU > 0 with the +1 convention. No qualifying pair
    (also fewer than two boxes) gives ``[[0, 0]]``, the official placeholder.
    """
    _check_mode(mode)
    boxes = _check_boxes(torch.as_tensor(boxes), "boxes")
    n = boxes.shape[0]
    cand = ~torch.eye(n, dtype=torch.bool, device=boxes.device)
    if mode == "sgdet" and require_overlap:
        cand &= box_iou_vg(boxes, boxes) > 0
    idx = torch.nonzero(cand).view(-1, 2)
    if len(idx):
        return idx
    return torch.zeros((1, 2), dtype=torch.int64, device=boxes.device)


def nms_overlaps(boxes_per_cls: torch.Tensor) -> torch.Tensor:
    """Per-class IoU ``[N, N, C]`` of ``boxes_per_cls [N, C, 4]`` (+1 convention).

    ``out[i, j, c]`` = IoU of box ``i``'s and box ``j``'s class-``c`` boxes, computed as the
    official ``utils_relation.nms_overlaps`` (union = ``-inter + area_j + area_i``, that order).
    """
    if boxes_per_cls.ndim != 3 or boxes_per_cls.shape[2] != 4:
        raise DataError(
            f"boxes_per_cls: shape {list(boxes_per_cls.shape)}, expected [N, C, 4] (x1, y1, x2, y2)"
        )
    b = boxes_per_cls
    max_xy = torch.min(b[:, None, :, 2:], b[None, :, :, 2:])
    min_xy = torch.max(b[:, None, :, :2], b[None, :, :, :2])
    inter = torch.clamp(max_xy - min_xy + 1.0, min=0)
    inters = inter[..., 0] * inter[..., 1]
    areas = (b[..., 2] - b[..., 0] + 1.0) * (b[..., 3] - b[..., 1] + 1.0)
    union = -inters + areas[None] + areas[:, None]
    return inters / union


def relation_map(
    relations: torch.Tensor, num_boxes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The training relation map ``[N, N]`` int64 (0 = no relation) of ``relations [R, 3]``.

    Rows are (subject, object, predicate) in file order. As the official ``get_groundtruth``
    (step 4 in ``sgg_official_semantics.md``): a later relation on an already filled (s, o) cell
    overwrites it only if a uniform draw is > 0.5 (one draw per collision, from ``generator``).
    """
    rel = torch.as_tensor(relations, dtype=torch.int64).reshape(-1, 3).cpu()
    out = torch.zeros((num_boxes, num_boxes), dtype=torch.int64)
    if len(rel) and (rel[:, :2].min() < 0 or rel[:, :2].max() >= num_boxes):
        raise DataError(f"relations: a box index is outside 0..{num_boxes - 1}")
    for s, o, p in rel.tolist():
        if out[s, o] > 0:
            if float(torch.rand((), generator=generator)) > 0.5:
                out[s, o] = p
        else:
            out[s, o] = p
    return out


def _randperm(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=generator, device=device)


def gtbox_relsample(
    rel_map: torch.Tensor,
    *,
    batch_size_per_image: int = 1024,
    positive_fraction: float = 0.25,
    generator: torch.Generator | None = None,
) -> RelationSample:
    """PredCls/SGCls training pairs of one image from its GT relation map ``[N, N]``.

    The official ``RelationSampling.gtbox_relsample``: positives = non-zero cells (row-major,
    a random ``int(batch_size_per_image * positive_fraction)`` of them when there are more),
    background = a random ``batch_size_per_image - num_positives`` of the ordered non-GT pairs
    ``i != j`` (all of them, shuffled, when fewer). ``generator`` must live on ``rel_map``'s device.
    """
    if rel_map.ndim != 2 or rel_map.shape[0] != rel_map.shape[1]:
        raise DataError(f"rel_map: shape {list(rel_map.shape)}, expected [N, N]")
    device = rel_map.device
    n = rel_map.shape[0]
    num_pos = int(batch_size_per_image * positive_fraction)
    fg = torch.nonzero(rel_map > 0).view(-1, 2)
    fg_labels = rel_map[fg[:, 0], fg[:, 1]].long()

    binary = torch.zeros((n, n), dtype=torch.int64, device=device)
    binary[fg[:, 0], fg[:, 1]] = 1
    binary[fg[:, 1], fg[:, 0]] = 1

    possible = ~torch.eye(n, dtype=torch.bool, device=device)
    possible[fg[:, 0], fg[:, 1]] = False
    bg = torch.nonzero(possible).view(-1, 2)

    if len(fg) > num_pos:
        keep = _randperm(len(fg), generator, device)[:num_pos]
        fg, fg_labels = fg[keep], fg_labels[keep]
    num_bg = batch_size_per_image - len(fg)
    bg = bg[_randperm(len(bg), generator, device)[:num_bg]]
    pairs = torch.cat((fg, bg), 0)
    labels = torch.cat((fg_labels, torch.zeros(len(bg), dtype=torch.int64, device=device)))
    return RelationSample(pairs, labels, binary)


def detect_relsample(
    proposal_boxes: torch.Tensor,
    proposal_labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    rel_map: torch.Tensor,
    *,
    fg_iou_threshold: float = 0.5,
    require_overlap: bool = False,
    num_sample_per_gt_rel: int = 4,
    batch_size_per_image: int = 1024,
    positive_fraction: float = 0.25,
    background_label: int = 0,
    generator: torch.Generator | None = None,
) -> RelationSample:
    """SGDet training pairs of one image (official ``detect_relsample`` +
    ``motif_rel_fg_bg_sampling``; see the module docstring for the rules).

    Args:
        proposal_boxes: ``[P, 4]`` xyxy proposals; ``proposal_labels [P]`` their labels from the
            box head's matching, ``background_label`` (official: 0) for background proposals,
            which take part in no pair.
        gt_boxes, gt_labels: ``[G, 4]``, ``[G]`` the image's GT objects.
        rel_map: ``[G, G]`` GT relation map (:func:`relation_map`).
        require_overlap: ``REQUIRE_BOX_OVERLAP``: background pairs need ``0 < IoU < 1``.
        generator: on the tensors' device.
    """
    _check_boxes(proposal_boxes, "proposal_boxes")
    _check_boxes(gt_boxes, "gt_boxes")
    device = proposal_boxes.device
    prp_lab = proposal_labels.long()
    num_prp = proposal_boxes.shape[0]
    if rel_map.shape != (len(gt_boxes), len(gt_boxes)) or len(gt_labels) != len(gt_boxes):
        raise DataError(
            f"rel_map {list(rel_map.shape)} / gt_labels {len(gt_labels)} do not fit "
            f"{len(gt_boxes)} GT boxes"
        )
    if len(prp_lab) != num_prp:
        raise DataError(f"proposal_labels: {len(prp_lab)} labels for {num_prp} proposals")
    ious = box_iou_vg(gt_boxes, proposal_boxes)  # [G, P]
    is_match = (gt_labels.long()[:, None] == prp_lab[None]) & (ious > fg_iou_threshold)
    if require_overlap:
        self_iou = box_iou_vg(proposal_boxes, proposal_boxes)
        possible = (self_iou > 0) & (self_iou < 1)
    else:
        possible = ~torch.eye(num_prp, dtype=torch.bool, device=device)
    is_bg = prp_lab == background_label
    possible[is_bg] = False
    possible[:, is_bg] = False

    tgt = torch.nonzero(rel_map > 0).view(-1, 2)
    tgt_labels = rel_map[tgt[:, 0], tgt[:, 1]].long()
    binary = torch.zeros((num_prp, num_prp), dtype=torch.int64, device=device)
    fg_parts = []
    for (h, t), lab in zip(tgt.tolist(), tgt_labels.tolist()):
        heads = torch.nonzero(is_match[h]).view(-1)
        tails = torch.nonzero(is_match[t]).view(-1)
        if not len(heads) or not len(tails):
            continue
        hh = heads.view(-1, 1).expand(len(heads), len(tails)).reshape(-1)  # head-major
        tt = tails.view(1, -1).expand(len(heads), len(tails)).reshape(-1)
        binary[hh, tt] = 1
        binary[tt, hh] = 1
        valid = hh != tt
        if not valid.any():
            continue
        hh, tt = hh[valid], tt[valid]
        possible[hh, tt] = False
        rows = torch.stack((hh, tt, torch.full_like(hh, lab)), 1)
        if len(rows) > num_sample_per_gt_rel:
            w = (ious[h, hh] * ious[t, tt]).double()
            pick = torch.multinomial(w / w.sum(), num_sample_per_gt_rel, generator=generator)
            rows = rows[pick]
        fg_parts.append(rows)

    num_pos = int(batch_size_per_image * positive_fraction)
    fg = (
        torch.cat(fg_parts, 0)
        if fg_parts
        else torch.zeros((0, 3), dtype=torch.int64, device=device)
    )
    if len(fg) > num_pos:
        fg = fg[_randperm(len(fg), generator, device)[:num_pos]]
    bg_pairs = torch.nonzero(possible).view(-1, 2)
    bg = torch.cat((bg_pairs, torch.zeros((len(bg_pairs), 1), dtype=torch.int64, device=device)), 1)
    num_neg = min(batch_size_per_image - len(fg), len(bg))
    if len(bg):
        bg = bg[_randperm(len(bg), generator, device)[:num_neg]]
    if not len(fg) and not len(bg):
        bg = torch.zeros((1, 3), dtype=torch.int64, device=device)
    rows = torch.cat((fg, bg), 0)
    return RelationSample(rows[:, :2].contiguous(), rows[:, 2].contiguous(), binary)


class RelationSampler:
    """Training pair sampling over a batch, as the official ``RelationSampling``.

    PredCls/SGCls use :func:`gtbox_relsample` (proposals are the GT boxes), SGDet uses
    :func:`detect_relsample`. Defaults are the shipped yaml's (``BATCH_SIZE_PER_IMAGE`` 1024,
    ``POSITIVE_FRACTION`` 0.25, ``REQUIRE_BOX_OVERLAP`` False, ``NUM_SAMPLE_PER_GT_REL`` 4,
    ``ROI_HEADS.FG_IOU_THRESHOLD`` 0.5).
    """

    def __init__(
        self,
        mode: str,
        *,
        batch_size_per_image: int = 1024,
        positive_fraction: float = 0.25,
        fg_iou_threshold: float = 0.5,
        require_overlap: bool = False,
        num_sample_per_gt_rel: int = 4,
        background_label: int = 0,
    ) -> None:
        self.mode = _check_mode(mode)
        if batch_size_per_image < 1:
            raise ConfigError(f"batch_size_per_image: must be >= 1, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ConfigError(f"positive_fraction: must be in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.fg_iou_threshold = fg_iou_threshold
        self.require_overlap = require_overlap
        self.num_sample_per_gt_rel = num_sample_per_gt_rel
        self.background_label = background_label

    def __call__(
        self,
        proposals: list[dict[str, torch.Tensor]],
        targets: list[dict[str, torch.Tensor]],
        generator: torch.Generator | None = None,
    ) -> list[RelationSample]:
        """One :class:`RelationSample` per image.

        ``proposals[i]``: ``boxes`` (and in SGDet ``labels``); ``targets[i]``: ``boxes``,
        ``labels`` and either ``relation_map [G, G]`` or ``relations [R, 3]`` (turned into a map
        by :func:`relation_map` with ``generator``).
        """
        if len(proposals) != len(targets):
            raise DataError(f"{len(proposals)} proposal sets for {len(targets)} targets")
        out = []
        for i, (prop, tgt) in enumerate(zip(proposals, targets)):
            n_gt = len(tgt["boxes"])
            if "relation_map" in tgt:
                rmap = tgt["relation_map"]
            else:
                rmap = relation_map(tgt["relations"], n_gt, generator)
            rmap = rmap.to(torch.as_tensor(prop["boxes"]).device)
            if self.mode == "sgdet":
                out.append(
                    detect_relsample(
                        torch.as_tensor(prop["boxes"]),
                        torch.as_tensor(prop["labels"]),
                        torch.as_tensor(tgt["boxes"]),
                        torch.as_tensor(tgt["labels"]),
                        rmap,
                        fg_iou_threshold=self.fg_iou_threshold,
                        require_overlap=self.require_overlap,
                        num_sample_per_gt_rel=self.num_sample_per_gt_rel,
                        batch_size_per_image=self.batch_size_per_image,
                        positive_fraction=self.positive_fraction,
                        background_label=self.background_label,
                        generator=generator,
                    )
                )
            else:
                if len(prop["boxes"]) != n_gt:
                    raise DataError(
                        f"image {i}: {self.mode} samples on the GT boxes, but got "
                        f"{len(prop['boxes'])} proposals for {n_gt} GT boxes"
                    )
                out.append(
                    gtbox_relsample(
                        rmap,
                        batch_size_per_image=self.batch_size_per_image,
                        positive_fraction=self.positive_fraction,
                        generator=generator,
                    )
                )
        return out
