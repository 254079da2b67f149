"""Faster R-CNN with FPN (Ren et al. 2015; Lin et al. 2017) as a percepta detector.

The network is torchvision's own ``torchvision.models.detection.FasterRCNN`` (RPN, RoI heads,
box coder, ``GeneralizedRCNNTransform`` resize + ImageNet normalisation): nothing of it is
re-implemented here. This module only

* builds its FPN backbone from a timm model (``features_only=True`` + torchvision's
  ``FeaturePyramidNetwork`` with ``LastLevelMaxPool``) or a torchvision ResNet
  (``"torchvision:resnet50"``, ``BackboneWithFPN``, as ``resnet_fpn_backbone`` does), random
  or from a **local** weights file (``pretrained`` / ``pretrained_path`` exactly as CenterNet's
  backbone, :mod:`.backbones`; ``weights=None`` always, nothing downloads). As in torchvision,
  a pretrained backbone gets frozen batch norm and ``trainable_layers=3`` by default, a random
  one trainable batch norm and all 5 stages trainable;
* translates percepta's conventions **once, at the boundary** (:meth:`FasterRCNN.forward`):
  percepta labels are ``0..C-1``, torchvision's are ``1..C`` with ``0`` = background, so targets
  get ``+1`` going in and predictions ``-1`` coming out; images follow torchvision's rule
  (``uint8`` 0-255 or float 0-1), ``uint8`` is divided by 255 here.

Model contract (the same as :class:`~.centernet.CenterNet`'s, so the evaluator, ``percepta
eval``/``predict`` and the demo work unchanged):

* ``model(images, targets)`` in training mode -> torchvision's four losses
  ``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg`` (the engine
  sums the ``loss*`` terms). Images without objects train: both box-regression terms are then
  exactly 0. Degenerate boxes (zero width or height) are dropped, as CenterNet's targets skip
  them; ``ignore_boxes`` (crowd regions) are not used (torchvision's references drop crowd
  annotations too, so those regions count as background).
* ``model(images)`` in eval mode -> one dict per image: ``boxes [K,4]`` XYXY in original-image
  pixels (clipped to the image), ``scores [K]`` (softmax; sigmoid with ``cls_loss``),
  ``labels [K]`` int64 in ``0..C-1``, ``scores > box_score_thresh``, per-class NMS,
  ``K <= box_detections_per_img``.
* ``images``: ``[B,3,H,W]`` or a list of ``[3,H,W]`` of any sizes; each is resized by
  torchvision's transform (shorter side to ``min_size``, longer side at most ``max_size``).

The option names of the RPN and box heads are torchvision's own keyword arguments.

**RS-R-CNN** (Oksuz et al., ICCV 2021): ``cls_loss: {name: rank_sort}`` (or ``ap_loss`` /
``alrp``) trains the RPN and the RoI head with that ranking loss, no samplers, GIoU box losses
and the balancing of ``ranking:`` (:mod:`.rs_rcnn`); the losses are then ``loss_rpn_*`` and
``loss_roi_*`` (RS: ``rank``, ``sort``, ``box``) and eval scores are sigmoids. Without
``cls_loss`` the model is torchvision's, unchanged.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN as _TorchvisionFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from percepta.detection.backbones import _check_coverage, _check_path, load_torchvision_weights
from percepta.detection.centernet import IMAGENET_MEAN, IMAGENET_STD, _check_float_range
from percepta.errors import ConfigError, DataError, PerceptaError
from percepta.losses.ranking_objective import RankingBalanceConfig, build_ranking_objective
from percepta.registry import MODELS, suggest

__all__ = [
    "FasterRCNNConfig",
    "FasterRCNN",
    "build_faster_rcnn",
    "build_fpn_backbone",
    "TimmFPN",
    "to_unit_float",
    "to_torchvision_targets",
]

_TV_PREFIX = "torchvision:"
_TV_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
# torchvision's stage names from the top, as its _resnet_fpn_extractor freezes them
_STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")


@dataclass
class FasterRCNNConfig:
    """Options of the Faster R-CNN detector (``model:`` section, ``name: faster_rcnn``)."""

    name: str = "faster_rcnn"
    backbone: str = "resnet50"  # timm name, or "torchvision:resnet18|34|50|101|152"
    pretrained: bool = False  # load backbone weights from pretrained_path (never downloads)
    pretrained_path: str = ""  # local weights file for the backbone
    trainable_layers: int = -1  # backbone stages trained (0-5); -1: 3 if pretrained else 5
    num_levels: int = 4  # backbone stages fed to the FPN (the last ones; 4 = strides 4..32)
    fpn_channels: int = 256
    representation_size: int = 1024  # width of the box head's two fully connected layers
    num_classes: int = 0  # 0 = taken from the dataset
    class_names: list[str] = field(default_factory=list)  # [] = taken from the dataset
    category_ids: list[int] = field(default_factory=list)  # [] = taken from the dataset
    min_size: int = 800  # torchvision's transform: shorter side resized to this ...
    max_size: int = 1333  # ... unless the longer side would exceed this
    # one anchor size per FPN level (num_levels backbone levels + the max-pool level)
    anchor_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    # ranking-loss training of both heads (RS-R-CNN, :mod:`.rs_rcnn`): empty = torchvision's
    # cross-entropy + samplers; {name: rank_sort | ap_loss | alrp, ...} = that loss's options
    cls_loss: Any = field(default=None, metadata={"component": "losses"})
    ranking: RankingBalanceConfig = field(default_factory=RankingBalanceConfig)
    rpn_head_weight: float = 0.2  # all RPN terms times this (official RS); only with cls_loss


# ------------------------------------------------------------------------------- backbones
class TimmFPN(nn.Module):
    """A timm ``features_only`` model followed by torchvision's ``FeaturePyramidNetwork``.

    ``forward`` returns the ``OrderedDict`` torchvision's detection heads take: keys
    ``"0".."{n-1}"`` (strides of the backbone levels) and ``"pool"``; ``out_channels`` is set.
    """

    def __init__(self, body: nn.Module, fpn_channels: int) -> None:
        super().__init__()
        self.body = body
        channels = list(body.feature_info.channels())
        self.fpn = FeaturePyramidNetwork(channels, fpn_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = int(fpn_channels)
        self.level_names = [str(i) for i in range(len(channels))] + ["pool"]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def _freeze_stages(module: nn.Module, trainable_layers: int, name: str) -> None:
    """torchvision's rule (``_resnet_fpn_extractor``): train the top ``trainable_layers`` of
    ``layer4, layer3, layer2, layer1, conv1`` (+ ``bn1`` with all 5); freeze the rest."""
    if trainable_layers >= 5:
        return
    train = list(_STAGES[:trainable_layers])
    params = list(module.named_parameters())
    if not any(n.startswith(s) for n, _ in params for s in _STAGES):
        raise ConfigError(
            f"model.trainable_layers={trainable_layers}: backbone {name!r} has no ResNet stages "
            "(conv1, layer1..layer4) to freeze; use trainable_layers=5 with this backbone"
        )
    for n, p in params:
        if not any(n.startswith(s) for s in train):
            p.requires_grad_(False)


def _torchvision_resnet(arch: str, pretrained: bool, path: str) -> nn.Module:
    """A torchvision ResNet (``weights=None``), frozen BN and local weights when pretrained
    (the file is a torchvision ``state_dict``; classifier keys ignored, all others must fit)."""
    norm = FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    net = getattr(torchvision.models, arch)(weights=None, norm_layer=norm)
    if pretrained:
        load_torchvision_weights(net, path, arch)
    return net


def build_fpn_backbone(
    name: str,
    pretrained: bool = False,
    pretrained_path: str = "",
    trainable_layers: int = -1,
    fpn_channels: int = 256,
    num_levels: int = 4,
) -> nn.Module:
    """An FPN backbone for torchvision's detection heads (see the module docstring).

    Args:
        name: a timm model name or ``"torchvision:resnet18|34|50|101|152"``.
        pretrained, pretrained_path: load local backbone weights (never downloads).
        trainable_layers: 0-5 stages trained from the top; -1 = 3 if pretrained else 5.
        fpn_channels: FPN width (``out_channels`` of every level).
        num_levels: the last ``num_levels`` backbone stages feed the FPN (plus a max-pool level).

    Returns:
        A module mapping normalised ``[B,3,H,W]`` to an ``OrderedDict`` of ``num_levels + 1``
        maps with ``out_channels`` set.
    """
    _check_path(pretrained, pretrained_path, name)
    if trainable_layers == -1:
        trainable_layers = 3 if pretrained else 5
    if not 0 <= trainable_layers <= 5:
        raise ConfigError(f"model.trainable_layers must be -1 or 0..5, got {trainable_layers}")
    if fpn_channels < 1:
        raise ConfigError(f"model.fpn_channels must be >= 1, got {fpn_channels}")
    if name.startswith(_TV_PREFIX):
        arch = name[len(_TV_PREFIX) :]
        if arch not in _TV_RESNETS:
            raise ConfigError(
                f"model.backbone: unsupported torchvision backbone {arch!r}."
                f"{suggest(arch, _TV_RESNETS)} Supported: {', '.join(_TV_RESNETS)}"
            )
        if not 1 <= num_levels <= 4:
            raise ConfigError(f"model.num_levels must be 1..4 for ResNets, got {num_levels}")
        net = _torchvision_resnet(arch, pretrained, pretrained_path)
        _freeze_stages(net, trainable_layers, name)
        returned = list(range(5 - num_levels, 5))
        stage2 = net.inplanes // 8  # as torchvision's _resnet_fpn_extractor
        fpn = BackboneWithFPN(
            net,
            return_layers={f"layer{k}": str(i) for i, k in enumerate(returned)},
            in_channels_list=[stage2 * 2 ** (k - 1) for k in returned],
            out_channels=fpn_channels,
            extra_blocks=LastLevelMaxPool(),
        )
        fpn.level_names = [str(i) for i in range(num_levels)] + ["pool"]
        return fpn
    if not timm.is_model(name):
        raise ConfigError(
            f"model.backbone: unknown timm model {name!r}.{suggest(name, timm.list_models())}"
        )
    if num_levels < 1:
        raise ConfigError(f"model.num_levels must be >= 1, got {num_levels}")
    kwargs: dict[str, Any] = {"features_only": True, "out_indices": tuple(range(-num_levels, 0))}
    if pretrained:
        kwargs["pretrained_cfg_overlay"] = {"file": os.fspath(pretrained_path)}
    try:
        body = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (RuntimeError, OSError, KeyError, ValueError, IndexError) as e:
        where = f" from {pretrained_path}" if pretrained else ""
        raise PerceptaError(f"model.backbone {name!r}: cannot build{where}: {e}") from e
    if pretrained:
        _check_coverage(body, pretrained_path, name)
        body = timm.layers.freeze_batch_norm_2d(body)  # torchvision's choice for trained weights
    _freeze_stages(body, trainable_layers, name)
    return TimmFPN(body, fpn_channels)


def _level_names(backbone: nn.Module) -> list[str]:
    """The keys of the backbone's output maps: its ``level_names``, else read from one
    eval-mode forward of a small zero image (batch-norm statistics untouched)."""
    names = getattr(backbone, "level_names", None)
    if names:
        return [str(n) for n in names]
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            return [str(k) for k in backbone(torch.zeros(1, 3, 64, 64))]
    finally:
        backbone.train(was_training)


# ------------------------------------------------------------------------------- conventions
def to_unit_float(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """torchvision's image convention -> a list of float ``[3,H,W]`` in 0-1.

    ``uint8`` is divided by 255; floats are taken as 0-1 (a float image above
    :data:`~.centernet.FLOAT_IMAGE_MAX` raises ``DataError``, as for CenterNet).
    """
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise DataError(f"images: expected [B,3,H,W] RGB, got {tuple(images.shape)}")
        images = list(images.unbind(0))
    images = list(images)
    if not images:
        raise DataError("images: empty batch")
    for i, im in enumerate(images):
        if not isinstance(im, torch.Tensor) or im.dim() != 3 or im.shape[0] != 3:
            shape = tuple(im.shape) if isinstance(im, torch.Tensor) else type(im).__name__
            raise DataError(f"images[{i}]: expected [3,H,W] RGB, got {shape}")
    _check_float_range(images)
    return [
        im.as_subclass(torch.Tensor).float() / 255.0
        if im.dtype == torch.uint8
        else im.as_subclass(torch.Tensor).float()
        for im in images
    ]


def to_torchvision_targets(
    targets: Sequence[dict[str, Any]], num_classes: int, n_images: int, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """percepta targets (labels ``0..C-1``) -> torchvision's (labels ``1..C``, 0 = background).

    Boxes become plain float32 tensors; boxes of zero width or height are dropped (CenterNet's
    targets skip them too; torchvision would raise). Malformed targets raise ``DataError``
    naming the image.
    """
    if len(targets) != n_images:
        raise DataError(f"targets: got {len(targets)} target dicts for {n_images} images")
    out = []
    for i, t in enumerate(targets):
        where = (
            f"target of image {t.get('image_id', i)!r}" if isinstance(t, dict) else f"targets[{i}]"
        )
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise DataError(f"{where}: expected a dict with 'boxes' and 'labels'")
        b = torch.as_tensor(t["boxes"]).as_subclass(torch.Tensor).to(device, torch.float32)
        lab = torch.as_tensor(t["labels"]).as_subclass(torch.Tensor).to(device, torch.int64)
        if b.numel() == 0:
            b = b.reshape(0, 4)
        if b.dim() != 2 or b.shape[1] != 4 or lab.dim() != 1 or lab.shape[0] != b.shape[0]:
            raise DataError(
                f"{where}: boxes must be [N,4] and labels [N], got "
                f"{tuple(b.shape)} and {tuple(lab.shape)}"
            )
        if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
            raise DataError(
                f"{where}: labels must be in 0..{num_classes - 1}, got "
                f"{lab.min().item()}..{lab.max().item()}"
            )
        if not torch.isfinite(b).all():
            raise DataError(f"{where}: boxes contain NaN or inf")
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        out.append({"boxes": b[keep], "labels": lab[keep] + 1})
    return out


# ------------------------------------------------------------------------------- the model
class FasterRCNN(nn.Module):
    """torchvision's Faster R-CNN behind percepta's detector contract (module docstring).

    Args:
        backbone: an FPN backbone (:func:`build_fpn_backbone`): normalised images -> an
            ``OrderedDict`` of maps, ``out_channels`` set; its keys name the levels (the last
            one, ``"pool"``, is not pooled by the RoI heads, as in torchvision).
        num_classes: C foreground classes (>= 1); torchvision's head gets C + 1.
        class_names: optional names (length C).
        anchor_sizes, aspect_ratios: one anchor size per backbone level, shared ratios.
        representation_size: the box head's width (``TwoMLPHead``).
        cls_loss: empty: torchvision's losses; a ranking loss's options (``{"name":
            "rank_sort"}``...): RS-R-CNN (:mod:`.rs_rcnn`), both heads trained with it.
        ranking: :class:`~percepta.losses.ranking_objective.RankingBalanceConfig` (or a dict).
        rpn_head_weight: with ``cls_loss``, every RPN term is multiplied by it.
        **kwargs: torchvision ``FasterRCNN`` keyword arguments (``min_size``, ``rpn_*``,
            ``box_*``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        class_names: Sequence[str] = (),
        *,
        anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        representation_size: int = 1024,
        cls_loss: Any = None,
        ranking: RankingBalanceConfig | dict | None = None,
        rpn_head_weight: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"model.num_classes must be >= 1, got {num_classes}")
        if class_names and len(class_names) != num_classes:
            raise ConfigError(
                f"model.class_names has {len(class_names)} names but num_classes is {num_classes}"
            )
        levels = _level_names(backbone)
        if len(anchor_sizes) != len(levels):
            raise ConfigError(
                f"model.anchor_sizes has {len(anchor_sizes)} sizes for the backbone's "
                f"{len(levels)} FPN levels ({', '.join(levels)}): give one size per level"
            )
        if min(anchor_sizes) <= 0 or not aspect_ratios or min(aspect_ratios) <= 0:
            raise ConfigError("model.anchor_sizes and model.aspect_ratios must be positive")
        if representation_size < 1:
            raise ConfigError(f"model.representation_size must be >= 1, got {representation_size}")
        anchors = AnchorGenerator(
            tuple((int(s),) for s in anchor_sizes),
            tuple(tuple(float(a) for a in aspect_ratios) for _ in anchor_sizes),
        )
        pooled = [k for k in levels if k != "pool"]
        roi_pool = MultiScaleRoIAlign(featmap_names=pooled, output_size=7, sampling_ratio=2)
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

        box_head = TwoMLPHead(backbone.out_channels * 7 * 7, int(representation_size))
        rpn_objective = build_ranking_objective(cls_loss, ranking, prefix="rpn_")
        if rpn_objective is not None and rpn_objective.per_class:
            raise ConfigError(
                "model.ranking.per_class: RS-R-CNN ranks one vector (the RPN has one class); "
                "per-class ranking is a CenterNet option (set per_class: false)"
            )
        if rpn_objective is None:
            predictor = FastRCNNPredictor(int(representation_size), num_classes + 1)
        else:
            from percepta.detection.rs_rcnn import RankBasedPredictor

            if not rpn_head_weight >= 0:
                raise ConfigError(f"model.rpn_head_weight must be >= 0, got {rpn_head_weight}")
            predictor = RankBasedPredictor(int(representation_size), num_classes)
        try:
            self.net = _TorchvisionFasterRCNN(
                backbone,
                num_classes=None,
                rpn_anchor_generator=anchors,
                box_roi_pool=roi_pool,
                box_head=box_head,
                box_predictor=predictor,
                image_mean=list(IMAGENET_MEAN),
                image_std=list(IMAGENET_STD),
                **kwargs,
            )
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model: invalid Faster R-CNN option: {e}") from None
        if rpn_objective is not None:
            self._use_ranking_heads(rpn_objective, cls_loss, ranking, rpn_head_weight)
        self.num_classes = int(num_classes)
        self.class_names = list(class_names)

    def _use_ranking_heads(
        self, rpn_objective: nn.Module, cls_loss: Any, ranking: Any, rpn_head_weight: float
    ) -> None:
        """Swap torchvision's RPN and RoI heads for the RS-R-CNN ones (same modules inside)."""
        from percepta.detection.rs_rcnn import RankBasedRoIHeads, RankBasedRPN

        roi_objective = build_ranking_objective(cls_loss, ranking, prefix="roi_")
        net = self.net
        net.rpn = RankBasedRPN.from_rpn(net.rpn, rpn_objective, rpn_head_weight)
        heads = net.roi_heads
        net.roi_heads = RankBasedRoIHeads.from_roi_heads(heads, heads.box_predictor, roi_objective)

    @property
    def sigmoid_classifier(self) -> bool:
        """Whether the box head scores classes with sigmoids (RS-R-CNN), not a softmax."""
        return hasattr(self.net.roi_heads.box_predictor, "class_probabilities")

    def class_probabilities(self, class_logits: torch.Tensor) -> torch.Tensor:
        """The box head's ``[R, C+1]`` logits -> the class scores the model's detections use:
        softmax (column 0 background) for cross-entropy models; for RS-R-CNN 0 in column 0 and
        the C sigmoids after (:meth:`.rs_rcnn.RankBasedPredictor.class_probabilities`)."""
        if self.sigmoid_classifier:
            return self.net.roi_heads.box_predictor.class_probabilities(class_logits)
        return torch.softmax(class_logits, -1)

    @property
    def backbone(self) -> nn.Module:
        return self.net.backbone

    def relation_interface(self) -> Any:
        """This detector as a :class:`~.relation_interface.RelationDetector` (frozen, eval)."""
        from percepta.detection.relation_interface import FasterRCNNRelationAdapter

        return FasterRCNNRelationAdapter(self)

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        targets: Sequence[dict[str, Any]] | None = None,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Losses in training mode (``targets`` required); predictions in eval mode."""
        ims = to_unit_float(images)
        if self.training:
            if targets is None:
                raise DataError(
                    "Faster R-CNN in training mode needs targets (model.eval() to predict)"
                )
            device = ims[0].device
            tv_targets = to_torchvision_targets(targets, self.num_classes, len(ims), device)
            return dict(self.net(ims, tv_targets))
        return self.to_percepta(self.net(ims), [tuple(im.shape[-2:]) for im in ims])

    @staticmethod
    def to_percepta(
        detections: Sequence[dict[str, torch.Tensor]], sizes: Sequence[tuple[int, int]]
    ) -> list[dict[str, torch.Tensor]]:
        """torchvision detections (labels 1..C) -> percepta's (0..C-1, boxes clipped to the
        original ``(H, W)``: the transform clips at the resized size, and scaling back may
        overshoot by a rounding error)."""
        out = []
        for d, (h, w) in zip(detections, sizes):
            boxes = d["boxes"].clone()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            out.append({"boxes": boxes, "scores": d["scores"], "labels": d["labels"] - 1})
        return out


@MODELS.register("faster_rcnn", options=FasterRCNNConfig, task="detection")
def build_faster_rcnn(cfg: FasterRCNNConfig) -> FasterRCNN:
    """Faster R-CNN + FPN (torchvision's), on a timm or torchvision backbone."""
    if cfg.num_classes < 1:
        raise ConfigError(
            f"model.num_classes must be >= 1 (got {cfg.num_classes}); it is filled from the "
            "dataset's classes when the model is built together with a dataset"
        )
    if cfg.min_size < 1 or cfg.max_size < cfg.min_size:
        raise ConfigError(
            f"model.min_size={cfg.min_size} and model.max_size={cfg.max_size}: need "
            "1 <= min_size <= max_size"
        )
    backbone = build_fpn_backbone(
        cfg.backbone,
        cfg.pretrained,
        cfg.pretrained_path,
        cfg.trainable_layers,
        cfg.fpn_channels,
        cfg.num_levels,
    )
    tv_kwargs = {
        k: getattr(cfg, k)
        for k in (
            "min_size",
            "max_size",
            "rpn_pre_nms_top_n_train",
            "rpn_pre_nms_top_n_test",
            "rpn_post_nms_top_n_train",
            "rpn_post_nms_top_n_test",
            "rpn_nms_thresh",
            "rpn_fg_iou_thresh",
            "rpn_bg_iou_thresh",
            "rpn_batch_size_per_image",
            "rpn_positive_fraction",
            "rpn_score_thresh",
            "box_fg_iou_thresh",
            "box_bg_iou_thresh",
            "box_batch_size_per_image",
            "box_positive_fraction",
            "box_score_thresh",
            "box_nms_thresh",
            "box_detections_per_img",
        )
    }
    model = FasterRCNN(
        backbone,
        cfg.num_classes,
        list(cfg.class_names),
        anchor_sizes=list(cfg.anchor_sizes),
        aspect_ratios=list(cfg.aspect_ratios),
        representation_size=cfg.representation_size,
        cls_loss=cfg.cls_loss,
        ranking=cfg.ranking,
        rpn_head_weight=cfg.rpn_head_weight,
        **tv_kwargs,
    )
    model.config = cfg
    return model
