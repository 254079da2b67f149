"""coco_subset: partially labelled datasets (the multi-teacher scenario's A / B / A+B files)."""

from __future__ import annotations

import json

import pytest

from percepta.data.subset import coco_subset
from percepta.errors import DataError


def _src(tmp_path):
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 8, "height": 8} for i in (1, 2, 3)],
        "categories": [
            {"id": 1, "name": "circle"},
            {"id": 2, "name": "square"},
            {"id": 3, "name": "star"},
        ],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 2, 2],
                "area": 4,
                "iscrowd": 0,
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": 2,
                "bbox": [0, 0, 2, 2],
                "area": 4,
                "iscrowd": 0,
            },
            {
                "id": 12,
                "image_id": 2,
                "category_id": 1,
                "bbox": [0, 0, 2, 2],
                "area": 4,
                "iscrowd": 0,
            },
            {
                "id": 13,
                "image_id": 3,
                "category_id": 3,
                "bbox": [0, 0, 2, 2],
                "area": 4,
                "iscrowd": 0,
            },
        ],
    }
    p = tmp_path / "src.json"
    p.write_text(json.dumps(data))
    return p


def test_classes_images_and_annotation_filters(tmp_path):
    src = _src(tmp_path)
    counts = coco_subset(src, tmp_path / "a.json", ["circle"], keep_image=lambda im: im["id"] != 2)
    out = json.loads((tmp_path / "a.json").read_text())
    assert counts == {"images": 2, "annotations": 1, "categories": 1}
    assert [a["id"] for a in out["annotations"]] == [10] and out["categories"] == [
        {"id": 1, "name": "circle"}
    ]
    # joint file: circles only from image 1, squares from everywhere else
    coco_subset(
        src,
        tmp_path / "ab.json",
        ["circle", "square"],
        keep_annotation=lambda a, name: (a["image_id"] == 1) == (name == "circle"),
    )
    out = json.loads((tmp_path / "ab.json").read_text())
    assert [a["id"] for a in out["annotations"]] == [10] and len(out["images"]) == 3
    assert [c["id"] for c in out["categories"]] == [1, 2]


def test_unknown_class_names_the_file_and_its_classes(tmp_path):
    with pytest.raises(DataError, match=r"no categories named \['hexagon'\].*circle"):
        coco_subset(_src(tmp_path), tmp_path / "x.json", ["hexagon"])
