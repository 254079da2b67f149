"""Frequency bias and the FREQ baseline (Zellers et al., "Neural Motifs", CVPR 2018).

:class:`FrequencyBias` is the official Scene-Graph-Benchmark.pytorch ``FrequencyBias``
(KaihuaTang/Scene-Graph-Benchmark.pytorch @ 6f75881a, ``model_motifs.py``; project notes
``sgg_official_semantics.md`` "Statistics" and ``sgg.md`` §3.2, restated, not copied): a learnable
``Embedding(C * C, R)`` initialised from the statistics ``pred_dist [C, C, R]`` (the log
predicate distribution of each (subject class, object class) pair) as
``weight[s * C + o] = pred_dist[s, o]``. It is added to relation logits:

* :meth:`FrequencyBias.index_with_labels` -- by hard labels: ``weight[s * C + o]``;
* :meth:`FrequencyBias.index_with_probability` -- by class distributions (Causal TDE's
  counterfactual passes): ``vec(P[:, :, 0] (outer) P[:, :, 1]) @ weight``, i.e.
  ``sum_{s,o} p_subject(s) p_object(o) weight[s * C + o]``.

The embedding keeps the official attribute name ``obj_baseline``, so an official checkpoint's
``freq_bias.obj_baseline.weight`` loads unchanged.

:class:`FrequencyBaseline` is the FREQ baseline of the Neural Motifs paper: the relation logits
are the frequency bias alone, looked up with the pair's object labels (PredCls: the GT labels;
SGCls/SGDet: the detector's predicted labels). Its logits go through the ordinary
:class:`percepta.scene_graph.postprocess.RelationPostProcessor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from percepta.errors import DataError

__all__ = ["FrequencyBias", "FrequencyBaseline", "pair_labels"]


def _as_pred_dist(pred_dist: Any) -> torch.Tensor:
    try:
        t = torch.as_tensor(pred_dist, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"pred_dist: not a numeric array ({e})") from None
    if t.ndim != 3 or t.shape[0] != t.shape[1] or t.shape[0] == 0 or t.shape[2] == 0:
        raise DataError(
            f"pred_dist: shape {list(t.shape)}, expected [C, C, R] "
            "(subject class, object class, predicate incl. background)"
        )
    if not torch.isfinite(t).all():
        raise DataError("pred_dist: contains NaN or infinite values")
    return t


class FrequencyBias(nn.Module):
    """Learnable frequency bias ``[C * C, R]`` initialised from ``pred_dist [C, C, R]``.

    Args:
        pred_dist: array-like ``[C, C, R]`` (float32), e.g. the official
            ``log(fg / fg.sum(2) + 1e-3)`` statistics; class and predicate 0 are background.
    """

    def __init__(self, pred_dist: Any) -> None:
        super().__init__()
        dist = _as_pred_dist(pred_dist)
        self.num_objs = int(dist.shape[0])
        self.num_rels = int(dist.shape[2])
        self.obj_baseline = nn.Embedding(self.num_objs * self.num_objs, self.num_rels)
        self.reset(dist)

    def reset(self, pred_dist: Any) -> None:
        """Re-initialise the bias from ``pred_dist [C, C, R]`` (the shape it was built with)."""
        weight = self.obj_baseline.weight
        pd = torch.as_tensor(pred_dist, dtype=weight.dtype)
        if tuple(pd.shape) != (self.num_objs, self.num_objs, self.num_rels):
            raise ValueError(
                f"pred_dist has shape {list(pd.shape)}, expected "
                f"[{self.num_objs}, {self.num_objs}, {self.num_rels}]"
            )
        with torch.no_grad():
            weight.copy_(pd.reshape(weight.shape).to(weight.device))

    def index_with_labels(self, pair_labels: torch.Tensor) -> torch.Tensor:
        """``[P, R]`` bias rows of ``pair_labels [P, 2]`` (subject class, object class)."""
        lab = pair_labels.long()
        return self.obj_baseline(lab[:, 0] * self.num_objs + lab[:, 1])

    def index_with_probability(self, pair_probs: torch.Tensor) -> torch.Tensor:
        """``[P, R]`` expected bias under ``pair_probs [P, C, 2]`` (``[..., 0]`` subject,
        ``[..., 1]`` object class distribution): ``vec(p_s p_o^T) @ weight``."""
        if pair_probs.ndim != 3 or pair_probs.shape[1:] != (self.num_objs, 2):
            raise DataError(
                f"pair_probs: shape {list(pair_probs.shape)}, expected [P, {self.num_objs}, 2]"
            )
        n = pair_probs.shape[0]
        joint = pair_probs[:, :, 0].reshape(n, self.num_objs, 1) * pair_probs[:, :, 1].reshape(
            n, 1, self.num_objs
        )
        return joint.reshape(n, self.num_objs * self.num_objs) @ self.obj_baseline.weight

    def forward(self, pair_labels: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`index_with_labels` (as the official module)."""
        return self.index_with_labels(pair_labels)


def pair_labels(obj_labels: torch.Tensor, rel_pairs: torch.Tensor) -> torch.Tensor:
    """``[R, 2]`` (subject label, object label) of each pair ``rel_pairs [R, 2]``."""
    pairs = rel_pairs.long()
    return torch.stack((obj_labels[pairs[:, 0]], obj_labels[pairs[:, 1]]), 1)


class FrequencyBaseline(nn.Module):
    """FREQ: relation logits = :class:`FrequencyBias` of the pair's object labels.

    ``obj_labels`` are in the statistics' class space (0 = background, VG's 1..150). PredCls
    passes the GT labels; SGCls and SGDet pass the detector's predicted labels.
    """

    def __init__(self, pred_dist: Any) -> None:
        super().__init__()
        self.freq_bias = FrequencyBias(pred_dist)

    def forward(
        self, obj_labels: Sequence[torch.Tensor], rel_pairs: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Per image ``[R_i, R]`` relation logits for ``rel_pairs[i]`` (e.g. from
        :func:`percepta.scene_graph.pairs.prepare_test_pairs`)."""
        if len(obj_labels) != len(rel_pairs):
            raise DataError(f"{len(obj_labels)} label sets for {len(rel_pairs)} pair sets")
        return [
            self.freq_bias.index_with_labels(pair_labels(lab, pairs))
            for lab, pairs in zip(obj_labels, rel_pairs)
        ]
