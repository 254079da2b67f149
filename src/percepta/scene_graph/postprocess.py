"""Relation post-processor: logits of a relation head -> ranked scene-graph predictions.

Reproduces the official Scene-Graph-Benchmark.pytorch ``relation_head/inference.PostProcessor``
and ``utils_relation.obj_prediction_nms`` (KaihuaTang/Scene-Graph-Benchmark.pytorch @ 6f75881a;
measured semantics in the project notes ``sgg_official_semantics.md`` "PostProcessor", which win
over ``sgg.md`` §1.10). Behaviour is restated, not copied. Per image:

* objects: ``p = softmax(obj_logits)``, then ``p[:, 0] = 0`` *without* renormalising;
  PredCls/SGCls (GT boxes): label = ``1 + argmax(p[:, 1:])``, score = that probability, box =
  the given box; SGDet: labels from :func:`obj_prediction_nms` over the per-class boxes
  ``boxes_per_cls [N, C, 4]``, score = ``p[i, label_i]``, box = ``boxes_per_cls[i, label_i]``;
* relations: ``q = softmax(rel_logits)``; predicate = ``1 + argmax(q[:, 1:])``; triple score =
  ``q_max * s_subject * s_object`` (float32, in that order); rows sorted by it in descending
  order; ``rel_scores`` are the full ``q`` rows, background column 0 kept.

**Ties.** The sort is *stable*: equal triple scores keep the order of the input pairs (row-major
from :func:`percepta.scene_graph.pairs.prepare_test_pairs`). The official ``torch.sort`` is not
declared stable; on the reference vectors (which have no ties) both orders agree. Exact ties in
practice are zero scores (an SGDet box that NMS left with class 0 has score 0), which never count
for recall; ``obj_prediction_nms`` breaks ties in the (box, class) arg-max by the first position
in row-major order, as ``numpy.argmax`` in the official code.

**Output** (one dict per image, the percepta prediction convention of
:mod:`percepta.structures`, accepted as is by
:meth:`percepta.scene_graph.evaluation.SceneGraphEvaluator.update`):

=============  ==============================  =============================================
key            official field                  content
=============  ==============================  =============================================
``boxes``      ``bbox``                        ``[N, 4]`` float32
``labels``     ``pred_labels``                 ``[N]`` int64, logit column + ``label_offset``
``scores``     ``pred_scores``                 ``[N]`` float32
``rel_pairs``  ``rel_pair_idxs`` (sorted)      ``[R, 2]`` int64
``rel_scores`` ``pred_rel_scores`` (sorted)    ``[R, P+1]`` float32, column 0 = background
``rel_labels`` ``pred_rel_labels`` (sorted)    ``[R]`` int64 in 1..P
=============  ==============================  =============================================

``label_offset`` shifts object labels (not predicates) into the targets' label space: the
official logits have the background in column 0, so labels are 1..C-1 (VG's convention, offset
0); for percepta's contiguous 0-based targets pass ``label_offset=-1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from percepta.errors import ConfigError, DataError
from percepta.scene_graph.matching import MODES
from percepta.scene_graph.pairs import nms_overlaps

__all__ = ["RelationPostProcessor", "obj_prediction_nms", "postprocess_image"]


def obj_prediction_nms(
    boxes_per_cls: torch.Tensor, obj_logits: torch.Tensor, nms_thresh: float = 0.3
) -> torch.Tensor:
    """SGDet object labels ``[N]`` int64 by the official greedy per-class NMS.

    ``N`` times: take the global arg-max ``(box, class)`` of the remaining probabilities ``p``
    (softmax, background zeroed; first in row-major order on ties); give the box that class if it
    has none yet; zero class ``c`` for every box whose class-``c`` box has IoU (+1 convention,
    :func:`percepta.scene_graph.pairs.nms_overlaps`) ``>= nms_thresh`` with this one's (itself
    included); set the box's row to -1. A box whose row was all zero when picked gets class 0.
    """
    n = obj_logits.shape[0]
    if boxes_per_cls.ndim != 3 or boxes_per_cls.shape[:2] != obj_logits.shape[:2]:
        raise DataError(
            f"boxes_per_cls {list(boxes_per_cls.shape)} does not fit obj_logits "
            f"{list(obj_logits.shape)} (expected [N, C, 4] for [N, C])"
        )
    is_overlap = nms_overlaps(boxes_per_cls.float()) >= nms_thresh  # [N, N, C]
    prob = F.softmax(obj_logits.float(), 1).clone()
    prob[:, 0] = 0
    num_cls = prob.shape[1]
    labels = torch.zeros(n, dtype=torch.int64, device=obj_logits.device)
    for _ in range(n):
        box, cls = divmod(int(prob.argmax()), num_cls)
        if labels[box] == 0:
            labels[box] = cls
        prob[is_overlap[box, :, cls], cls] = 0.0
        prob[box] = -1.0
    return labels


@torch.no_grad()
def postprocess_image(
    rel_logits: torch.Tensor,
    obj_logits: torch.Tensor,
    rel_pairs: torch.Tensor,
    boxes: torch.Tensor,
    *,
    mode: str,
    later_nms_pred_thres: float = 0.3,
    label_offset: int = 0,
    image: int = 0,
) -> dict[str, torch.Tensor]:
    """One image (see the module docstring). ``boxes``: ``[N, 4]`` (PredCls/SGCls) or
    ``boxes_per_cls [N, C, 4]`` (SGDet). ``image`` only names the image in errors."""
    if mode not in MODES:
        raise ConfigError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    where = f"relation post-processor, image {image}"
    if (
        obj_logits.ndim != 2
        or rel_logits.ndim != 2
        or rel_pairs.ndim != 2
        or rel_pairs.shape[1] != 2
    ):
        raise DataError(
            f"{where}: expected obj_logits [N, C], rel_logits [R, P+1], rel_pairs [R, 2]; got "
            f"{list(obj_logits.shape)}, {list(rel_logits.shape)}, {list(rel_pairs.shape)}"
        )
    n, num_cls = obj_logits.shape
    if len(rel_logits) != len(rel_pairs):
        raise DataError(
            f"{where}: {len(rel_logits)} relation logit rows for {len(rel_pairs)} pairs"
        )
    device = obj_logits.device
    rel_pairs = rel_pairs.long()
    if n == 0:  # nothing to relate (the official code would fail on its [[0, 0]] placeholder)
        return {
            "boxes": torch.zeros((0, 4), device=device),
            "labels": torch.zeros(0, dtype=torch.int64, device=device),
            "scores": torch.zeros(0, device=device),
            "rel_pairs": torch.zeros((0, 2), dtype=torch.int64, device=device),
            "rel_scores": torch.zeros((0, rel_logits.shape[1]), device=device),
            "rel_labels": torch.zeros(0, dtype=torch.int64, device=device),
        }
    if len(rel_pairs) and (rel_pairs.min() < 0 or rel_pairs.max() >= n):
        raise DataError(f"{where}: rel_pairs index a box outside 0..{n - 1}")

    prob = F.softmax(obj_logits.float(), -1)
    prob[:, 0] = 0  # background zeroed, not renormalised (official)
    if mode == "sgdet":
        if boxes.ndim != 3 or boxes.shape[0] != n or boxes.shape[1] != num_cls:
            raise DataError(
                f"{where}: SGDet needs boxes_per_cls [N, C, 4] = [{n}, {num_cls}, 4], "
                f"got {list(boxes.shape)}"
            )
        labels = obj_prediction_nms(boxes, obj_logits, later_nms_pred_thres)
        scores = prob.view(-1)[torch.arange(n, device=device) * num_cls + labels]
        out_boxes = boxes[torch.arange(n, device=device), labels]
    else:
        if boxes.ndim != 2 or boxes.shape != (n, 4):
            raise DataError(f"{where}: expected boxes [{n}, 4], got {list(boxes.shape)}")
        scores, labels = prob[:, 1:].max(dim=1)
        labels = labels + 1
        out_boxes = boxes

    rel_prob = F.softmax(rel_logits.float(), -1)
    rel_max, rel_labels = rel_prob[:, 1:].max(dim=1)
    triple = rel_max * scores[rel_pairs[:, 0]] * scores[rel_pairs[:, 1]]
    order = torch.sort(triple, descending=True, stable=True).indices
    return {
        "boxes": out_boxes.float(),
        "labels": labels + label_offset,
        "scores": scores,
        "rel_pairs": rel_pairs[order],
        "rel_scores": rel_prob[order],
        "rel_labels": rel_labels[order] + 1,
    }


class RelationPostProcessor:
    """Batched post-processor with the official options.

    Args:
        mode: ``"predcls"``, ``"sgcls"`` (``USE_GT_BOX`` True) or ``"sgdet"``.
        later_nms_pred_thres: ``TEST.RELATION.LATER_NMS_PREDICTION_THRES`` (default 0.3; the
            shipped yaml uses 0.5), SGDet only.
        label_offset: added to object labels (``-1`` for 0-based targets without background).
    """

    def __init__(self, mode: str, later_nms_pred_thres: float = 0.3, label_offset: int = 0) -> None:
        if mode not in MODES:
            raise ConfigError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self.later_nms_pred_thres = later_nms_pred_thres
        self.label_offset = label_offset

    def __call__(
        self,
        rel_logits: Sequence[torch.Tensor],
        obj_logits: Sequence[torch.Tensor],
        rel_pairs: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
    ) -> list[dict[str, torch.Tensor]]:
        """One prediction dict per image; the four lists are per image and of equal length
        (``boxes[i]``: ``[N_i, 4]``, or ``boxes_per_cls [N_i, C, 4]`` in SGDet)."""
        lengths = {len(rel_logits), len(obj_logits), len(rel_pairs), len(boxes)}
        if len(lengths) != 1:
            raise DataError(
                "relation post-processor: rel_logits, obj_logits, rel_pairs and boxes must list "
                f"the same images, got lengths {len(rel_logits)}, {len(obj_logits)}, "
                f"{len(rel_pairs)}, {len(boxes)}"
            )
        return [
            postprocess_image(
                r,
                o,
                p,
                b,
                mode=self.mode,
                later_nms_pred_thres=self.later_nms_pred_thres,
                label_offset=self.label_offset,
                image=i,
            )
            for i, (r, o, p, b) in enumerate(zip(rel_logits, obj_logits, rel_pairs, boxes))
        ]
