"""Scene-graph evaluation: R@K, ngR@K, mR@K, ng-mR@K, zR@K, ng-zR@K and A@K in one evaluator.

:class:`SceneGraphEvaluator` is a :class:`percepta.evaluator.Evaluator` (a ``torchmetrics.Metric``;
``update(preds, targets)``, ``compute()``, ``primary_metric``, ``format_table(metrics)``) whose
numbers are those of the official Scene-Graph-Benchmark.pytorch evaluator
(KaihuaTang/Scene-Graph-Benchmark.pytorch @ 6f75881a, ``sgg_eval.py`` + ``vg_eval.py``;
restated in the project notes ``sgg.md`` §1, nothing copied).
It reproduces the reference vectors in ``tests/fixtures/sgg`` (all metrics, per-predicate and
per-image lists, the printed table) to 1e-9. The official rules, all kept:

* recall is per image, then averaged over the *evaluated* images: an image without GT relation,
  without prediction or without predicted pair is skipped (counted in ``result["images"]``);
* GT relations are not de-duplicated; one prediction may hit several GT relations;
* boxes match at IoU >= 0.5 with the "+1 pixel" convention in every mode (``box_convention="vg"``;
  ``"xyxy"`` drops the +1, which the official code never does); PredCls replaces the predicted
  boxes/labels/scores by the GT ones;
* graph-constrained rows are taken in the order given (the relation head sorts them), predicate
  = best non-background column; ngR ranks all (pair, predicate) entries and keeps the top 100;
* mR@K = (1/P) sum over all P predicates of the mean per-image recall of images containing it
  (an absent predicate counts 0); zR@K averages over images with >= 1 zero-shot GT triplet;
  A@K (PredCls/SGCls) = sum of hits among GT-pair rows / sum of GT relations.

**Labels.** Labels and zero-shot triplets are compared exactly as given: only consistency between
predictions, targets and the zero-shot list matters (percepta's contiguous 0..C-1 labels and
VG's 1..150 both work, but a VG zero-shot file must be shifted to 0-based labels for percepta
targets). Predicates are 1..P everywhere; ``rel_scores`` column c is predicate c, column 0 the
background.

**Design.** One matching pass per image (:func:`percepta.scene_graph.matching.match_image`)
reduces the image to each GT relation's first-hit rank in each ranking; every metric is a small
:class:`RelationMetric` registered in :data:`RELATION_METRICS` that turns that
:class:`ImageMatch` into a few per-image numbers and/or sums. Add a metric by subclassing and
decorating with :func:`register_relation_metric`; it is picked up by name.

**State and DDP.** ``update`` keeps no score matrix: per evaluated image one float64 row
(image id, number of GT relations, per-metric values: about 20 numbers), as a list state of
flat tensors (synced by concatenation); per-predicate sums and image counts are sum states.
Under DDP the per-image lists come back in rank order (means are unchanged); an image evaluated
by two processes (``DistributedSampler`` padding) is counted twice, with a warning.

**Result keys** (``compute()``):

* ``"R@K"``, ``"ngR@K"``, ``"zR@K"``, ``"ng-zR@K"``, ``"mR@K"``, ``"ng-mR@K"`` and (not SGDet)
  ``"A@K"``: floats (NaN when no image qualifies, e.g. zR without zero-shot list);
* ``"per_predicate"``: ``{"mR": {K: [P floats]}, "ng-mR": {...}}`` (predicate 1 first);
* ``"predicate_counts"``: GT relations per predicate over the evaluated images;
* ``"per_image"``: ``{"evaluated_image_ids", "R": {K: values}, "ngR", "zeroshot_image_ids",
  "zR", "ng-zR", "A_hit", "A_count"}``, the official result-dict lists as numpy arrays in
  update order (arrays: cheap to return, and torchmetrics does not walk them, for 100k images);
* ``"images"``: ``{"seen", "evaluated", "skipped_no_gt_relations", "skipped_no_prediction",
  "skipped_no_predicted_pairs"}``.

Only the float entries are metrics to log; the other entries are dicts.

**Primary metric** (keeps ``best.pt``; higher is better, as for every recall here): option
``primary_metric``, default ``"R@100"``, the number the seed framework selects models with:
its ``do_vg_evaluation`` returns mean R@100 and its training loop feeds R@100 to the
plateau scheduler (``sgg.md`` §1.8, §3.1). Set ``"mR@100"`` for debiasing work (TDE), where R@K
drops by design while mR@K rises. It must be a key that ``compute()`` returns for the chosen
mode, K values and metrics (checked when the evaluator is built).

**Protocol switch.** ``evaluator.protocol`` picks the rules: ``"sgg"`` (default, this module's
:class:`SceneGraphEvaluator`) or ``"vrd"`` (the Visual Relationship Detection protocol of Lu et
al., ECCV 2016: per-image top-K triplets, one-to-one greedy matching, recall = hits / GT over
the whole set; :class:`percepta.scene_graph.vrd_protocol.VRDEvaluator`, built by the same
:func:`build_scene_graph_evaluator`). Likewise ``percepta score scene-graph --protocol vrd``
scores the triplet files of :mod:`percepta.scene_graph.triplet_io`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from percepta.data.facts import dataset_meta
from percepta.errors import DataError
from percepta.evaluator import Evaluator
from percepta.jsonable import to_jsonable
from percepta.registry import EVALUATORS
from percepta.scene_graph.matching import MODES, ImageData, ImageMatch, ZeroShotSet, match_image
from percepta.scene_graph.results_io import (
    image_from_dicts,
    iter_images,
    load_zero_shot_triplets,
    official_table,
    read_results_file,
)
from percepta.scene_graph.triplet_io import cli_score_vrd
from percepta.scene_graph.vrd_protocol import VRDEvaluator

__all__ = [
    "SceneGraphEvaluator",
    "SceneGraphEvalOptions",
    "VRDEvaluator",
    "PROTOCOLS",
    "RelationMetric",
    "RELATION_METRICS",
    "register_relation_metric",
    "build_scene_graph_evaluator",
    "cli_score",
]

SKIP_REASONS = ("no_gt_relations", "no_prediction", "no_predicted_pairs")
PROTOCOLS = ("sgg", "vrd")


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


class RelationMetric:
    """A metric fed by the shared per-image matches. Subclass, then :func:`register_relation_metric`.

    Contract: ``row_size`` numbers per evaluated image (kept, concatenated across processes) and
    ``sum_size`` numbers summed over images (summed across processes), both float64, produced by
    :meth:`image_values`; :meth:`compute` turns all rows and the sums into result entries
    (scalar keys at the top level; ``"per_image"``/``"per_predicate"`` sub-dicts are merged).
    """

    name: ClassVar[str] = ""
    modes: ClassVar[tuple[str, ...]] = MODES

    def __init__(self, ks: Sequence[int], num_predicates: int) -> None:
        self.ks = np.asarray(ks, dtype=np.int64)
        self.num_predicates = num_predicates
        self.row_size = 0
        self.sum_size = 0

    def result_keys(self) -> list[str]:
        """The scalar keys :meth:`compute` returns (``"<name>@<K>"``); override if different."""
        return [f"{self.name}@{k}" for k in self.ks]

    def hits(self, first: np.ndarray) -> np.ndarray:
        """``[len(ks), m]`` booleans: GT relation hit within the first K of the ranking."""
        return first[None, :] < self.ks[:, None]

    def image_values(self, match: ImageMatch) -> tuple[np.ndarray | None, np.ndarray | None]:
        raise NotImplementedError

    def compute(self, rows: np.ndarray, sums: np.ndarray, image_ids: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError


RELATION_METRICS: dict[str, type[RelationMetric]] = {}


def register_relation_metric(cls: type[RelationMetric]) -> type[RelationMetric]:
    """Class decorator: make ``cls`` available to :class:`SceneGraphEvaluator` under ``cls.name``."""
    if not cls.name or cls.name in RELATION_METRICS and RELATION_METRICS[cls.name] is not cls:
        raise ValueError(f"relation metric name {cls.name!r} is empty or already registered")
    RELATION_METRICS[cls.name] = cls
    return cls


@register_relation_metric
class Recall(RelationMetric):
    """R@K: |Hit@K| / m per image (graph constraint), averaged over evaluated images."""

    name = "R"
    ranking = "first_hit"

    def __init__(self, ks: Sequence[int], num_predicates: int) -> None:
        super().__init__(ks, num_predicates)
        self.row_size = len(self.ks)

    def image_values(self, match: ImageMatch) -> tuple[np.ndarray, None]:
        return self.hits(getattr(match, self.ranking)).sum(1) / match.num_gt, None

    def compute(self, rows: np.ndarray, sums: np.ndarray, image_ids: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {f"{self.name}@{k}": _mean(rows[:, i]) for i, k in enumerate(self.ks)}
        out["per_image"] = {self.name: {int(k): rows[:, i].copy() for i, k in enumerate(self.ks)}}
        return out


@register_relation_metric
class NoGraphRecall(Recall):
    """ngR@K: recall of the top-100 (pair, predicate) entries ranked by s_subj * s_obj * P."""

    name = "ngR"
    ranking = "first_hit_ng"


@register_relation_metric
class ZeroShotRecall(Recall):
    """zR@K: recall restricted to zero-shot GT triplets, over images that have one."""

    name = "zR"

    def image_values(self, match: ImageMatch) -> tuple[np.ndarray, None]:
        nz = int(match.zero_shot.sum())
        if not nz:
            return np.full(len(self.ks), np.nan), None
        return (self.hits(getattr(match, self.ranking)) & match.zero_shot).sum(1) / nz, None

    def compute(self, rows: np.ndarray, sums: np.ndarray, image_ids: np.ndarray) -> dict[str, Any]:
        keep = ~np.isnan(rows[:, 0]) if len(rows) else np.zeros(0, dtype=bool)
        out = super().compute(rows[keep], sums, image_ids)
        out["per_image"]["zeroshot_image_ids"] = image_ids[keep]
        return out


@register_relation_metric
class NoGraphZeroShotRecall(ZeroShotRecall):
    """ng-zR@K: zero-shot recall of the no-graph-constraint ranking."""

    name = "ng-zR"
    ranking = "first_hit_ng"


@register_relation_metric
class MeanRecall(RelationMetric):
    """mR@K: mean over the P predicates of the mean per-image recall of that predicate.

    Sums (not per-image lists) keep the state small: per K and predicate the summed per-image
    recall, per predicate the number of images containing it and its number of GT relations.
    """

    name = "mR"
    ranking = "first_hit"

    def __init__(self, ks: Sequence[int], num_predicates: int) -> None:
        super().__init__(ks, num_predicates)
        self.sum_size = (len(self.ks) + 2) * num_predicates

    def image_values(self, match: ImageMatch) -> tuple[None, np.ndarray]:
        p, npr, nk = match.gt_predicates, self.num_predicates, len(self.ks)
        count = np.bincount(p, minlength=npr + 1)[1:]
        hits = self.hits(getattr(match, self.ranking))
        kk, ii = np.nonzero(hits)
        hit_count = np.bincount(kk * (npr + 1) + p[ii], minlength=nk * (npr + 1)).reshape(
            nk, npr + 1
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(count > 0, hit_count[:, 1:] / count, 0.0)
        return None, np.concatenate([recall.ravel(), (count > 0).astype(np.float64), count])

    def compute(self, rows: np.ndarray, sums: np.ndarray, image_ids: np.ndarray) -> dict[str, Any]:
        npr, nk = self.num_predicates, len(self.ks)
        recall_sum = sums[: nk * npr].reshape(nk, npr)
        n_images = sums[nk * npr : (nk + 1) * npr]
        with np.errstate(invalid="ignore", divide="ignore"):
            per_pred = np.where(n_images > 0, recall_sum / n_images, 0.0)
        out: dict[str, Any] = {
            f"{self.name}@{k}": float(per_pred[i].sum() / npr) for i, k in enumerate(self.ks)
        }
        out["per_predicate"] = {
            self.name: {int(k): per_pred[i].tolist() for i, k in enumerate(self.ks)}
        }
        out["predicate_counts"] = [int(c) for c in sums[(nk + 1) * npr :]]
        return out


@register_relation_metric
class NoGraphMeanRecall(MeanRecall):
    """ng-mR@K: mean recall of the no-graph-constraint ranking."""

    name = "ng-mR"
    ranking = "first_hit_ng"


@register_relation_metric
class PairAccuracy(RelationMetric):
    """A@K: among rows on GT pairs, the first K; sum of GT relations hit / sum of GT relations."""

    name = "A"
    modes = ("predcls", "sgcls")

    def __init__(self, ks: Sequence[int], num_predicates: int) -> None:
        super().__init__(ks, num_predicates)
        self.row_size = len(self.ks) + 1

    def image_values(self, match: ImageMatch) -> tuple[np.ndarray, None]:
        assert match.first_hit_pair is not None
        return np.append(self.hits(match.first_hit_pair).sum(1), match.num_gt).astype(
            np.float64
        ), None

    def compute(self, rows: np.ndarray, sums: np.ndarray, image_ids: np.ndarray) -> dict[str, Any]:
        count = rows[:, -1]
        out: dict[str, Any] = {
            f"A@{k}": _mean(rows[:, i]) / _mean(count) if len(rows) else float("nan")
            for i, k in enumerate(self.ks)
        }
        out["per_image"] = {
            "A_hit": {int(k): rows[:, i].copy() for i, k in enumerate(self.ks)},
            "A_count": {int(k): count.copy() for k in self.ks},
        }
        return out


class SceneGraphEvaluator(Evaluator):
    """R@K / ngR@K / mR@K / ng-mR@K / zR@K / ng-zR@K / A@K with the official semantics.

    Args:
        mode: ``"predcls"``, ``"sgcls"`` or ``"sgdet"``. PredCls uses the GT boxes, labels and
            object scores 1 in place of the predicted ones; A@K is computed except in SGDet.
        k: the K values (default 20, 50, 100). The per-predicate details of the table show
            K = 100 as officially (the largest K when 100 is not among them).
        num_predicates: P, the number of foreground predicates (50 on VG150); ``rel_scores``
            has P + 1 columns.
        predicate_names: P names (or P + 1 with the background first) for the tables.
        zero_shot_triplets: ``[Z, 3]`` (subject class, object class, predicate), or a file (see
            :func:`percepta.scene_graph.results_io.load_zero_shot_triplets`); ``None`` -> zR@K is NaN.
        iou_threshold: box match threshold, inclusive (official 0.5).
        box_convention: ``"vg"`` (inclusive pixels, width = x2 - x1 + 1, the official rule) or
            ``"xyxy"`` (width = x2 - x1).
        metrics: names from :data:`RELATION_METRICS` to compute (default: all that apply).
        primary_metric: the ``compute()`` key that keeps ``best.pt`` (default ``"R@100"``, see
            the module docstring); must be computed with these options.

    ``update(preds, targets)`` takes lists of dicts (or one dict each): targets ``boxes [N,4]``
    (XYXY pixels), ``labels [N]``, ``relations [M,3]`` (subject, object, predicate 1..P),
    ``image_id`` (int); preds ``boxes``, ``labels``, ``scores`` (not needed in PredCls),
    ``rel_pairs [R,2]`` (indices into the predicted boxes; in PredCls the GT boxes) in ranked
    order, ``rel_scores [R,P+1]``. A pred of ``None`` means the image has no prediction.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        mode: str = "predcls",
        k: Sequence[int] = (20, 50, 100),
        num_predicates: int = 50,
        predicate_names: Sequence[str] | None = None,
        zero_shot_triplets: Any = None,
        iou_threshold: float = 0.5,
        box_convention: str = "vg",
        metrics: Sequence[str] | None = None,
        primary_metric: str = "R@100",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if box_convention not in ("vg", "xyxy"):
            raise ValueError(f"box_convention must be 'vg' or 'xyxy', got {box_convention!r}")
        ks = tuple(int(x) for x in k)
        if not ks or min(ks) < 1 or int(num_predicates) < 1:
            raise ValueError(
                f"k must be positive integers and num_predicates >= 1 (got {k}, {num_predicates})"
            )
        self.mode, self.ks, self.num_predicates = mode, ks, int(num_predicates)
        self.iou_threshold, self.box_convention = float(iou_threshold), box_convention
        names = (
            list(predicate_names)
            if predicate_names
            else [f"predicate_{i}" for i in range(1, num_predicates + 1)]
        )
        if len(names) == self.num_predicates + 1:
            names = names[1:]
        if len(names) != self.num_predicates:
            raise ValueError(
                f"predicate_names has {len(names)} names, expected {self.num_predicates}"
            )
        self.predicate_names = names
        zs = load_zero_shot_triplets(zero_shot_triplets)
        self.zero_shot = ZeroShotSet(zs) if zs is not None else None
        wanted = list(metrics) if metrics is not None else list(RELATION_METRICS)
        unknown = [m for m in wanted if m not in RELATION_METRICS]
        if unknown:
            raise ValueError(
                f"unknown relation metrics {unknown}; known: {sorted(RELATION_METRICS)}"
            )
        self.metrics = [
            RELATION_METRICS[m](ks, self.num_predicates)
            for m in wanted
            if mode in RELATION_METRICS[m].modes
        ]
        keys = [key for m in self.metrics for key in m.result_keys()]
        if primary_metric not in keys:
            raise ValueError(
                f"primary_metric {primary_metric!r} is not computed in mode {mode!r} "
                f"with k={list(ks)}; choose one of {', '.join(keys)}"
            )
        self.primary_metric = primary_metric  # type: ignore[misc]  # per instance: an option
        self._row_width = 2 + sum(m.row_size for m in self.metrics)
        self.add_state("image_rows", default=[], dist_reduce_fx="cat")
        self.add_state(
            "sums",
            default=torch.zeros(sum(m.sum_size for m in self.metrics), dtype=torch.float64),
            dist_reduce_fx="sum",
        )
        self.add_state(
            "counts",
            default=torch.zeros(len(SKIP_REASONS) + 1, dtype=torch.float64),
            dist_reduce_fx="sum",
        )
        self.set_dtype(torch.float64)  # an empty list state is synced as a float64 tensor too
        self._seen: set[int] = set()

    # -- accumulation ---------------------------------------------------------------------------
    def update(
        self, preds: Any = None, targets: Any = None, *, images: Sequence[ImageData] | None = None
    ) -> None:
        """Match a batch of images and keep only their small per-image results.

        ``images``: already validated :class:`ImageData` records (the file reader uses this).
        """
        if images is None:
            if isinstance(targets, Mapping):
                preds, targets = [preds], [targets]
            if targets is None or preds is None or len(preds) != len(targets):
                raise DataError("update(preds, targets) needs two lists of the same length")
            images = [
                image_from_dicts(p, t, mode=self.mode, num_predicates=self.num_predicates)
                for p, t in zip(preds, targets)
            ]
        try:
            ids = [int(img.image_id) for img in images]
        except (TypeError, ValueError):
            raise DataError("image ids must be integers") from None
        batch_seen: set[int] = set()
        for iid in ids:  # checked before anything is kept, so a failed update changes nothing
            if iid in self._seen or iid in batch_seen:
                raise DataError(f"image id {iid} was given twice")
            batch_seen.add(iid)
        rows: list[np.ndarray] = []
        sums = np.zeros(self.sums.numel())
        counts = np.zeros(len(SKIP_REASONS) + 1)
        max_k = max(self.ks)
        for iid, img in zip(ids, images):
            counts[0] += 1
            res = match_image(
                img,
                mode=self.mode,
                max_k=max_k,
                iou_threshold=self.iou_threshold,
                plus_one=self.box_convention == "vg",
                zero_shot=self.zero_shot,
            )
            if isinstance(res, str):
                counts[1 + SKIP_REASONS.index(res)] += 1
                continue
            parts, offset = [np.array([iid, res.num_gt], dtype=np.float64)], 0
            for m in self.metrics:
                row, s = m.image_values(res)
                if row is not None:
                    parts.append(row)
                if s is not None:
                    sums[offset : offset + m.sum_size] += s
                offset += m.sum_size
            rows.append(np.concatenate(parts))
        flat = np.concatenate(rows) if rows else np.zeros(0)
        self.image_rows.append(torch.from_numpy(flat).to(self.device))
        while (
            len(self.image_rows) > 1 and self.image_rows[-1].numel() >= self.image_rows[-2].numel()
        ):
            last = self.image_rows.pop()  # binary-counter merging keeps the list O(log N) long
            self.image_rows[-1] = torch.cat([self.image_rows[-1], last])
        self.sums.add_(torch.from_numpy(sums).to(self.sums.device))
        self.counts.add_(torch.from_numpy(counts).to(self.counts.device))
        self._seen |= batch_seen

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Same as :meth:`update` (a per-batch scene-graph recall is not meaningful)."""
        self.update(*args, **kwargs)

    def reset(self) -> None:
        super().reset()
        self._seen = set()

    # -- results --------------------------------------------------------------------------------
    def compute(self) -> dict[str, Any]:
        """All metrics (see the module docstring for the keys)."""
        state = self.image_rows
        flat = (
            torch.cat([t.reshape(-1) for t in state])
            if isinstance(state, list) and state
            else (
                state.reshape(-1)
                if isinstance(state, torch.Tensor)
                else torch.zeros(0, dtype=torch.float64)
            )
        )
        rows = flat.cpu().numpy().reshape(-1, self._row_width)
        sums = self.sums.cpu().numpy()
        counts = self.counts.cpu().numpy()
        ids = rows[:, 0].astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            warnings.warn(
                "some images were evaluated more than once (several processes? a padding "
                "DistributedSampler?); they are counted each time",
                stacklevel=2,
            )
        result: dict[str, Any] = {}
        per_image: dict[str, Any] = {"evaluated_image_ids": ids}
        per_predicate: dict[str, Any] = {}
        col, off = 2, 0
        for m in self.metrics:
            out = m.compute(rows[:, col : col + m.row_size], sums[off : off + m.sum_size], ids)
            col, off = col + m.row_size, off + m.sum_size
            per_image.update(out.pop("per_image", {}))
            per_predicate.update(out.pop("per_predicate", {}))
            result.update(out)
        result["per_predicate"] = per_predicate
        result["per_image"] = per_image
        result["images"] = {
            "seen": int(counts[0]),
            "evaluated": len(ids),
            **{f"skipped_{r}": int(c) for r, c in zip(SKIP_REASONS, counts[1:])},
        }
        return result

    def format_table(self, metrics: Mapping[str, Any]) -> str:
        """The official-style printed table of a ``compute()`` result (plus a line counting
        skipped images)."""
        return official_table(
            metrics, mode=self.mode, ks=self.ks, predicate_names=self.predicate_names
        )


@dataclass
class SceneGraphEvalOptions:
    """``evaluator:`` section for scene graphs (see :class:`SceneGraphEvaluator`)."""

    name: str = "scene_graph"
    mode: str = "predcls"  # predcls | sgcls | sgdet
    k: list[int] = field(default_factory=lambda: [20, 50, 100])
    num_predicates: int = 0  # 0: from dataset.meta["predicate_names"]
    predicate_names: list[str] = field(default_factory=list)  # []: from dataset.meta
    zero_shot_triplets: str = ""  # .json/.npy/.pt file; "": dataset.meta's, if any
    iou_threshold: float = 0.5
    box_convention: str = "vg"  # vg (+1 pixel, official) | xyxy
    primary_metric: str = "R@100"  # keeps best.pt; the seed framework's model-selection metric
    protocol: str = "sgg"  # sgg (Scene-Graph-Benchmark, above) | vrd (Lu et al. 2016, VRDEvaluator)
    predicates_per_pair: int = 1  # vrd only: triplets per rel_pairs row (its best predicates)
    gt_count: str = "rows"  # vrd only: recall denominator, rows | matlab_length (official code)


@EVALUATORS.register(
    "scene_graph",
    options=SceneGraphEvalOptions,
    help="scene graphs: R@K, ngR@K, mR@K, zR@K, A@K (official SGG semantics; protocol=vrd: VRD)",
)
def build_scene_graph_evaluator(
    options: SceneGraphEvalOptions | None, dataset: Any
) -> SceneGraphEvaluator | VRDEvaluator:
    """Build the evaluator from its options (``protocol`` picks :class:`SceneGraphEvaluator` or
    :class:`VRDEvaluator`); predicate names, their number and the zero-shot triplets default to
    ``dataset.meta["predicate_names"]`` / ``["zero_shot_triplets"]``."""
    opts = options if options is not None else SceneGraphEvalOptions()
    if opts.protocol not in PROTOCOLS:
        raise DataError(
            f"evaluator.protocol must be one of {', '.join(PROTOCOLS)}, got {opts.protocol!r}"
        )
    meta = dataset_meta(dataset)
    names = list(opts.predicate_names) or list(meta.get("predicate_names") or [])
    if names and names[0].startswith("__"):
        names = names[1:]
    num = opts.num_predicates or len(names)
    if not num:
        raise DataError(
            "evaluator.num_predicates is 0 and the dataset's meta has no "
            "predicate_names: set evaluator.num_predicates or "
            "evaluator.predicate_names"
        )
    zs: Any = opts.zero_shot_triplets or meta.get("zero_shot_triplets")
    try:
        if opts.protocol == "vrd":
            return VRDEvaluator(
                mode=opts.mode,
                k=tuple(opts.k),
                num_predicates=num,
                zero_shot_triplets=zs,
                iou_threshold=opts.iou_threshold,
                box_convention=opts.box_convention,
                predicates_per_pair=opts.predicates_per_pair,
                gt_count=opts.gt_count,
                primary_metric=opts.primary_metric,
            )
        return SceneGraphEvaluator(
            mode=opts.mode,
            k=tuple(opts.k),
            num_predicates=num,
            predicate_names=names or None,
            zero_shot_triplets=zs,
            iou_threshold=opts.iou_threshold,
            box_convention=opts.box_convention,
            primary_metric=opts.primary_metric,
        )
    except ValueError as e:
        raise DataError(f"evaluator: {e}") from None


def cli_score(args: argparse.Namespace) -> int:
    """``percepta score scene-graph FILE.json`` (file format:
    :mod:`percepta.scene_graph.results_io`; flags: ``percepta.cli``). A bad record fails with one
    line ``FILE: image <id>: ...``. ``--protocol vrd``: :func:`triplet_io.cli_score_vrd`."""
    from tqdm import tqdm

    if getattr(args, "protocol", None) == "vrd":
        return cli_score_vrd(args)
    for flag, name in (("gt", "--gt"), ("zero_shot", "--zero-shot"), ("gt_count", "--gt-count")):
        if getattr(args, flag, None):
            raise DataError(f"{name} applies to --protocol vrd only")

    spec = read_results_file(args.file, getattr(args, "mode", None))
    records = spec["records"]
    int_ids = all(isinstance(r["image_id"], int) for r in records)
    try:
        ev = SceneGraphEvaluator(
            mode=spec["mode"],
            k=spec["k"],
            num_predicates=spec["num_predicates"],
            predicate_names=spec["predicate_names"],
            zero_shot_triplets=spec["zero_shot_triplets"],
            iou_threshold=spec["iou_threshold"],
            box_convention=getattr(args, "box_convention", "vg") or "vg",
            primary_metric=f"R@{max(spec['k'])}",
        )
    except ValueError as e:
        raise DataError(f"{args.file}: {e}") from None
    images = iter_images(
        records,
        mode=spec["mode"],
        num_predicates=spec["num_predicates"],
        int_ids=int_ids,
        source=args.file,
    )
    chunk: list[ImageData] = []
    with tqdm(
        total=len(records),
        desc="scoring",
        unit="img",
        disable=len(records) < 5000 or None,
        file=sys.stderr,
    ) as bar:
        for img in images:
            chunk.append(img)
            if len(chunk) == 512:
                ev.update(images=chunk)
                bar.update(len(chunk))
                chunk = []
        ev.update(images=chunk)
        bar.update(len(chunk))
    result = ev.compute()
    if not int_ids:  # positions back to the file's ids
        per_image = result["per_image"]
        for key in ("evaluated_image_ids", "zeroshot_image_ids"):
            if key in per_image:
                per_image[key] = [records[int(i)]["image_id"] for i in per_image[key]]
    if getattr(args, "plot", None):
        from percepta.viz.bars import per_predicate_bars

        k = 100 if 100 in ev.ks else max(ev.ks)
        mean = result[f"mR@{k}"]
        per_predicate_bars(
            result["per_predicate"]["mR"][k],
            ev.predicate_names,
            counts=result["predicate_counts"],
            out_path=args.plot,
            title=f"{spec['mode']}: per-predicate R@{k} (mR@{k} = {mean:.4f})",
            ylabel=f"R@{k}",
        )
    if getattr(args, "json", False):
        print(json.dumps(to_jsonable(result)))
    else:
        sys.stdout.write(ev.format_table(result))
        if getattr(args, "plot", None):
            print(f"per-predicate chart: {args.plot}")
    return 0
