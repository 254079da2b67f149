"""Fixtures for the COCO / check / convert tests: a tiny COCO dataset written in ``tmp_path``.

Layout (like the real COCO release)::

    <root>/annotations/instances_val2017.json
    <root>/val2017/{a,b,c}.png

Categories use sparse ids listed out of order (12, 3, 7), so the contiguous-label mapping is
exercised. Image 10 (64x48) has two boxes (category 7 and 12) and one crowd region (category 3,
RLE); image 20 (50x40) has a box partly outside the image and a zero-size box; image 30 (32x32)
has no annotation.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(
    os.environ.get(
        "PERCEPTA_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    )
)

IMAGES = [
    {"id": 10, "file_name": "a.png", "width": 64, "height": 48, "color": (200, 30, 30)},
    {"id": 20, "file_name": "b.png", "width": 50, "height": 40, "color": (30, 200, 30)},
    {"id": 30, "file_name": "c.png", "width": 32, "height": 32, "color": (30, 30, 200)},
]
CATEGORIES = [{"id": 12, "name": "cone"}, {"id": 3, "name": "ball"}, {"id": 7, "name": "box"}]


def _crowd_rle() -> dict:
    from pycocotools import mask as mask_utils

    m = np.zeros((48, 64, 1), np.uint8, order="F")
    m[0:10, 0:10, 0] = 1
    rle = mask_utils.encode(m)[0]
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def base_coco() -> dict:
    """The valid tiny COCO dict (fresh copy)."""
    anns = [
        {
            "id": 1,
            "image_id": 10,
            "category_id": 7,
            "bbox": [5, 6, 20, 10],
            "area": 200.0,
            "iscrowd": 0,
            "segmentation": [[5, 6, 25, 6, 25, 16, 5, 16]],
        },
        {
            "id": 2,
            "image_id": 10,
            "category_id": 12,
            "bbox": [30.5, 10, 10, 20],
            "area": 150.0,
            "iscrowd": 0,
            "segmentation": [[30.5, 10, 40.5, 10, 35.5, 30]],
        },
        {
            "id": 3,
            "image_id": 10,
            "category_id": 3,
            "bbox": [0, 0, 10, 10],
            "area": 100.0,
            "iscrowd": 1,
            "segmentation": _crowd_rle(),
        },
        {
            "id": 4,
            "image_id": 20,
            "category_id": 3,
            "bbox": [40, 30, 20, 20],
            "area": 400.0,
            "iscrowd": 0,
            "segmentation": [[40, 30, 60, 30, 60, 50, 40, 50]],
        },
        {
            "id": 5,
            "image_id": 20,
            "category_id": 7,
            "bbox": [1, 1, 0, 5],
            "area": 0.0,
            "iscrowd": 0,
            "segmentation": [[1, 1, 1, 6, 1, 1]],
        },
    ]
    images = [{k: v for k, v in im.items() if k != "color"} for im in IMAGES]
    return {
        "info": {"description": "tiny test set"},
        "images": images,
        "annotations": anns,
        "categories": copy.deepcopy(CATEGORIES),
    }


def write_dataset(
    root: Path, coco: dict | None = None, split: str = "val2017", image_subdir: str | None = None
) -> Path:
    """Write the images and ``coco`` (default :func:`base_coco`) under ``root``; return the json."""
    coco = base_coco() if coco is None else coco
    img_dir = root / (image_subdir if image_subdir is not None else split)
    img_dir.mkdir(parents=True, exist_ok=True)
    for im in IMAGES:
        Image.new("RGB", (im["width"], im["height"]), im["color"]).save(img_dir / im["file_name"])
    ann = root / "annotations" / f"instances_{split}.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(coco))
    return ann


@pytest.fixture
def tiny_coco(tmp_path: Path) -> Path:
    """Path of the valid tiny dataset's annotation json."""
    return write_dataset(tmp_path)


def shared(*parts: str) -> Path:
    """A path in ../shared/data, skipping the test when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not found at {p} (set PERCEPTA_SHARED_DATA)")
    return p


@pytest.fixture
def cocodata():
    """The helpers above, for tests (test modules should not import conftest directly)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        base=base_coco, write=write_dataset, shared=shared, images=IMAGES, categories=CATEGORIES
    )
