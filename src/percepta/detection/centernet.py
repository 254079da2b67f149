"""CenterNet ("Objects as Points", Zhou et al. 2019) with centerX's choices, torchvision-style.

Architecture (centerX, CPFLAME/centerX 10737535): timm/torchvision backbone (last stage, stride
32) -> three up-sampling stages (:mod:`.centernet_layers`) -> ``cls``/``wh``/``reg`` heads on the
stride-4 map. Targets (:mod:`.centernet_targets`), losses (:mod:`percepta.losses.focal`) and
decoding (:mod:`.centernet_decode`) reproduce the official CenterNet code exactly.

Model contract (torchvision style):

* ``model(images, targets)`` in training mode -> ``{"loss_heatmap", "loss_wh", "loss_offset"}``
  (already multiplied by ``hm_weight``/``wh_weight``/``off_weight``) plus ``"num_objects"``
  (logged, not a loss); with a ranking ``cls_loss`` (RS-CenterNet, :mod:`.centernet_rs`) the
  ranking objective's terms instead of the three (``loss_rank``, ``loss_sort``, ``loss_box``
  for ``rank_sort``); with an attached distiller (:mod:`.distill`) also the
  ``loss_kd_*_<teacher>`` terms, or only those when distilling without labels.
* ``model(images)`` in eval mode -> one dict per image: ``boxes [K,4]`` XYXY, ``scores [K]``,
  ``labels [K]`` (int64, 0..C-1) in original-image pixels, ``scores > score_threshold``,
  ``K <= top_k``.
* ``images``: RGB ``[B,3,H,W]`` or a list of ``[3,H,W]`` of any sizes, in torchvision's
  convention: ``uint8`` in 0-255, or floating point in 0-1 (``torchvision.io.decode_image(...)``
  and ``transforms.v2.ToDtype(torch.float32, scale=True)`` give these). Floats are multiplied by
  255 in :meth:`CenterNet.preprocess`, so ``img`` and ``img / 255`` give the same predictions;
  a float image with values above :data:`FLOAT_IMAGE_MAX` is refused (it is 0-255 data passed as
  float: pass it as ``uint8`` or divide it by 255). Each image is letterboxed into
  ``input_size x input_size``: resized keeping its aspect ratio by ``scale = min(S/H, S/W)``
  (not resized when it already is ``S x S``) and zero-padded at the bottom/right. Training
  boxes are scaled by the same factor; predictions are mapped back by ``x * stride / scale``
  and clipped to the image. Normalisation (ImageNet mean/std, stored as
  buffers, in 0-255 units) happens inside :meth:`CenterNet.forward_heads`, which takes the
  letterboxed float canvas in 0-255; the exported ONNX graph takes the letterboxed canvas as
  float32 in 0-1 (see :mod:`percepta.export.onnx`).

The exporter reuses :meth:`CenterNet.preprocess`, :meth:`CenterNet.forward_heads`,
:func:`decode` and :meth:`CenterNet.postprocess`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from percepta.detection.backbones import build_backbone
from percepta.detection.centernet_decode import decode
from percepta.detection.centernet_layers import CenterNetHead, CenterNetNeck
from percepta.detection.centernet_rs import centernet_ranking_losses, check_box_loss
from percepta.detection.centernet_targets import RADIUS_FORMULAS, build_targets
from percepta.errors import ConfigError, DataError, PerceptaError
from percepta.losses.distill import DistillConfig
from percepta.losses.focal import gather_slots, penalty_reduced_focal_loss, reg_l1_loss
from percepta.losses.ranking_objective import RankingBalanceConfig, build_ranking_objective
from percepta.registry import MODELS

__all__ = [
    "CenterNetConfig",
    "CenterNet",
    "build_centernet",
    "decode",
    "as_pixels",
    "FLOAT_IMAGE_MAX",
    "time_train_step_breakdown",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# A float image is 0-1 (torchvision's convention). Resampling (e.g. bicubic) may overshoot 1 a
# little; anything above this is 0-255 data passed as float, and is refused rather than scaled.
FLOAT_IMAGE_MAX = 1.5


@dataclass
class CenterNetConfig:
    """Options of the CenterNet detector (``model:`` section, ``name: centernet``)."""

    name: str = "centernet"
    backbone: str = "resnet18"  # timm name, or "torchvision:resnet18|34|50|101|152"
    pretrained: bool = False  # load backbone weights from pretrained_path (never downloads)
    pretrained_path: str = ""  # local weights file for the backbone
    output_stride: int = (
        32  # 16/8: dilated last stage(s) (timm backbones); use one neck stage less per halving
    )
    # timm feature stage the neck reads (-1 = last; 3 = ResNet layer3 at stride 16: layer4's
    # compute is skipped, ~1.5x faster training at 128 px)
    backbone_out_index: int = -1
    num_classes: int = 0  # 0 = taken from the dataset
    class_names: list[str] = field(default_factory=list)  # [] = taken from the dataset
    category_ids: list[int] = field(
        default_factory=list
    )  # dataset category id per label; [] = from the dataset
    input_size: int = (
        512  # square letterbox canvas, a multiple of the backbone stride (32, or output_stride)
    )
    neck_channels: list[int] = field(default_factory=lambda: [256, 128, 64])
    head_conv: int = 64
    deform: bool = False  # modulated deformable 3x3 convs in the neck (not ONNX-exportable)
    cat_spec_wh: bool = False  # class-specific size channels (2C)
    radius_formula: str = "centerx"  # "centerx" (corrected) or "centernet" (original, buggy)
    min_overlap: float = 0.3  # centerX 0.3; CenterNet's formula is meant for 0.7
    max_objs: int = 128
    hm_weight: float = 1.0
    wh_weight: float = 0.1
    off_weight: float = 1.0
    norm_wh: bool = False  # centerX: size L1 relative to the target's mean side
    channels_last: bool = False  # NHWC activations: ~20% faster convolutions on CPU (oneDNN)
    score_threshold: float = 0.01
    top_k: int = 100
    # knowledge distillation from frozen teachers (training only; :mod:`.distill`)
    distill: DistillConfig = field(default_factory=DistillConfig)
    # heat-map classification loss: None = the penalty-reduced focal loss; a ranking loss section
    # ({name: rank_sort | ap_loss | alrp, ...}) = RS-CenterNet (:mod:`.centernet_rs`)
    cls_loss: Any = field(default=None, metadata={"component": "losses"})
    # with a ranking cls_loss: score weighting, task balancing, IoU-target floor. min_iou 0.05
    # (official 0): the untrained size head predicts empty boxes, whose IoU 0 would make every
    # object a negative and leave no gradient at all (:mod:`.centernet_rs`)
    ranking: RankingBalanceConfig = field(
        default_factory=lambda: RankingBalanceConfig(min_iou=0.05)
    )
    # with a ranking cls_loss: each positive's box loss, "l1" (CenterNet's size + offset L1
    # terms, wh_weight : off_weight) or "giou" (1 - GIoU of the decoded box, plus those L1 terms)
    rs_box_loss: str = "l1"
    # with a ranking cls_loss: ignore (target -1) the cells within this many cells of a peak in
    # its class channel (1 = the 3x3 window the decode's peak NMS compares); 0 = negatives
    rs_ignore_radius: int = 0
    # ... and the cells whose Gaussian target heat is >= this (0 = off)
    rs_ignore_heat: float = 0.0
    # ... positives: the cells within this many cells of each object's centre (0 = the centre
    # cell only), each predicting the object's box from where it is, ranked by its IoU
    rs_positive_radius: int = 0


def _check_float_range(images: Sequence[torch.Tensor]) -> None:
    """Refuse float images that hold 0-255 data (one device sync for the whole batch)."""
    floats = [im for im in images if im.is_floating_point() and im.numel()]
    bad = [im for im in images if im.dtype != torch.uint8 and not im.is_floating_point()]
    if bad:
        raise DataError(
            f"images: dtype {bad[0].dtype} is not supported; pass uint8 (0-255) or "
            "float (0-1) images, as torchvision does"
        )
    if not floats:
        return
    top = float(torch.stack([im.detach().amax().float() for im in floats]).max())
    if top > FLOAT_IMAGE_MAX:
        raise DataError(
            f"images: a float image has values up to {top:.4g}, but float images are 0-1 "
            "(torchvision's convention); pass 0-255 pixels as uint8, or divide them by 255"
        )


def as_pixels(images: torch.Tensor, check: bool = True) -> torch.Tensor:
    """torchvision's image convention -> float32 in 0-255 (the canvas ``forward_heads`` takes).

    ``uint8`` is taken as 0-255 and cast; floating point is taken as 0-1 and multiplied by 255
    (as ``transforms.v2.ToDtype(torch.uint8, scale=True)`` would, without the rounding). With
    ``check`` (default) a float image above :data:`FLOAT_IMAGE_MAX` raises ``DataError``.
    """
    if check:
        _check_float_range([images])
    if images.is_floating_point():
        return images.float() * 255.0
    return images.float()


class CenterNet(nn.Module):
    """CenterNet detector; see the module docstring for the input/output contract.

    Images follow torchvision: ``uint8`` in 0-255 or float in 0-1 (floats are scaled by 255 in
    :meth:`preprocess`; a float image above :data:`FLOAT_IMAGE_MAX` raises ``DataError``).

    Args:
        backbone: module mapping normalised ``[B,3,H,W]`` to its last feature map, with
            ``out_channels`` and ``stride`` attributes (:func:`~.backbones.build_backbone`).
        num_classes: C (>= 1).
        class_names: optional names (length C), stored as ``model.class_names``.
        Remaining arguments: as in :class:`CenterNetConfig`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        class_names: Sequence[str] = (),
        *,
        input_size: int = 512,
        neck_channels: Sequence[int] = (256, 128, 64),
        head_conv: int = 64,
        deform: bool = False,
        cat_spec_wh: bool = False,
        radius_formula: str = "centerx",
        min_overlap: float = 0.3,
        max_objs: int = 128,
        hm_weight: float = 1.0,
        wh_weight: float = 0.1,
        off_weight: float = 1.0,
        norm_wh: bool = False,
        score_threshold: float = 0.01,
        top_k: int = 100,
        channels_last: bool = False,
        cls_loss: Any = None,
        ranking: RankingBalanceConfig | dict | None = None,
        rs_box_loss: str = "l1",
        rs_ignore_radius: int = 0,
        rs_ignore_heat: float = 0.0,
        rs_positive_radius: int = 0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise PerceptaError(f"model.num_classes must be >= 1, got {num_classes}")
        if class_names and len(class_names) != num_classes:
            raise PerceptaError(
                f"model.class_names has {len(class_names)} names but num_classes is {num_classes}"
            )
        if radius_formula not in RADIUS_FORMULAS:
            raise PerceptaError(
                f"model.radius_formula must be one of {RADIUS_FORMULAS}, got {radius_formula!r}"
            )
        up = 2 ** len(neck_channels)
        if backbone.stride % up:
            raise PerceptaError(
                f"backbone stride {backbone.stride} is not divisible by the "
                f"neck's up-sampling factor {up}"
            )
        if input_size % backbone.stride:
            raise PerceptaError(
                f"model.input_size={input_size} must be a multiple of the "
                f"backbone stride {backbone.stride}"
            )
        self.backbone = backbone
        self.neck = CenterNetNeck(backbone.out_channels, list(neck_channels), deform)
        self.head = CenterNetHead(self.neck.out_channels, num_classes, head_conv, cat_spec_wh)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.num_classes = int(num_classes)
        self.class_names = list(class_names)
        self.input_size = int(input_size)
        self.stride = backbone.stride // up
        self.cat_spec_wh = cat_spec_wh
        self.radius_formula, self.min_overlap, self.max_objs = radius_formula, min_overlap, max_objs
        self.hm_weight, self.wh_weight, self.off_weight = hm_weight, wh_weight, off_weight
        self.norm_wh = norm_wh
        self.score_threshold, self.top_k = score_threshold, top_k
        self.channels_last = bool(channels_last)
        # RS-CenterNet (:mod:`.centernet_rs`): None = the focal loss (no submodule, same state)
        self.ranking_objective = build_ranking_objective(cls_loss, ranking, prefix="")
        self.rs_box_loss = check_box_loss(rs_box_loss)
        if rs_ignore_radius < 0:
            raise ConfigError(f"model.rs_ignore_radius must be >= 0, got {rs_ignore_radius}")
        self.rs_ignore_radius = int(rs_ignore_radius)
        if not 0.0 <= rs_ignore_heat <= 1.0:
            raise ConfigError(f"model.rs_ignore_heat must be in [0, 1], got {rs_ignore_heat}")
        self.rs_ignore_heat = float(rs_ignore_heat)
        if rs_positive_radius < 0:
            raise ConfigError(f"model.rs_positive_radius must be >= 0, got {rs_positive_radius}")
        self.rs_positive_radius = int(rs_positive_radius)
        self.distiller: Any = (
            None  # a percepta.detection.distill.Distiller adds KD terms in training
        )
        self.distill_options: DistillConfig | None = None  # teachers loaded by prepare_training
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def prepare_training(self) -> None:
        """Set-up the engine runs once before training (not when a checkpoint is rebuilt for
        inference): load the ``distill.teachers`` (frozen) and attach their distiller."""
        opts = self.distill_options
        if opts is None or not opts.teachers or self.distiller is not None:
            return
        from percepta.detection.distill import attach_distiller, describe, load_teachers

        teachers = load_teachers(opts)
        attach_distiller(self, teachers, bool(opts.without_labels))
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            print(describe(teachers), flush=True)

    def relation_interface(self) -> Any:
        """This detector as a :class:`~.relation_interface.RelationDetector` (frozen, eval)."""
        from percepta.detection.relation_interface import CenterNetRelationAdapter

        return CenterNetRelationAdapter(self)

    # ---------------------------------------------------------------- pieces the exporter reuses
    def preprocess(
        self, images: torch.Tensor | Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """Letterbox images into a ``[B,3,S,S]`` float canvas in 0-255.

        ``uint8`` images are taken as 0-255 and float images as 0-1 (torchvision's convention,
        scaled by 255 here); see :func:`as_pixels`.

        Returns:
            ``(batch, scales [B] float64, orig_sizes [(H, W), ...])``; a box of the original
            image maps to ``box * scale`` on the canvas and ``box * scale / stride`` on the
            output map.
        """
        s = self.input_size
        if isinstance(images, torch.Tensor):
            if images.dim() == 3:
                images = images.unsqueeze(0)
            if images.dim() != 4 or images.shape[1] != 3:
                raise DataError(f"images: expected [B,3,H,W] RGB, got {tuple(images.shape)}")
            if images.shape[-2:] == (s, s):  # fast path: nothing to resize
                n = images.shape[0]
                return (
                    as_pixels(images),
                    torch.ones(n, dtype=torch.float64, device=images.device),
                    [(s, s)] * n,
                )
            images = list(images.unbind(0))
        if len(images) == 0:
            raise DataError("images: empty batch")
        _check_float_range(images)
        device = images[0].device
        batch = torch.zeros(len(images), 3, s, s, device=device)
        scales, sizes = [], []
        for i, im in enumerate(images):
            if im.dim() != 3 or im.shape[0] != 3:
                raise DataError(f"images[{i}]: expected [3,H,W] RGB, got {tuple(im.shape)}")
            h, w = int(im.shape[1]), int(im.shape[2])
            scale = min(s / h, s / w)
            im = as_pixels(im, check=False)
            if (h, w) != (s, s):
                nh = min(s, max(1, round(h * scale)))
                nw = min(s, max(1, round(w * scale)))
                im = TF.resize(im, [nh, nw], antialias=True)
            batch[i, :, : im.shape[1], : im.shape[2]] = im
            scales.append(scale)
            sizes.append((h, w))
        return batch, torch.tensor(scales, dtype=torch.float64, device=device), sizes

    def forward_heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Letterboxed float canvas ``[B,3,S,S]`` in 0-255 (:meth:`preprocess`'s output) ->
        ``heat`` (sigmoid), ``wh``, ``reg`` maps. ImageNet normalisation happens here."""
        x = (x - self.pixel_mean) / self.pixel_std
        if self.channels_last:  # same numbers, NHWC layout (a no-op in exported graphs)
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.neck(self.backbone(x)))

    def postprocess(
        self,
        dets: torch.Tensor,
        scales: torch.Tensor,
        orig_sizes: Sequence[tuple[int, int]] | torch.Tensor,
    ) -> list[dict[str, torch.Tensor]]:
        """Decoded ``[B,K,6]`` (output-map units) -> prediction dicts in original-image pixels."""
        scales = torch.as_tensor(scales, dtype=dets.dtype, device=dets.device).reshape(-1, 1)
        out = []
        for i in range(dets.shape[0]):
            h, w = (int(v) for v in orig_sizes[i])
            d = dets[i]
            keep = d[:, 4] > self.score_threshold
            d = d[keep][: self.top_k]
            boxes = d[:, :4] * self.stride / scales[i]
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            out.append({"boxes": boxes, "scores": d[:, 4], "labels": d[:, 5].to(torch.int64)})
        return out

    # ---------------------------------------------------------------------------- training
    def make_targets(
        self, targets: Sequence[dict[str, Any]], scales: torch.Tensor, output_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """Validate target dicts, scale their boxes to output-map units, build the targets.

        ``target["ignore_boxes"]`` (optional ``[M,4]`` XYXY, crowd / VOC-difficult regions) is
        scaled the same way; its cells get no negative heat-map loss (:func:`build_targets`).
        """
        if len(targets) != len(scales):
            raise DataError(f"targets: got {len(targets)} target dicts for {len(scales)} images")
        boxes, labels, ignore = [], [], []
        factors = scales.detach().to("cpu", torch.float64) / self.stride
        for i, t in enumerate(targets):
            where = (
                f"target of image {t.get('image_id', i)!r}"
                if isinstance(t, dict)
                else f"targets[{i}]"
            )
            if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
                raise DataError(f"{where}: expected a dict with 'boxes' and 'labels'")
            b = torch.as_tensor(t["boxes"]).as_subclass(torch.Tensor)
            lab = torch.as_tensor(t["labels"]).as_subclass(torch.Tensor)
            if b.numel() == 0:
                b = b.reshape(0, 4)
            if b.dim() != 2 or b.shape[1] != 4 or lab.dim() != 1 or lab.shape[0] != b.shape[0]:
                raise DataError(
                    f"{where}: boxes must be [N,4] and labels [N], got "
                    f"{tuple(b.shape)} and {tuple(lab.shape)}"
                )
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= self.num_classes):
                raise DataError(
                    f"{where}: labels must be in 0..{self.num_classes - 1}, got "
                    f"{lab.min().item()}..{lab.max().item()}"
                )
            if not torch.isfinite(b).all():
                raise DataError(f"{where}: boxes contain NaN or inf")
            boxes.append(b.to(torch.float64) * float(factors[i]))
            labels.append(lab)
            ignore.append(_ignore_boxes(t, where) * float(factors[i]))
        device = self.pixel_mean.device
        boxes = [b.to(device) for b in boxes]
        return build_targets(
            boxes,
            labels,
            self.num_classes,
            output_size,
            max_objs=self.max_objs,
            radius_formula=self.radius_formula,
            min_overlap=self.min_overlap,
            ignore_boxes=ignore,
        )

    def compute_losses(
        self, out: dict[str, torch.Tensor], tg: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Weighted focal + size L1 + offset L1 (CenterNet ``CtdetLoss``); with a ranking
        ``cls_loss``, the ranking objective's terms (:func:`.centernet_ranking_losses`)."""
        if self.ranking_objective is not None:
            return centernet_ranking_losses(
                self.ranking_objective,
                out,
                tg,
                num_classes=self.num_classes,
                cat_spec_wh=self.cat_spec_wh,
                box_loss=self.rs_box_loss,
                wh_weight=self.wh_weight,
                off_weight=self.off_weight,
                norm_wh=self.norm_wh,
                ignore_radius=self.rs_ignore_radius,
                ignore_heat=self.rs_ignore_heat,
                positive_radius=self.rs_positive_radius,
            )
        hm = penalty_reduced_focal_loss(
            out["heat"].float(), tg["heatmap"], ignore=tg.get("ignore")
        )  # crowd cells: no negatives
        wh = gather_slots(out["wh"].float(), tg["ind"])
        if self.cat_spec_wh:  # only the ground-truth class's (w, h) pair is supervised
            b, m = tg["ind"].shape
            wh = wh.reshape(b, m, self.num_classes, 2)
            wh = wh.gather(2, tg["cls"].view(b, m, 1, 1).expand(b, m, 1, 2)).reshape(b, m, 2)
        loss_wh = reg_l1_loss(wh, tg["mask"], tg["ind"], tg["wh"], norm_wh=self.norm_wh)
        loss_off = reg_l1_loss(out["reg"].float(), tg["mask"], tg["ind"], tg["reg"])
        return {
            "loss_heatmap": self.hm_weight * hm,
            "loss_wh": self.wh_weight * loss_wh,
            "loss_offset": self.off_weight * loss_off,
        }

    # ---------------------------------------------------------------------------- forward
    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        targets: Sequence[dict[str, Any]] | None = None,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Losses in training mode (``targets`` required); predictions in eval mode."""
        batch, scales, sizes = self.preprocess(images)
        out = self.forward_heads(batch)
        if self.training:
            kd = self.distiller
            if kd is not None and kd.without_labels:  # label-free distillation: KD terms only
                return kd(batch, out)
            if targets is None:
                raise DataError(
                    "CenterNet in training mode needs targets (model.eval() to predict)"
                )
            tg = self.make_targets(targets, scales, tuple(out["heat"].shape[-2:]))
            losses = self.compute_losses(out, tg)
            if kd is not None:
                losses.update(kd(batch, out))
            losses["num_objects"] = torch.tensor(float(tg["num_objects"]), device=batch.device)
            return losses
        dets = decode(
            out["heat"],
            out["wh"].float(),
            out["reg"].float(),
            k=self.top_k,
            cat_spec_wh=self.cat_spec_wh,
        )
        return self.postprocess(dets, scales, sizes)


def _ignore_boxes(target: dict[str, Any], where: str) -> torch.Tensor:
    """``target["ignore_boxes"]`` as a float64 ``[M,4]`` tensor (``[0,4]`` when absent)."""
    ign = target.get("ignore_boxes")
    if ign is None:
        return torch.zeros(0, 4, dtype=torch.float64)
    ign = torch.as_tensor(ign).as_subclass(torch.Tensor)
    if ign.numel() == 0:
        return ign.reshape(0, 4).to(torch.float64)
    if ign.dim() != 2 or ign.shape[1] != 4 or not torch.isfinite(ign).all():
        raise DataError(
            f"{where}: ignore_boxes must be a finite [M,4] XYXY tensor, got "
            f"shape {tuple(ign.shape)}"
        )
    return ign.to("cpu", torch.float64)


@MODELS.register(
    "centernet",
    options=CenterNetConfig,
    task="detection",
    resolve=lambda cfg, facts: resolve_centernet_options(cfg, facts),
)
def build_centernet(cfg: CenterNetConfig) -> CenterNet:
    """CenterNet / centerX detector (timm or torchvision backbone, letterboxed input)."""
    if cfg.num_classes < 1:
        raise PerceptaError(
            f"model.num_classes must be >= 1 (got {cfg.num_classes}); it is filled from the "
            "dataset's classes when the model is built together with a dataset"
        )
    backbone = build_backbone(
        cfg.backbone,
        cfg.pretrained,
        cfg.pretrained_path,
        getattr(cfg, "output_stride", 32),
        getattr(cfg, "backbone_out_index", -1),
    )
    model = CenterNet(
        backbone,
        cfg.num_classes,
        list(cfg.class_names),
        input_size=cfg.input_size,
        neck_channels=list(cfg.neck_channels),
        head_conv=cfg.head_conv,
        deform=cfg.deform,
        cat_spec_wh=cfg.cat_spec_wh,
        radius_formula=cfg.radius_formula,
        min_overlap=cfg.min_overlap,
        max_objs=cfg.max_objs,
        hm_weight=cfg.hm_weight,
        wh_weight=cfg.wh_weight,
        off_weight=cfg.off_weight,
        norm_wh=cfg.norm_wh,
        score_threshold=cfg.score_threshold,
        top_k=cfg.top_k,
        channels_last=getattr(cfg, "channels_last", False),
        cls_loss=getattr(cfg, "cls_loss", None),
        ranking=getattr(cfg, "ranking", None),
        rs_box_loss=getattr(cfg, "rs_box_loss", "l1"),
        rs_ignore_radius=getattr(cfg, "rs_ignore_radius", 0),
        rs_ignore_heat=getattr(cfg, "rs_ignore_heat", 0.0),
        rs_positive_radius=getattr(cfg, "rs_positive_radius", 0),
    )
    model.distill_options = cfg.distill
    model.config = cfg
    return model


def resolve_centernet_options(cfg: CenterNetConfig, facts: Any) -> CenterNetConfig:
    """Complete the options before building (:data:`percepta.registry.Entry.resolve`): a
    label-free distilled student takes its classes from the teachers when neither the config
    nor the data name them; unlabelled training data needs ``distill.without_labels``."""
    kd = cfg.distill
    if not kd.teachers:
        return cfg
    from percepta.detection.distill import DistillationError, teacher_class_names

    if facts.has_train and not facts.train_labelled and not kd.without_labels:
        raise DistillationError(
            "data.train has no labels: set model.distill.without_labels=true "
            "to train on the teachers' outputs alone"
        )
    if not cfg.class_names:
        names = teacher_class_names(kd)
        cfg = dataclasses.replace(cfg, class_names=names, num_classes=len(names))
    return cfg


def time_train_step_breakdown(
    model: CenterNet, batch: tuple[Any, Sequence[dict[str, Any]]], repeats: int = 3, warmup: int = 1
) -> dict[str, float]:
    """Time the parts of one training step (median of ``repeats`` after ``warmup`` runs).

    Args:
        model: a :class:`CenterNet` (put in training mode here; gradients are zeroed after).
        batch: ``(images, targets)`` as the model takes them.

    Returns:
        seconds for ``preprocess_s``, ``forward_s`` (backbone/neck/heads), ``targets_s`` (box
        scaling + target building), ``loss_s``, ``backward_s``, their sum ``step_s``, and
        ``targets_share = targets_s / step_s``.
    """
    images, targets = batch
    model.train()
    sync = torch.cuda.synchronize if model.pixel_mean.is_cuda else (lambda: None)
    parts: dict[str, list[float]] = {
        k: [] for k in ("preprocess_s", "forward_s", "targets_s", "loss_s", "backward_s")
    }
    for it in range(warmup + repeats):
        sync()
        t0 = time.perf_counter()
        x, scales, _ = model.preprocess(images)
        sync()
        t1 = time.perf_counter()
        out = model.forward_heads(x)
        sync()
        t2 = time.perf_counter()
        tg = model.make_targets(targets, scales, tuple(out["heat"].shape[-2:]))
        sync()
        t3 = time.perf_counter()
        losses = model.compute_losses(out, tg)
        total = sum(losses.values())
        sync()
        t4 = time.perf_counter()
        total.backward()
        sync()
        t5 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        if it >= warmup:
            for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                parts[key].append(dt)
    res = {k: median(v) for k, v in parts.items()}
    res["step_s"] = sum(res.values())
    res["targets_share"] = res["targets_s"] / res["step_s"]
    return res
