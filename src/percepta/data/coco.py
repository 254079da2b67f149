"""COCO detection datasets: ``instances_*.json`` + an image folder -> ``(image, target)``.

Follows the COCO format (https://cocodataset.org/#format-data) and pycocotools' reading of it
(``COCO.annToRLE`` for masks). Conventions, fixed here once for every model:

- ``labels`` are contiguous ``0..C-1``: the (possibly sparse) category ids sorted ascending;
  ``cat_ids[label]`` maps back to the category id for result files.
- ``boxes`` are XYXY absolute pixels (``tv_tensors.BoundingBoxes``), converted from COCO's
  ``[x, y, w, h]``; boxes partly outside the image are clipped to it and zero-size boxes are
  dropped, with one summary warning per dataset (not one per box).
- ``iscrowd=1`` annotations (COCO crowd regions, and Pascal VOC "difficult" objects, which
  :mod:`percepta.data.convert` writes as ``iscrowd=1``) are ignore regions, the same set the COCO
  evaluators ignore: no training target, and their boxes go to ``target["ignore_boxes"]`` (a
  ``tv_tensors.BoundingBoxes``, XYXY, on the image's canvas) so a loss can skip the anchors /
  heat-map cells they cover (:mod:`percepta.detection.centernet_targets`). A separate
  ``BoundingBoxes`` rather than a flag aligned with ``boxes``, so that models that know nothing
  of crowds never see them as objects. torchvision.transforms.v2 moves it with flips, resizes
  and zoom-outs, but ``RandomIoUCrop`` and ``SanitizeBoundingBoxes`` only look at the *first*
  ``BoundingBoxes`` of a sample, so :class:`percepta.data.transforms.DetectionAugment` runs the
  ignore boxes through the pipeline inside ``boxes`` (label -1) and splits them off again.
  Annotations that carry ``"ignore": 1`` or ``"difficult": 1`` with ``iscrowd=0`` are ordinary
  objects, as pycocotools and faster-coco-eval treat them (they set ``ignore`` from ``iscrowd``
  alone); one warning per dataset names how many (VOC jsons converted before percepta wrote
  ``iscrowd=1`` for difficult objects: convert again).
- Images without annotations are kept (empty ``[0,4]`` boxes) unless ``filter_empty``.
- ``coco_gt`` is the parsed json restricted to this dataset's images, with ``iscrowd`` (0) and
  ``area`` (box area) filled in where an annotation lacks them, so COCO evaluators accept it.

Loading runs the fast checks of :mod:`percepta.data.check` and refuses files with errors,
naming the file and every offending record.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from percepta.data.check import (
    CheckReport,
    box_issue,
    check_coco_dict,
    guess_image_dir,
    load_coco_json,
)
from percepta.data.images import read_rgb
from percepta.errors import DataError
from percepta.registry import DATASETS

__all__ = ["CocoDatasetConfig", "CocoDetection", "build_coco_dataset", "resolve_path"]

_MAX_LISTED = 20
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)


@dataclass
class CocoDatasetConfig:
    """Options of a COCO-format detection dataset (``data.train`` / ``data.val``)."""

    name: str = "coco"
    ann_file: str = "???"  # annotation json; relative paths resolve against data.root, then cwd
    image_dir: str = ""  # empty: guessed next to the json (X/val2017, X/images/val2017, ...)
    augment: bool = True  # training augmentations (only when building the training split)
    with_masks: bool = False  # also return instance masks (tv_tensors.Mask) from segmentations
    filter_empty: bool = False  # drop images without any (non-crowd) box
    max_images: int = 0  # 0 = all images; N = the first N (after filter_empty)


class CocoDetection(Dataset):
    """A COCO json + image folder as a map-style dataset of ``(uint8 [3,H,W], target)``.

    Args:
        ann_file: the COCO annotation json.
        image_dir: folder that ``file_name`` s are relative to; ``None`` guesses it (see
            :func:`percepta.data.check.image_dir_candidates`).
        transforms: callable ``(image, target) -> (image, target)`` (see
            :mod:`percepta.data.transforms`), or ``None``.
        with_masks: decode polygon / RLE segmentations into ``target["masks"]``.
        filter_empty: drop images that have no box after cleaning.
        max_images: keep only the first N images (0 = all).

    Target keys: ``boxes``, ``labels``, ``image_id``, ``orig_size`` (the file's ``(H, W)``; it
    stays so after augmentation, while ``boxes`` follow the augmented image), ``ignore_boxes``
    (``BoundingBoxes [M,4]`` XYXY: the ``iscrowd`` regions), ``area`` and, with ``with_masks``,
    ``masks`` (``uint8 [N,H,W]``).
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_dir: str | os.PathLike | None = None,
        transforms: Callable[..., Any] | None = None,
        with_masks: bool = False,
        filter_empty: bool = False,
        max_images: int = 0,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.transforms = transforms
        self.with_masks = with_masks
        self.name = self.ann_file.stem
        data = load_coco_json(self.ann_file)
        report = CheckReport(file=str(self.ann_file))
        check_coco_dict(data, report)
        if report.errors:
            errs = report.errors
            listed = "\n".join(f"  {p.record}: {p.message}" for p in errs[:_MAX_LISTED])
            more = f"\n  ... and {len(errs) - _MAX_LISTED} more" if len(errs) > _MAX_LISTED else ""
            raise DataError(
                f"{self.ann_file}: {len(errs)} error(s) in the annotation file:\n"
                f"{listed}{more}\n(`percepta data check {self.ann_file}` lists all problems)"
            )

        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.cat_ids: list[int] = [c["id"] for c in cats]
        self.class_names: list[str] = [c["name"] for c in cats]
        self.num_classes: int = len(cats)
        self.cat_id_to_label: dict[int, int] = {cid: i for i, cid in enumerate(self.cat_ids)}
        # dataset facts a model needs (the one route: percepta.components fills the model's
        # options from ``meta``; checkpoints then carry them)
        self.meta: dict[str, Any] = {
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "category_ids": list(self.cat_ids),
        }
        self._build_index(data, filter_empty, max_images)

        if image_dir is None or str(image_dir) == "":
            guessed, tried = guess_image_dir(self.ann_file, data["images"])
            if guessed is None:
                first = data["images"][0]["file_name"] if data["images"] else "(no images)"
                raise DataError(
                    f"{self.ann_file}: cannot find the image folder; looked for "
                    f"{first!r} in " + ", ".join(map(str, tried)) + " (set image_dir)"
                )
            self.image_dir = guessed
        else:
            self.image_dir = Path(image_dir)
            if not self.image_dir.is_dir():
                raise DataError(f"{self.ann_file}: image folder not found: {self.image_dir}")

    # ----------------------------------------------------------------------------------------
    def _build_index(self, data: dict, filter_empty: bool, max_images: int) -> None:
        by_image: dict[int, list[dict]] = {im["id"]: [] for im in data["images"]}
        for a in data["annotations"]:
            by_image[a["image_id"]].append(a)
        clipped = dropped = legacy = 0
        images, rows = [], []
        for im in data["images"]:
            W, H = im["width"], im["height"]
            boxes, labels, areas, ignore, anns = [], [], [], [], []
            for a in by_image[im["id"]]:
                x, y, w, h = (float(v) for v in a["bbox"])
                issue = box_issue(x, y, w, h, W, H)
                if issue in ("zero", "outside"):
                    dropped += 1
                    continue
                clipped += issue == "partly_outside"
                xyxy = [
                    min(max(x, 0.0), W),
                    min(max(y, 0.0), H),
                    min(max(x + w, 0.0), W),
                    min(max(y + h, 0.0), H),
                ]
                if xyxy[2] <= xyxy[0] or xyxy[3] <= xyxy[1]:
                    dropped += 1
                    continue
                if a.get("iscrowd", 0):
                    ignore.append(xyxy)
                    continue
                legacy += bool(a.get("ignore", 0) or a.get("difficult", 0))
                boxes.append(xyxy)
                labels.append(self.cat_id_to_label[a["category_id"]])
                areas.append(float(a.get("area", w * h)))
                anns.append(a)
            if filter_empty and not boxes:
                continue
            images.append(im)
            rows.append(
                (
                    np.asarray(boxes, np.float32).reshape(-1, 4),
                    np.asarray(labels, np.int64),
                    np.asarray(areas, np.float32),
                    np.asarray(ignore, np.float32).reshape(-1, 4),
                    anns if self.with_masks else None,
                )
            )
            if max_images and len(images) >= max_images:
                break
        if clipped or dropped:
            warnings.warn(
                f"{self.ann_file}: {clipped} boxes partly outside their image were "
                f"clipped, {dropped} zero-size or outside boxes were dropped "
                f"(`percepta data check` lists them)",
                stacklevel=3,
            )
        if legacy:
            warnings.warn(
                f"{self.ann_file}: {legacy} annotations have 'ignore': 1 or "
                "'difficult': 1 but iscrowd 0; they are trained and evaluated as "
                "ordinary objects, as the COCO tools do (set iscrowd to 1 to make them "
                "ignore regions; `percepta data convert voc` does so)",
                stacklevel=3,
            )
        if self.with_masks:
            for im, row in zip(images, rows):
                for a in row[4]:
                    if not a.get("segmentation"):
                        raise DataError(
                            f"{self.ann_file}: annotation id {a['id']} (image id "
                            f"{im['id']}) has no segmentation but with_masks=True"
                        )
        self._images = images
        self._rows = rows
        self.image_ids: list[int] = [im["id"] for im in images]
        keep = set(self.image_ids)
        gt_anns = []
        for a in data["annotations"]:
            if a["image_id"] in keep:
                if "iscrowd" not in a or "area" not in a:
                    a = {
                        **a,
                        "iscrowd": a.get("iscrowd", 0),
                        "area": a.get("area", float(a["bbox"][2] * a["bbox"][3])),
                    }
                gt_anns.append(a)
        self.coco_gt: dict = {k: v for k, v in data.items() if k not in ("images", "annotations")}
        self.coco_gt["images"] = images
        self.coco_gt["annotations"] = gt_anns

    # ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._images)

    def image_info(self, index: int) -> dict:
        """The json record of image ``index`` (``id``, ``file_name``, ``width``, ``height``...)."""
        return self._images[index]

    def image_path(self, index: int) -> Path:
        return self.image_dir / self._images[index]["file_name"]

    def load_image(self, index: int) -> torch.Tensor:
        """Decode image ``index`` as ``uint8 [3,H,W]`` RGB; unreadable files raise DataError."""
        info = self._images[index]
        try:
            return read_rgb(self.image_path(index))
        except DataError as e:
            raise DataError(f"{self.ann_file}: image id {info['id']}: {e}") from None

    def _masks(self, anns: list[dict], h: int, w: int) -> torch.Tensor:
        from pycocotools import mask as mask_utils

        out = np.zeros((len(anns), h, w), np.uint8)
        for k, a in enumerate(anns):
            seg = a["segmentation"]
            if isinstance(seg, list):
                polys = [p for p in seg if len(p) >= 6 and len(p) % 2 == 0]
                if not polys:
                    continue
                rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
            elif isinstance(seg["counts"], list):
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = seg
            out[k] = mask_utils.decode(rle)
        return torch.from_numpy(out)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        info = self._images[index]
        img = self.load_image(index)
        H, W = int(img.shape[-2]), int(img.shape[-1])
        if (info["width"], info["height"]) != (W, H):
            raise DataError(
                f"{self.ann_file}: image id {info['id']}: file {self.image_path(index)} "
                f"is {W}x{H} (WxH) but the json says {info['width']}x{info['height']}"
            )
        boxes, labels, areas, ignore, anns = self._rows[index]
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(boxes.copy()), format="XYXY", canvas_size=(H, W)
            ),
            "labels": torch.from_numpy(labels.copy()),
            "image_id": int(info["id"]),
            "orig_size": (H, W),
            "ignore_boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(ignore.copy()), format="XYXY", canvas_size=(H, W)
            ),
            "area": torch.from_numpy(areas.copy()),
        }
        if self.with_masks:
            target["masks"] = tv_tensors.Mask(self._masks(anns or [], H, W))
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target

    def __repr__(self) -> str:
        return (
            f"CocoDetection({self.ann_file}, images={len(self)}, classes={self.num_classes}, "
            f"image_dir={self.image_dir})"
        )


def resolve_path(path: str, root: str | os.PathLike, kind: str, want_dir: bool = False) -> Path:
    """``path`` as given if absolute; else ``root/path`` if it exists, else ``./path``; a
    missing path raises DataError naming both places tried."""
    p = Path(os.path.expanduser(path))
    exists = Path.is_dir if want_dir else Path.is_file
    if p.is_absolute():
        if not exists(p):
            raise DataError(f"{kind} not found: {p}")
        return p
    tried = [Path(root) / p, Path.cwd() / p]
    for t in tried:
        if exists(t):
            return t
    raise DataError(f"{kind} {path!r} not found: tried {tried[0]} (data.root) and {tried[1]} (cwd)")


def _opt(cfg: Any, key: str, default: Any) -> Any:
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


@DATASETS.register("coco", options=CocoDatasetConfig)
def build_coco_dataset(
    cfg: CocoDatasetConfig, root: str = ".", train: bool = True
) -> CocoDetection:
    """COCO-format detection json + images (also VOC / Penn-Fudan after `percepta data convert`)."""
    from percepta.data.transforms import build_transforms

    ann = str(_opt(cfg, "ann_file", "???"))
    if ann in ("", "???"):
        raise DataError("dataset option 'ann_file' is not set (path to a COCO annotation json)")
    ann_file = resolve_path(ann, root, "annotation file")
    image_dir = str(_opt(cfg, "image_dir", "") or "")
    img_dir = resolve_path(image_dir, root, "image folder", want_dir=True) if image_dir else None
    return CocoDetection(
        ann_file,
        img_dir,
        transforms=build_transforms(train, bool(_opt(cfg, "augment", True))),
        with_masks=bool(_opt(cfg, "with_masks", False)),
        filter_empty=bool(_opt(cfg, "filter_empty", False)),
        max_images=int(_opt(cfg, "max_images", 0)),
    )
