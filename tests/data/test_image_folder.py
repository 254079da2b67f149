"""Unlabelled image folders (label-free distillation): items, sorting, bad files."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from percepta.data.image_folder import ImageFolder, ImageFolderConfig, build_image_folder
from percepta.errors import DataError


def test_items_are_images_with_empty_targets(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (20, 10), (255, 0, 0)).save(tmp_path / "b.png")
    Image.new("L", (8, 6), 128).save(tmp_path / "sub" / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = ImageFolder(tmp_path)
    assert [p.name for p in ds.files] == ["b.png", "a.jpg"]  # sorted by path, txt ignored
    img, tgt = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 10, 20) and int(img[0, 0, 0]) == 255
    assert (
        tgt["boxes"].shape == (0, 4) and tgt["labels"].numel() == 0 and tgt["orig_size"] == (10, 20)
    )
    assert ds[1][0].shape == (3, 6, 8)  # greyscale decoded as RGB
    assert ds.class_names == [] and len(ImageFolder(tmp_path, max_images=1)) == 1


def test_empty_missing_and_corrupt(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        build_image_folder(ImageFolderConfig(path="nowhere"), root=str(tmp_path))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG broken")
    ds = ImageFolder(tmp_path / "bad")
    with pytest.raises(DataError, match=r"x\.png: not a readable image \(.*\)$"):
        ds[0]
