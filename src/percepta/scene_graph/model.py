"""The relation model: a frozen percepta detector + a relation predictor (MOTIFS or FREQ).

Registered as ``MODELS["relation"]`` (task ``scene_graph``), options :class:`RelationOptions`.
The pipeline is the relation head of Scene-Graph-Benchmark.pytorch (KaihuaTang @ 6f75881a,
``relation_head.py``; project notes ``sgg.md`` §3-4, ``sgg_official_semantics.md``):

1. the frozen detector (any percepta detector, through
   :func:`percepta.detection.relation_interface.relation_detector`; loaded from
   ``detector_checkpoint`` with :func:`percepta.load`, lazily, never trained, not part of this
   model's ``state_dict``) gives feature maps, RoI features and, in SGDet, the detections;
2. objects: PredCls / SGCls the given (GT) boxes, SGDet the detections (in training plus the GT
   boxes, ``add_gt_boxes``); object features = :class:`~.features.RoIFeatureHead` of their RoI
   features; pair features = :class:`~.features.UnionFeatureHead` of the union box's RoI
   features and the two-box masks;
3. pairs: training samples from :class:`percepta.scene_graph.pairs.RelationSampler`
   (``batch_size_per_image`` 1024, ``positive_fraction`` 0.25 as the shipped yaml), test pairs
   from :func:`percepta.scene_graph.pairs.prepare_test_pairs` (all ordered pairs);
4. the predictor (:class:`~.predictors.motifs.MotifsPredictor` with fusion ``motifs`` / ``sum``
   / ``gate``, or :class:`~.predictors.freq.FreqPredictor`), then the official post-processor
   (:class:`percepta.scene_graph.postprocess.RelationPostProcessor`: softmax, background
   column kept, pairs sorted by predicate x subject x object score).

**Inputs** (``model(images, targets)``): images as torchvision takes them (``uint8`` 0-255 or
float 0-1, a list of ``[3, H, W]`` or a ``[B, 3, H, W]`` batch). Targets, one dict per image:

* ``boxes`` ``[N, 4]`` float XYXY in the image's pixels (``tv_tensors.BoundingBoxes`` or a
  tensor), ``labels`` ``[N]`` int64 in 0..C-1, ``relations`` ``[M, 3]`` int64 rows (subject
  index, object index, predicate 1..R), the evaluator's convention
  (:class:`percepta.scene_graph.evaluation.SceneGraphEvaluator`); ``image_id`` only names the
  image in errors. Several predicates on one pair are resolved as the official training
  relation map does (:func:`percepta.scene_graph.pairs.relation_map`).

At inference the model declares :attr:`RelationModel.inference_inputs` per mode: PredCls
``("boxes", "labels")``, SGCls ``("boxes",)``, SGDet ``()``.

**Outputs.** Training: ``{"loss_rel", "loss_refine_obj"}`` (cross-entropy over the R + 1
predicate classes of the sampled pairs, background 0 included; cross-entropy of the refined
object logits against the labels, SGCls/SGDet; exactly 0 in PredCls, where the official
``±1000`` one-hot logits give 0), times ``rel_loss_weight`` / ``obj_loss_weight``; the causal
fusions add ``loss_aux_ctx`` (and ``loss_aux_vis``, ``loss_aux_frq`` for ``sum``) times
``aux_loss_weight``, the official branch constraints. Eval: one dict per image in the form
:meth:`SceneGraphEvaluator.update` consumes: ``boxes [N, 4]``, ``labels [N]`` (0..C-1; in
SGDet an object the label NMS left without class has label -1 and score 0), ``scores [N]``,
``rel_pairs [P, 2]`` ranked, ``rel_scores [P, R + 1]`` (softmax, column 0 background),
``rel_labels [P]`` (1..R).

**Labels inside.** The predictors use the official indices (0 = background, objects 1..C): the
model adds 1 to the target labels and the post-processor subtracts it (``label_offset=-1``).

**Frequency statistics** (the bias of both predictors): ``statistics_file``, a ``.npz`` holding
``pred_dist`` ``[C+1, C+1, R+1]`` (or ``fg_matrix`` + ``bg_matrix``, turned into it by
:func:`percepta.data.vg_sgg.predicate_log_distribution`) or a ``.npy`` of ``pred_dist``, e.g.
the cache :func:`percepta.data.vg_sgg.statistics_cached` writes. It is a dataset fact of the
same name (a dataset publishes ``meta["statistics_file"]``) and is read once, in
:meth:`RelationModel.prepare_training`; the learned bias is then part of the checkpoints.
Without it MOTIFS starts from a zero bias (a warning) and FREQ refuses to train.
:func:`pred_dist_from_targets` computes the statistics from percepta targets with the official
rules, for data that has no such file; :meth:`RelationModel.set_pred_dist` installs them.

**SGCls** object priors: the official SGCls embeds the detector's class distribution of each GT
box. A detector adapter that offers ``classify(feats, boxes) -> [(n, C+1) logits]`` is used for
it; without one the prior is uniform (the decoder still classifies from the RoI features).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from percepta.errors import ConfigError, DataError
from percepta.registry import MODELS
from percepta.scene_graph.feature_cache import DetectorFeatureCache, detector_fingerprint
from percepta.scene_graph.features import (
    RoIFeatureHead,
    UnionFeatureHead,
    pair_rect_masks,
    union_boxes,
)
from percepta.scene_graph.pairs import RelationSampler, box_iou_vg, prepare_test_pairs
from percepta.scene_graph.postprocess import RelationPostProcessor
from percepta.scene_graph.predictors.freq import FreqPredictor
from percepta.scene_graph.predictors.motifs import FUSIONS, MODES, MotifsPredictor

__all__ = [
    "RelationOptions",
    "RelationModel",
    "build_relation_model",
    "resolve_relation_options",
    "load_detector",
    "load_pred_dist",
    "pred_dist_from_targets",
    "PREDICTORS",
]

PREDICTORS = ("motifs", "freq")
_INFERENCE_INPUTS = {"predcls": ("boxes", "labels"), "sgcls": ("boxes",), "sgdet": ()}
FLOAT_IMAGE_MAX = 1.5  # float images are 0-1 (torchvision); above this they are 0-255 data


@dataclass
class RelationOptions:
    """Options of the relation model (``model:`` section, ``name: relation``)."""

    name: str = "relation"
    mode: str = "predcls"  # predcls | sgcls | sgdet
    predictor: str = "motifs"  # motifs | freq
    fusion: str = "motifs"  # motifs (MotifPredictor) | sum | gate (causal factual logits)
    detector_checkpoint: str = ""  # a trained percepta detector checkpoint (frozen)
    # dataset facts (filled from the data; names without "__background__")
    num_object_classes: int = 0
    num_predicates: int = 0
    object_names: list[str] = field(default_factory=list)
    predicate_names: list[str] = field(default_factory=list)
    statistics_file: str = ""  # .npz with pred_dist (or fg_matrix + bg_matrix) / .npy
    glove_path: str = ""  # local "word v1 v2 ..." text file for the label embeddings
    # dimensions (official: 4096 / 4096 / 512 / 200)
    roi_channels: int = 0  # 0 = the detector's out_channels (the detector is loaded to see)
    roi_size: int = 7  # RoIAlign output size (POOLER_RESOLUTION)
    obj_dim: int = 4096  # object feature size (MLP_HEAD_DIM)
    pooling_dim: int = 4096  # union feature size (CONTEXT_POOLING_DIM)
    hidden_dim: int = 512  # CONTEXT_HIDDEN_DIM
    embed_dim: int = 200  # EMBED_DIM
    dropout: float = 0.2  # CONTEXT_DROPOUT_RATE
    obj_layers: int = 1  # CONTEXT_OBJ_LAYER
    edge_layers: int = 1  # CONTEXT_REL_LAYER
    # training pair sampling (shipped yaml values)
    batch_size_per_image: int = 1024
    positive_fraction: float = 0.25
    fg_iou_threshold: float = 0.5
    num_sample_per_gt_rel: int = 4
    require_overlap_train: bool = False  # REQUIRE_BOX_OVERLAP (SGDet training)
    add_gt_boxes: bool = True  # ADD_GTBOX_TO_PROPOSAL_IN_TRAIN (SGDet training)
    # SGDet objects: the detector's top detections (official MODEL.ROI_HEADS.DETECTIONS_PER_IMG
    # 80); every ordered pair of them is scored, so this bounds the work per image
    max_detections: int = 80
    # inference
    require_overlap_test: bool = False  # TEST.RELATION.REQUIRE_OVERLAP (SGDet)
    later_nms_thresh: float = 0.3  # TEST.RELATION.LATER_NMS_PREDICTION_THRES (yaml: 0.5)
    # loss weights
    rel_loss_weight: float = 1.0
    obj_loss_weight: float = 1.0
    aux_loss_weight: float = 1.0
    # training: keep each image's frozen-detector features across epochs, up to this many MiB
    # (0 = recompute at every step, as Scene-Graph-Benchmark does); see feature_cache.py
    feature_cache_mb: float = 2048.0
    # and the images beyond that budget in this folder ("" = no disk tier): one float16 file per
    # image under a subfolder named by the detector's fingerprint, reused by later epochs and runs
    feature_cache_dir: str = ""
    feature_cache_disk_mb: float = 65536.0  # the disk tier's budget (MiB)


def _names_without_background(names: Sequence[str]) -> list[str]:
    names = list(names or [])
    return names[1:] if names and str(names[0]).startswith("__") else names


def resolve_relation_options(cfg: RelationOptions, facts: Any) -> RelationOptions:
    """Complete the options from the data facts (:data:`percepta.registry.Entry.resolve`).

    ``object_names`` fall back to the ``class_names`` fact; a leading ``__background__`` is
    dropped from both name lists; the class counts default to the lists' lengths. With
    ``facts`` (the engine's call) and ``roi_channels`` 0, an existing ``detector_checkpoint``
    is loaded to read its RoI feature channels, so the run's config (and its checkpoints)
    record them.
    """
    objects = _names_without_background(cfg.object_names)
    if not objects and facts is not None:
        objects = _names_without_background(
            facts.get("object_names") or facts.get("class_names") or []
        )
    predicates = _names_without_background(cfg.predicate_names)
    channels = cfg.roi_channels
    path = cfg.detector_checkpoint
    if (
        facts is not None
        and channels < 1
        and _needs_features(cfg)
        and path
        and Path(path).is_file()
    ):
        channels = int(load_detector(path)[1].out_channels)
    return dataclasses.replace(
        cfg,
        object_names=objects,
        predicate_names=predicates,
        num_object_classes=cfg.num_object_classes or len(objects),
        num_predicates=cfg.num_predicates or len(predicates),
        roi_channels=channels,
    )


def _check_options(cfg: RelationOptions) -> None:
    choices = {"mode": MODES, "predictor": PREDICTORS, "fusion": FUSIONS}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(
                f"model.{key}: {getattr(cfg, key)!r} is not one of {', '.join(allowed)}"
            )
    for key in ("num_object_classes", "num_predicates"):
        if getattr(cfg, key) < 1:
            raise ConfigError(
                f"model.{key} must be >= 1 (got {getattr(cfg, key)}); it is filled from the "
                "dataset's object_names / predicate_names when built with a dataset"
            )
    for key, n in (
        ("object_names", cfg.num_object_classes),
        ("predicate_names", cfg.num_predicates),
    ):
        names = getattr(cfg, key)
        if names and len(names) != n:
            raise ConfigError(f"model.{key} has {len(names)} names, expected {n}")
    for key in ("obj_dim", "pooling_dim", "hidden_dim", "embed_dim", "roi_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"model.{key} must be >= 1, got {getattr(cfg, key)}")


def _needs_features(cfg: RelationOptions) -> bool:
    return cfg.predictor == "motifs"


def _needs_detector(cfg: RelationOptions) -> bool:
    return _needs_features(cfg) or cfg.mode != "predcls"


_DETECTOR_CACHE: dict[tuple[str, int, int, str], tuple[nn.Module, Any]] = {}


def load_detector(path: str, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """``(detector model, its RelationDetector)`` from a percepta detector checkpoint, frozen.

    Raises :class:`ConfigError` (one line naming ``model.detector_checkpoint``) when the path
    is empty or no file. The last loaded detector is kept (per file path, size, modification
    time and device), so resolving the options, building and training load it once.
    """
    if not path:
        raise ConfigError(
            "model.detector_checkpoint is empty: the relation model needs a trained percepta "
            "detector checkpoint (model.detector_checkpoint=PATH)"
        )
    if not Path(path).is_file():
        raise ConfigError(f"model.detector_checkpoint: {path!r} does not exist")
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, str(device))
    if key in _DETECTOR_CACHE:
        return _DETECTOR_CACHE[key]
    import percepta
    from percepta.detection.relation_interface import relation_detector

    model = percepta.load(str(path), device=str(device), eval_mode=True)
    for p in model.parameters():
        p.requires_grad_(False)
    _DETECTOR_CACHE.clear()
    _DETECTOR_CACHE[key] = (model, relation_detector(model))
    return _DETECTOR_CACHE[key]


def load_pred_dist(path: str | Path) -> np.ndarray:
    """``pred_dist`` from a ``.npz`` (``pred_dist``, or ``fg_matrix`` + ``bg_matrix``) or a
    ``.npy`` file (:class:`DataError` naming the file otherwise)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"model.statistics_file: {str(p)!r} does not exist")
    try:
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False)
        with np.load(p, allow_pickle=False) as z:
            if "pred_dist" in z:
                return np.asarray(z["pred_dist"])
            if "fg_matrix" in z and "bg_matrix" in z:
                from percepta.data.vg_sgg import predicate_log_distribution

                return predicate_log_distribution(z["fg_matrix"], z["bg_matrix"])
            raise DataError(f"{p}: holds neither 'pred_dist' nor 'fg_matrix' + 'bg_matrix'")
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: not a readable .npz/.npy statistics file ({e})") from None


def pred_dist_from_targets(
    targets: Sequence[dict[str, Any]],
    num_object_classes: int,
    num_predicates: int,
    must_overlap: bool = True,
) -> np.ndarray:
    """The official frequency statistics of percepta targets: ``[C+1, C+1, R+1]`` float32.

    As ``get_VG_statistics`` + ``get_statistics`` (``sgg_official_semantics.md`` "Statistics"):
    with ``must_overlap`` only relations whose boxes overlap (IoU > 0, +1 convention) count and
    images left without relation are skipped; ``fg[s, o, p]`` counts every relation (duplicates
    included), ``bg[s, o]`` every ordered pair ``i != j`` of boxes with a positive intersection
    area (all ordered pairs when none has); then ``pred_dist = log(fg / fg.sum(2) + 1e-3)`` with
    ``fg[:, :, 0] = bg + 1`` (:func:`percepta.data.vg_sgg.predicate_log_distribution`). Labels
    0..C-1 are shifted to 1..C (0 = background).
    """
    from percepta.data.vg_sgg import predicate_log_distribution

    c1, r1 = num_object_classes + 1, num_predicates + 1
    fg = np.zeros((c1, c1, r1), dtype=np.int64)
    bg = np.zeros((c1, c1), dtype=np.int64)
    for i, t in enumerate(targets):
        boxes, labels, rels = _target_arrays(t, i, num_object_classes, num_predicates)
        if must_overlap and len(rels):
            iou = box_iou_vg(boxes[rels[:, 0]], boxes[rels[:, 1]]).diagonal()
            rels = rels[iou > 0]
        if must_overlap and not len(rels):
            continue
        lab = labels.numpy() + 1
        r = rels.numpy()
        np.add.at(fg, (lab[r[:, 0]], lab[r[:, 1]], r[:, 2]), 1)
        b = boxes.numpy().astype(np.float64)
        n = len(b)
        iw = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
        ih = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
        pairs = (iw > 0) & (ih > 0) & ~np.eye(n, dtype=bool)
        if not pairs.any():
            pairs = ~np.eye(n, dtype=bool)
        si, oi = np.nonzero(pairs)
        np.add.at(bg, (lab[si], lab[oi]), 1)
    return predicate_log_distribution(fg, bg)


def _target_arrays(
    target: dict[str, Any], index: int, num_classes: int, num_predicates: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated ``(boxes [N,4] float32, labels [N] int64, relations [M,3] int64)`` on CPU."""
    where = (
        f"target of image {target.get('image_id', index)!r}"
        if isinstance(target, dict)
        else f"targets[{index}]"
    )
    if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
        raise DataError(f"{where}: expected a dict with 'boxes', 'labels' and 'relations'")
    boxes = torch.as_tensor(target["boxes"]).as_subclass(torch.Tensor).detach().cpu().float()
    labels = torch.as_tensor(target["labels"]).as_subclass(torch.Tensor).detach().cpu().long()
    rels = torch.as_tensor(target.get("relations", torch.zeros(0, 3))).as_subclass(torch.Tensor)
    boxes = boxes.reshape(-1, 4) if boxes.numel() == 0 else boxes
    rels = rels.detach().cpu().long().reshape(-1, 3) if rels.numel() == 0 else rels.detach().cpu()
    if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.dim() != 1 or len(labels) != len(boxes):
        raise DataError(
            f"{where}: boxes must be [N,4] and labels [N], got {tuple(boxes.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if not torch.isfinite(boxes).all():
        raise DataError(f"{where}: boxes contain NaN or inf")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"{where}: labels must be in 0..{num_classes - 1}, got "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    if rels.dim() != 2 or rels.shape[1] != 3 or rels.is_floating_point():
        raise DataError(
            f"{where}: relations must be an integer [M,3] array, got {tuple(rels.shape)}"
        )
    rels = rels.long()
    if len(rels):
        if int(rels[:, :2].min()) < 0 or int(rels[:, :2].max()) >= len(boxes):
            raise DataError(f"{where}: a relation points outside the {len(boxes)} boxes")
        if int(rels[:, 2].min()) < 1 or int(rels[:, 2].max()) > num_predicates:
            raise DataError(
                f"{where}: relation predicates must be in 1..{num_predicates}, got "
                f"{int(rels[:, 2].min())}..{int(rels[:, 2].max())}"
            )
    return boxes, labels, rels


def _float_images(images: Any) -> list[torch.Tensor]:
    """torchvision-convention images -> list of float ``[3, H, W]`` in 0-1."""
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise DataError(f"images: expected [B,3,H,W] RGB, got {tuple(images.shape)}")
        images = list(images.unbind(0))
    out = []
    for i, im in enumerate(images):
        im = torch.as_tensor(im).as_subclass(torch.Tensor)
        if im.dim() != 3 or im.shape[0] != 3:
            raise DataError(f"images[{i}]: expected [3,H,W] RGB, got {tuple(im.shape)}")
        if im.dtype == torch.uint8:
            im = im.float() / 255.0
        elif im.is_floating_point():
            if im.numel() and float(im.detach().amax()) > FLOAT_IMAGE_MAX:
                raise DataError(
                    f"images[{i}]: a float image has values above {FLOAT_IMAGE_MAX}, but float "
                    "images are 0-1 (torchvision's convention); pass 0-255 pixels as uint8"
                )
            im = im.float()
        else:
            raise DataError(f"images[{i}]: dtype {im.dtype} is not supported (uint8 or float)")
        out.append(im)
    return out


_DETECTIONS = "_relation_model_detections"  # memo key in a cached image's DetectorFeatures.extra


def _top_detections(det: dict[str, Any], k: int) -> dict[str, Any]:
    """The ``k`` highest-scoring detections (every per-detection entry kept aligned)."""
    scores = torch.as_tensor(det["scores"])
    if k <= 0 or len(scores) <= k:
        return det
    keep = scores.argsort(descending=True, stable=True)[:k].sort().values
    n = len(scores)
    return {
        key: v[keep] if isinstance(v, torch.Tensor) and v.dim() and len(v) == n else v
        for key, v in det.items()
    }


class _FrozenDetector:
    """Holds the detector outside the module tree (not in ``state_dict()``, never trained);
    copies of the model (EMA's ``AveragedModel`` deep-copies it) share one detector."""

    def __init__(self) -> None:
        self.adapter: Any = None  # the RelationDetector
        self.module: nn.Module | None = None  # the detector model behind it, if known
        self.cache: DetectorFeatureCache | None = None  # training-time per-image features

    def __deepcopy__(self, memo: dict) -> _FrozenDetector:
        return self


class RelationModel(nn.Module):
    """Frozen detector + relation predictor (see the module docstring for the contract).

    Args:
        options: :class:`RelationOptions` (completed: class counts >= 1; ``roi_channels`` >= 1
            when the predictor uses image features).
        detector: an already loaded detector: a ``RelationDetector`` (``features``,
            ``roi_features``, ``detect``, ``num_classes``, ``out_channels``) or a percepta
            detector module (wrapped with ``relation_detector``). ``None``: loaded from
            ``options.detector_checkpoint`` when first needed.
    """

    def __init__(self, options: RelationOptions, detector: Any = None) -> None:
        super().__init__()
        _check_options(options)
        self.options = options
        self.mode = options.mode
        c, r = int(options.num_object_classes), int(options.num_predicates)
        self.num_object_classes, self.num_predicates = c, r
        self.num_classes = c  # the detection contract's name: labels are 0..num_classes-1
        names = list(options.object_names) or [f"class_{i}" for i in range(c)]
        class_names = ["__background__", *names]
        if _needs_features(options):
            if options.roi_channels < 1:
                raise ConfigError(
                    "model.roi_channels must be >= 1 (0 means: read it from the detector, "
                    "which build_relation_model does)"
                )
            ch, s = int(options.roi_channels), int(options.roi_size)
            self.object_head = RoIFeatureHead(ch, s, options.obj_dim)
            self.union_head = UnionFeatureHead(ch, s, options.pooling_dim)
            self.predictor: nn.Module = MotifsPredictor(
                options.mode,
                class_names,
                r + 1,
                options.obj_dim,
                options.pooling_dim,
                hidden_dim=options.hidden_dim,
                embed_dim=options.embed_dim,
                dropout=options.dropout,
                fusion=options.fusion,
                obj_layers=options.obj_layers,
                edge_layers=options.edge_layers,
                nms_thresh=options.later_nms_thresh,
                glove_path=options.glove_path or None,
            )
        else:
            self.predictor = FreqPredictor(
                options.mode, c + 1, r + 1, nms_thresh=options.later_nms_thresh
            )
        self.sampler = RelationSampler(
            options.mode,
            batch_size_per_image=options.batch_size_per_image,
            positive_fraction=options.positive_fraction,
            fg_iou_threshold=options.fg_iou_threshold,
            require_overlap=options.require_overlap_train,
            num_sample_per_gt_rel=options.num_sample_per_gt_rel,
        )
        self.postprocessor = RelationPostProcessor(
            options.mode, options.later_nms_thresh, label_offset=-1
        )
        self._frozen = _FrozenDetector()
        if detector is not None:
            self.attach_detector(detector)

    # ------------------------------------------------------------------ detector and statistics
    @property
    def inference_inputs(self) -> tuple[str, ...]:
        """Target keys needed at inference: PredCls boxes + labels, SGCls boxes, SGDet none."""
        return _INFERENCE_INPUTS[self.mode]

    def attach_detector(self, detector: Any, module: nn.Module | None = None) -> None:
        """Use ``detector``: a ``RelationDetector`` (``module``: the model behind it, moved to
        this model's device when needed) or a percepta detector module."""
        if not hasattr(detector, "roi_features"):
            from percepta.detection.relation_interface import relation_detector

            module, detector = detector, relation_detector(detector)
        if int(detector.num_classes) != self.num_object_classes:
            raise ConfigError(
                f"model.detector_checkpoint: the detector has {detector.num_classes} classes, "
                f"the relation model {self.num_object_classes} (model.num_object_classes)"
            )
        if (
            _needs_features(self.options)
            and int(detector.out_channels) != self.options.roi_channels
        ):
            raise ConfigError(
                f"model.roi_channels is {self.options.roi_channels} but the detector's RoI "
                f"features have {detector.out_channels} channels"
            )
        if (
            self.mode == "sgcls"
            and not _needs_features(self.options)
            and not hasattr(detector, "classify")
        ):
            raise ConfigError(
                "model.predictor=freq in SGCls needs a detector that classifies given boxes "
                "(its relation interface has no classify())"
            )
        self._frozen.adapter, self._frozen.module = detector, module

    @property
    def detector(self) -> Any:
        """The ``RelationDetector`` (loaded from ``detector_checkpoint`` on first use)."""
        if self._frozen.adapter is None:
            module, det = load_detector(self.options.detector_checkpoint, self._device())
            self.attach_detector(det, module)
        det, module = self._frozen.adapter, self._frozen.module
        if module is not None:
            dev = self._device()
            p = next(module.parameters(), None)
            if p is not None and p.device != dev:
                module.to(dev)
        return det

    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def set_pred_dist(self, pred_dist: Any) -> None:
        """Initialise the frequency bias from ``pred_dist [C+1, C+1, R+1]`` (log frequencies)."""
        shape = (self.num_object_classes + 1,) * 2 + (self.num_predicates + 1,)
        pd = torch.as_tensor(np.asarray(pred_dist), dtype=torch.float32)
        if tuple(pd.shape) != shape:
            raise DataError(
                f"frequency statistics: shape {list(pd.shape)}, expected {list(shape)} "
                "(object classes + background, twice, predicates + background)"
            )
        self.predictor.set_pred_dist(pd)

    def prepare_training(self) -> None:
        """Before training (the engine calls it): load the detector (a missing checkpoint is a
        ConfigError now, not at the first step) and the frequency statistics."""
        if _needs_detector(self.options):
            _ = self.detector
        path = self.options.statistics_file
        if path:
            pred_dist = load_pred_dist(path)
            try:
                self.set_pred_dist(pred_dist)
            except DataError as e:
                raise DataError(f"model.statistics_file {path}: {e}") from None
        elif self.options.predictor == "freq":
            raise ConfigError(
                "model.statistics_file is empty: FREQ predicts from the training statistics "
                "(a .npz with pred_dist, e.g. percepta.data.vg_sgg.statistics_cached's file)"
            )
        else:
            warnings.warn(
                "model.statistics_file is empty: the MOTIFS frequency bias starts from zeros",
                stacklevel=2,
            )

    # ------------------------------------------------------------------------------ features
    def _features(
        self,
        feats: Any,
        boxes: list[torch.Tensor],
        pairs: list[torch.Tensor],
        sizes: list[tuple[int, int]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Object features ``[N, obj_dim]`` and union features ``[P, pooling_dim]``."""
        dev = self._device()
        roi = self._roi_features(feats, boxes).to(dev)
        unions = [union_boxes(b, p) for b, p in zip(boxes, pairs)]
        uroi = self._roi_features(feats, unions).to(dev)
        masks = torch.cat(
            [
                pair_rect_masks(b, p, hw, self.union_head.rect_size)
                for b, p, hw in zip(boxes, pairs, sizes)
            ]
        ).to(dev)
        return self.object_head(roi), self.union_head(uroi, masks)

    def _roi_features(self, feats: Any, boxes: list[torch.Tensor]) -> torch.Tensor:
        """RoI features of ``boxes``; ``feats`` batched, or one per image (the cache's)."""
        det, s = self.detector, self.options.roi_size
        if isinstance(feats, list):
            return torch.cat(
                [det.roi_features(f, [b], output_size=s) for f, b in zip(feats, boxes)]
            )
        return det.roi_features(feats, boxes, output_size=s)

    def _detect(self, feats: Any) -> list[dict[str, torch.Tensor]]:
        """The detector's detections, each image's top ``max_detections`` by score."""
        if isinstance(feats, list):  # per-image features (the cache's): memoise their detections
            dets = []
            for f in feats:
                if _DETECTIONS not in f.extra:
                    f.extra[_DETECTIONS] = self.detector.detect(f)[0]
                dets.append(f.extra[_DETECTIONS])
        else:
            dets = self.detector.detect(feats)
        return [_top_detections(d, self.options.max_detections) for d in dets]

    def _classify_each(self, feats: Any, boxes: list[torch.Tensor]) -> list[Any]:
        fn = self.detector.classify
        if isinstance(feats, list):
            return [fn(f, [b])[0] for f, b in zip(feats, boxes)]
        return list(fn(feats, boxes))

    def _classify(self, feats: Any, boxes: list[torch.Tensor]) -> torch.Tensor | None:
        """Detector logits ``[N, C+1]`` of given boxes, or ``None`` (no ``classify()``)."""
        if getattr(self.detector, "classify", None) is None:
            return None
        logits = self._classify_each(feats, boxes)
        return torch.cat([torch.as_tensor(lg).float() for lg in logits]).to(self._device())

    # ------------------------------------------------------------------------------- forward
    def forward(
        self, images: Any, targets: Sequence[dict[str, Any]] | None = None
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Losses in training mode (``targets`` required); predictions in eval mode
        (``targets``: the :attr:`inference_inputs` of each image)."""
        imgs = _float_images(images)
        if targets is not None and len(targets) != len(imgs):
            raise DataError(f"targets: got {len(targets)} target dicts for {len(imgs)} images")
        if self.training:
            if targets is None:
                raise DataError(
                    "the relation model in training mode needs targets (model.eval() to predict)"
                )
            return self._train_forward(imgs, targets)
        if self.inference_inputs and targets is None:
            raise DataError(
                f"{self.mode} needs {list(self.inference_inputs)} of each image at inference"
            )
        return self._eval_forward(imgs, targets)

    def _run_detector(self, imgs: list[torch.Tensor]) -> Any:
        det = self.detector
        dev = self._device()
        with torch.no_grad():
            return det.features([im.to(dev) for im in imgs])

    def _train_features(self, imgs: list[torch.Tensor], targets: Sequence[dict[str, Any]]) -> Any:
        """Training features: per image through the cache (``feature_cache_mb`` > 0 or a
        ``feature_cache_dir``), else the batched detector call."""
        o = self.options
        if o.feature_cache_mb <= 0 and not o.feature_cache_dir:
            return self._run_detector(imgs)
        if self._frozen.cache is None:
            fingerprint = ""
            if o.feature_cache_dir:
                det = self.detector
                fingerprint = detector_fingerprint(
                    self._frozen.module if self._frozen.module is not None else det
                )
            self._frozen.cache = DetectorFeatureCache(
                o.feature_cache_mb,
                disk_dir=o.feature_cache_dir or None,
                disk_max_mb=o.feature_cache_disk_mb,
                detector_fingerprint=fingerprint,
            )
        dev = self._device()
        ids = [t.get("image_id") if isinstance(t, dict) else None for t in targets]
        return self._frozen.cache.features(self.detector, [im.to(dev) for im in imgs], ids)

    @property
    def feature_cache(self) -> DetectorFeatureCache | None:
        """The training-time detector-feature cache (``None`` before the first step / off)."""
        return self._frozen.cache

    def _zero_losses(self) -> dict[str, torch.Tensor]:
        start = torch.zeros((), device=self._device())
        zero = sum((p.sum() * 0.0 for p in self.parameters() if p.requires_grad), start)
        return {"loss_rel": zero, "loss_refine_obj": zero.clone()}

    def _train_forward(
        self, imgs: list[torch.Tensor], targets: Sequence[dict[str, Any]]
    ) -> dict[str, torch.Tensor]:
        c, r = self.num_object_classes, self.num_predicates
        dev = self._device()
        parsed = [_target_arrays(t, i, c, r) for i, t in enumerate(targets)]
        sizes = [(int(im.shape[1]), int(im.shape[2])) for im in imgs]
        feats = self._train_features(imgs, targets) if _needs_detector(self.options) else None
        det_logits: torch.Tensor | None = None
        if self.mode == "sgdet":
            boxes, labels, det_logits = self._sgdet_proposals(feats, parsed)
        else:
            boxes = [b.to(dev) for b, _, _ in parsed]
            labels = [(lab + 1).to(dev) for _, lab, _ in parsed]
            if self.mode == "sgcls":
                det_logits = self._classify(feats, boxes)
        gt = [
            {"boxes": b.to(dev), "labels": (lab + 1).to(dev), "relations": rel}
            for b, lab, rel in parsed
        ]
        props = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
        samples = self.sampler(props, gt)
        pairs = [s.pairs.to(dev) for s in samples]
        rel_labels = torch.cat([s.labels for s in samples]).to(dev) if samples else None
        n_obj = sum(len(b) for b in boxes)
        if rel_labels is None or not len(rel_labels) or n_obj < 2:
            return self._zero_losses()  # nothing to learn from (BatchNorm needs 2 objects)
        x = u = None
        if _needs_features(self.options):
            x, u = self._features(feats, boxes, pairs, sizes)
        obj_labels = torch.cat(labels)
        out = self.predictor(x, u, boxes, sizes, pairs, labels=obj_labels, det_logits=det_logits)
        o = self.options
        losses = {"loss_rel": o.rel_loss_weight * F.cross_entropy(out.rel_dists, rel_labels)}
        if self.mode == "predcls" or not _needs_features(o):
            losses["loss_refine_obj"] = out.rel_dists.new_zeros(())  # official: CE of +-1000 = 0
        else:
            losses["loss_refine_obj"] = o.obj_loss_weight * F.cross_entropy(
                out.obj_dists, obj_labels
            )
        for key, logits in out.aux_dists.items():
            losses[f"loss_aux_{key}"] = o.aux_loss_weight * F.cross_entropy(logits, rel_labels)
        return losses

    def _sgdet_proposals(
        self, feats: Any, parsed: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """SGDet training objects: detections (+ GT boxes), labelled by their best GT match
        (IoU >= ``fg_iou_threshold``, else 0), with the detector's logits (GT boxes: its
        ``classify`` logits, or uniform)."""
        dev = self._device()
        dets = self._detect(feats)
        boxes, labels, logits = [], [], []
        c1 = self.num_object_classes + 1
        for d, (gb, gl, _) in zip(dets, parsed):
            b = torch.as_tensor(d["boxes"]).float().to(dev).reshape(-1, 4)
            lg = torch.as_tensor(d["class_logits"]).float().to(dev).reshape(-1, c1)
            if self.options.add_gt_boxes and len(gb):
                b = torch.cat([b, gb.to(dev)])
                lg = torch.cat([lg, torch.zeros(len(gb), c1, device=dev)])
            lab = torch.zeros(len(b), dtype=torch.long, device=dev)
            if len(gb) and len(b):
                iou = box_iou_vg(b, gb.to(dev))
                best, idx = iou.max(1)
                lab = torch.where(best >= self.options.fg_iou_threshold, gl.to(dev)[idx] + 1, lab)
            boxes.append(b)
            labels.append(lab)
            logits.append(lg)
        if self.options.add_gt_boxes and hasattr(self.detector, "classify"):
            cls = self._classify_each(feats, [gb.to(dev) for gb, _, _ in parsed])
            for i, (gb, _, _) in enumerate(parsed):
                if len(gb):
                    logits[i][-len(gb) :] = torch.as_tensor(cls[i]).float().to(dev)
        return boxes, labels, torch.cat(logits) if logits else torch.zeros(0, c1, device=dev)

    @torch.no_grad()
    def _eval_forward(
        self, imgs: list[torch.Tensor], inputs: Sequence[dict[str, Any]] | None
    ) -> list[dict[str, torch.Tensor]]:
        c = self.num_object_classes
        dev = self._device()
        sizes = [(int(im.shape[1]), int(im.shape[2])) for im in imgs]
        feats = self._run_detector(imgs) if _needs_detector(self.options) else None
        labels = None
        det_logits = None
        boxes_per_cls = None
        if self.mode == "sgdet":
            dets = self._detect(feats)
            boxes = [torch.as_tensor(d["boxes"]).float().to(dev).reshape(-1, 4) for d in dets]
            det_logits = torch.cat(
                [
                    torch.as_tensor(d["class_logits"]).float().to(dev).reshape(-1, c + 1)
                    for d in dets
                ]
            )
            boxes_per_cls = [
                torch.as_tensor(d["boxes_per_cls"]).float().to(dev)
                if d.get("boxes_per_cls") is not None
                else b[:, None, :].expand(len(b), c + 1, 4)
                for d, b in zip(dets, boxes)
            ]
        else:
            assert inputs is not None
            boxes = []
            lab_list = []
            for i, t in enumerate(inputs):
                where = f"image {t.get('image_id', i)!r}" if isinstance(t, dict) else f"inputs[{i}]"
                missing = [
                    k for k in self.inference_inputs if not isinstance(t, dict) or k not in t
                ]
                if missing:
                    raise DataError(f"{where}: {self.mode} needs {missing} at inference")
                b = torch.as_tensor(t["boxes"]).as_subclass(torch.Tensor).float().reshape(-1, 4)
                if not torch.isfinite(b).all():
                    raise DataError(f"{where}: boxes contain NaN or inf")
                boxes.append(b.to(dev))
                if self.mode == "predcls":
                    lab = torch.as_tensor(t["labels"]).as_subclass(torch.Tensor).long().reshape(-1)
                    if len(lab) != len(b) or (len(lab) and (lab.min() < 0 or lab.max() >= c)):
                        raise DataError(
                            f"{where}: labels must be [N] in 0..{c - 1} for the N={len(b)} boxes"
                        )
                    lab_list.append(lab.to(dev) + 1)
            if self.mode == "predcls":
                labels = torch.cat(lab_list) if lab_list else None
            else:
                det_logits = self._classify(feats, boxes)
        pairs = [
            prepare_test_pairs(b, self.mode, self.options.require_overlap_test)
            if len(b)
            else torch.zeros(0, 2, dtype=torch.long, device=dev)
            for b in boxes
        ]
        x = u = None
        if _needs_features(self.options):
            x, u = self._features(feats, boxes, pairs, sizes)
        if labels is None and self.mode == "predcls":
            labels = torch.zeros(0, dtype=torch.long, device=dev)
        out = self.predictor(
            x,
            u,
            boxes,
            sizes,
            pairs,
            labels=labels,
            det_logits=det_logits,
            boxes_per_cls=boxes_per_cls,
        )
        counts = [len(b) for b in boxes]
        obj_list = list(out.obj_dists.split(counts))
        rel_list = list(out.rel_dists.split([len(p) for p in pairs]))
        geometry = boxes_per_cls if self.mode == "sgdet" else boxes
        return self.postprocessor(rel_list, obj_list, pairs, geometry)


@MODELS.register(
    "relation",
    options=RelationOptions,
    task="scene_graph",
    resolve=lambda cfg, facts: resolve_relation_options(cfg, facts),
    help="scene graphs: frozen percepta detector + MOTIFS / FREQ relation predictor",
)
def build_relation_model(cfg: RelationOptions) -> RelationModel:
    """Relation model (PredCls / SGCls / SGDet) on a frozen percepta detector."""
    cfg = resolve_relation_options(cfg, None)
    _check_options(cfg)
    module = detector = None
    if _needs_features(cfg) and cfg.roi_channels < 1:
        module, detector = load_detector(cfg.detector_checkpoint)
        cfg = dataclasses.replace(cfg, roi_channels=int(detector.out_channels))
    model = RelationModel(cfg)
    if detector is not None:
        model.attach_detector(detector, module)
    model.config = cfg
    return model
