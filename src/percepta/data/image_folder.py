"""A folder of unlabelled images as a detection dataset (``data.train: {name: image_folder}``).

Used for distillation without labels (centerX ``KD_WITHOUT_LABEL``): each item is the image and
a target with no boxes, so the same loader, collate and letterbox path as labelled data apply.
The folder is searched recursively for the usual image suffixes; it has no classes
(``class_names == []``), so the student's classes come from the config or the teachers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from percepta.data.coco import resolve_path
from percepta.data.images import read_rgb
from percepta.errors import DataError
from percepta.registry import DATASETS

__all__ = ["ImageFolderConfig", "ImageFolder", "build_image_folder", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class ImageFolderConfig:
    """Options of an unlabelled image folder (training images for label-free distillation)."""

    name: str = "image_folder"
    path: str = "???"  # folder (searched recursively); relative paths resolve against data.root
    max_images: int = 0  # 0 = all images; N = the first N in sorted order


class ImageFolder(Dataset):
    """Sorted image files of ``folder``; items ``(uint8 [3,H,W], target without boxes)``.

    ``image_id`` is the index in sorted order. An unreadable file raises :class:`DataError`
    naming it when it is loaded.
    """

    class_names: list[str] = []
    num_classes = 0
    meta: dict = {"labelled": False}  # dataset facts (percepta.data.facts): no labels

    def __init__(self, folder: str | os.PathLike, max_images: int = 0) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(f"image folder not found: {self.folder}")
        files = sorted(
            p for p in self.folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if max_images > 0:
            files = files[:max_images]
        if not files:
            raise DataError(
                f"image folder {self.folder} holds no images "
                f"(looked for {', '.join(IMAGE_SUFFIXES)}, recursively)"
            )
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        path = self.files[index]
        img = read_rgb(path)  # a DataError naming the file
        h, w = int(img.shape[-2]), int(img.shape[-1])
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(h, w)),
            "labels": torch.zeros(0, dtype=torch.int64),
            "image_id": index,
            "orig_size": (h, w),
            "file_name": str(path),
        }
        return img, target

    def __repr__(self) -> str:
        return f"ImageFolder({self.folder}, images={len(self)})"


@DATASETS.register("image_folder", options=ImageFolderConfig)
def build_image_folder(cfg: ImageFolderConfig, root: str = ".", train: bool = True) -> ImageFolder:
    """Unlabelled images (for distillation without labels)."""
    path = str(getattr(cfg, "path", "???"))
    if path in ("", "???"):
        raise DataError("dataset option 'path' is not set (folder of unlabelled images)")
    return ImageFolder(
        resolve_path(path, root, "image folder", want_dir=True),
        max_images=int(getattr(cfg, "max_images", 0)),
    )
