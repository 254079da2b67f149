"""FREQ: the frequency-baseline relation predictor (Zellers et al., CVPR 2018, "Neural Motifs").

The relation logits of a pair are the frequency bias of its (subject label, object label) alone
(:class:`percepta.scene_graph.frequency.FrequencyBias`, ``weight[s * C + o]``, initialised from
the training statistics ``pred_dist``); no image feature is used. Labels, as in
:mod:`.motifs` (official indices, 0 = background):

* PredCls: the GT labels; object logits ``to_onehot(labels, 1000)``;
* SGCls: the detector's labels of the given boxes, ``1 + argmax`` of its class logits over
  classes 1..C; the object logits are the detector's;
* SGDet: the labels the relation post-processor will give, i.e. the official greedy per-class
  NMS (:func:`percepta.scene_graph.postprocess.obj_prediction_nms`) over the detector's logits
  and class boxes when ``boxes_per_cls`` is given, else ``1 + argmax`` as in SGCls.

Same call and output as :class:`.motifs.MotifsPredictor` (:class:`.motifs.MotifsOutput`), so the
relation model swaps one for the other. The bias stays learnable (trained by the relation loss
like MOTIFS's); with no training step it is exactly the statistics' log distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from percepta.scene_graph.frequency import FrequencyBias
from percepta.scene_graph.postprocess import obj_prediction_nms
from percepta.scene_graph.predictors.motifs import MODES, MotifsOutput, to_onehot

__all__ = ["FreqPredictor"]


class FreqPredictor(nn.Module):
    """Frequency-bias relation predictor.

    Args:
        mode: ``"predcls"`` | ``"sgcls"`` | ``"sgdet"``.
        num_obj_classes: ``C + 1`` (background included); ``num_rel_classes``: ``R + 1``.
        pred_dist: ``[C+1, C+1, R+1]`` statistics (zeros when ``None``; :meth:`set_pred_dist`).
        nms_thresh: SGDet label NMS threshold (``LATER_NMS_PREDICTION_THRES``).
    """

    def __init__(
        self,
        mode: str,
        num_obj_classes: int,
        num_rel_classes: int,
        pred_dist: torch.Tensor | None = None,
        nms_thresh: float = 0.3,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode, self.nms_thresh = mode, float(nms_thresh)
        self.num_obj_classes, self.num_rel_classes = int(num_obj_classes), int(num_rel_classes)
        if pred_dist is None:
            c = self.num_obj_classes
            pred_dist = torch.zeros(c, c, self.num_rel_classes)
        self.freq_bias = FrequencyBias(torch.as_tensor(pred_dist, dtype=torch.float32))

    def set_pred_dist(self, pred_dist: torch.Tensor) -> None:
        """Re-initialise the bias from ``pred_dist [C+1, C+1, R+1]``."""
        self.freq_bias.reset(pred_dist)

    def forward(
        self,
        x: torch.Tensor | None,
        union_features: torch.Tensor | None,
        boxes: Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
        pairs: Sequence[torch.Tensor],
        labels: torch.Tensor | None = None,
        det_logits: torch.Tensor | None = None,
        boxes_per_cls: Sequence[torch.Tensor] | None = None,
    ) -> MotifsOutput:
        """See :meth:`.motifs.MotifsPredictor.forward`; ``x`` and ``union_features`` are unused."""
        device = self.freq_bias.obj_baseline.weight.device
        counts = [int(b.shape[0]) for b in boxes]
        n = sum(counts)
        if self.mode == "predcls":
            if labels is None:
                raise ValueError("PredCls needs the object labels")
            obj_preds = labels.long().to(device)
            obj_dists = to_onehot(obj_preds, self.num_obj_classes)
        else:
            if det_logits is None:
                raise ValueError(f"{self.mode} FREQ needs the detector's class logits")
            obj_dists = det_logits.detach().float().to(device)
            obj_preds = obj_dists[:, 1:].argmax(1) + 1 if n else torch.zeros(0, dtype=torch.long)
            if self.mode == "sgdet" and boxes_per_cls is not None and not self.training:
                parts, start = [], 0
                for c, bpc in zip(counts, boxes_per_cls):
                    parts.append(
                        obj_prediction_nms(bpc, obj_dists[start : start + c], self.nms_thresh)
                    )
                    start += c
                obj_preds = torch.cat(parts) if parts else obj_preds
        offsets = [sum(counts[:i]) for i in range(len(counts))]
        glob = [p.long().to(device) + off for p, off in zip(pairs, offsets)]
        g = torch.cat(glob, 0) if glob else torch.zeros(0, 2, dtype=torch.long, device=device)
        pair_preds = torch.stack([obj_preds[g[:, 0]], obj_preds[g[:, 1]]], dim=1)
        rel = self.freq_bias.index_with_labels(pair_preds)
        empty = rel.new_zeros(rel.shape[0], 0)
        return MotifsOutput(obj_dists, obj_preds, rel, pair_preds, empty, {})
