"""CocoDetection / build_coco_dataset on tiny datasets written in tmp_path (+ tiny_coco)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors

from percepta.data.coco import CocoDatasetConfig, CocoDetection, build_coco_dataset
from percepta.errors import DataError

# library deprecations outside our control (torchvision.io -> torchcodec; pycocotools + numpy 2)
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:The image decoding and encoding capabilities:DeprecationWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
    ),
]


def _load(path, **kw) -> CocoDetection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CocoDetection(path, **kw)


def test_sparse_category_ids_map_to_contiguous_labels_and_back(tiny_coco):
    ds = _load(tiny_coco)
    assert ds.cat_ids == [3, 7, 12]
    assert ds.class_names == ["ball", "box", "cone"]
    assert ds.num_classes == 3
    assert ds.cat_id_to_label == {3: 0, 7: 1, 12: 2}
    # every returned (box, label) must be an annotation of that image with category cat_ids[label]
    raw = json.loads(Path(tiny_coco).read_text())
    for i in range(len(ds)):
        _, t = ds[i]
        anns = [
            a for a in raw["annotations"] if a["image_id"] == t["image_id"] and not a["iscrowd"]
        ]
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            x0, y0, x1, y1 = box
            hits = [
                a
                for a in anns
                if a["category_id"] == ds.cat_ids[label]
                and abs(a["bbox"][0] - x0) < 1e-4
                and abs(a["bbox"][1] - y0) < 1e-4
            ]
            assert hits, (t["image_id"], box, label)


def test_target_contents(tiny_coco):
    ds = _load(tiny_coco)
    assert ds.image_ids == [10, 20, 30]
    img, t = ds[0]
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 48, 64)
    assert img[:, 0, 0].tolist() == [200, 30, 30]  # RGB order
    assert isinstance(t["boxes"], tv_tensors.BoundingBoxes)
    assert t["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
    assert tuple(t["boxes"].canvas_size) == (48, 64)
    assert t["boxes"].tolist() == [[5, 6, 25, 16], [30.5, 10, 40.5, 30]]  # xywh -> xyxy
    assert t["labels"].dtype == torch.int64 and t["labels"].tolist() == [1, 2]
    assert t["image_id"] == 10 and t["orig_size"] == (48, 64)
    assert t["area"].tolist() == [200.0, 150.0]
    # the crowd region is an ignore box, not a target
    assert t["ignore_boxes"].tolist() == [[0, 0, 10, 10]]


def test_images_without_boxes_are_kept(tiny_coco):
    ds = _load(tiny_coco)
    img, t = ds[2]
    assert t["image_id"] == 30 and tuple(img.shape) == (3, 32, 32)
    assert tuple(t["boxes"].shape) == (0, 4) and tuple(t["labels"].shape) == (0,)
    assert tuple(t["ignore_boxes"].shape) == (0, 4)
    assert len(_load(tiny_coco, filter_empty=True)) == 2


def test_clip_and_drop_give_one_summary_warning(tiny_coco):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = CocoDetection(tiny_coco)
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1, msgs
    assert "1 boxes partly outside" in msgs[0] and "1 zero-size" in msgs[0]
    assert str(tiny_coco) in msgs[0]
    _, t = ds[1]
    assert t["boxes"].tolist() == [[40, 30, 50, 40]]  # clipped to the 50x40 image
    assert t["labels"].tolist() == [0]


def test_max_images_and_restricted_coco_gt(tiny_coco):
    from pycocotools.coco import COCO

    ds = _load(tiny_coco, max_images=1)
    assert len(ds) == 1 and ds.image_ids == [10]
    assert [im["id"] for im in ds.coco_gt["images"]] == [10]
    assert sorted(a["id"] for a in ds.coco_gt["annotations"]) == [1, 2, 3]
    assert len(ds.coco_gt["categories"]) == 3
    gt = COCO()
    gt.dataset = ds.coco_gt
    gt.createIndex()
    assert gt.getImgIds() == [10]


def test_coco_gt_fills_iscrowd_and_area(tmp_path, cocodata):
    coco = cocodata.base()
    for a in coco["annotations"]:
        a.pop("area")
        if not a["iscrowd"]:
            a.pop("iscrowd")
    ds = _load(cocodata.write(tmp_path, coco))
    by_id = {a["id"]: a for a in ds.coco_gt["annotations"]}
    assert by_id[1]["iscrowd"] == 0 and by_id[1]["area"] == 200
    assert by_id[3]["iscrowd"] == 1
    _, t = ds[0]
    assert t["area"].tolist() == [200.0, 200.0]  # box area 10x20 for the second box


def test_masks_from_polygons(tiny_coco):
    ds = _load(tiny_coco, with_masks=True)
    _, t = ds[0]
    m = t["masks"]
    assert isinstance(m, tv_tensors.Mask) and tuple(m.shape) == (2, 48, 64)
    ys, xs = torch.nonzero(m[0], as_tuple=True)
    # the rectangle polygon covers columns 5..24(25) and rows 6..15(16)
    assert (
        5 <= xs.min() <= 6 and 24 <= xs.max() <= 25 and 6 <= ys.min() <= 7 and 15 <= ys.max() <= 16
    )
    assert abs(int(m[0].sum()) - 200) <= 40
    assert m[1].sum() > 0 and m[1][:, :30].sum() == 0


def test_image_dir_guess_images_subfolder(tmp_path, cocodata):
    ann = cocodata.write(tmp_path, image_subdir="images/val2017")
    ds = _load(ann)
    assert ds.image_dir == tmp_path / "images" / "val2017"
    assert ds[0][0].shape == (3, 48, 64)


def test_image_dir_not_found_lists_candidates(tmp_path, cocodata):
    ann = cocodata.write(tmp_path, image_subdir="elsewhere")
    with pytest.raises(DataError, match="cannot find the image folder") as e:
        _load(ann)
    assert str(ann) in str(e.value) and "val2017" in str(e.value) and "a.png" in str(e.value)


@pytest.mark.parametrize(
    "mutate, record, words",
    [
        (
            lambda c: c["annotations"].append({**c["annotations"][0]}),
            "annotation id 1",
            "duplicate",
        ),
        (lambda c: c["annotations"][0].update(category_id=99), "annotation id 1", "category_id 99"),
        (lambda c: c["annotations"][1].update(bbox=["1", 2, 3, 4]), "annotation id 2", "bbox"),
        (lambda c: c["annotations"][1].update(bbox=[1, 2, 3]), "annotation id 2", "bbox"),
        (lambda c: c["annotations"][3].update(bbox=[1, 2, -3, 4]), "annotation id 4", "negative"),
        (lambda c: c["annotations"][0].update(image_id=77), "annotation id 1", "image_id 77"),
        (lambda c: c["images"].append(dict(c["images"][0])), "image id 10", "duplicate"),
        (
            lambda c: c["categories"].append({"id": 3, "name": "again"}),
            "category id 3",
            "duplicate",
        ),
        (lambda c: c["images"][1].update(width="50"), "image id 20", "width"),
        (lambda c: c.pop("categories"), "(top level)", "categories"),
    ],
)
def test_bad_annotations_name_file_and_record(tmp_path, cocodata, mutate, record, words):
    coco = cocodata.base()
    mutate(coco)
    ann = cocodata.write(tmp_path, coco)
    with pytest.raises(DataError) as e:
        _load(ann)
    msg = str(e.value)
    assert str(ann) in msg and record in msg and words in msg


def test_truncated_json_names_line_and_col(tmp_path, cocodata):
    ann = cocodata.write(tmp_path)
    text = ann.read_text()
    ann.write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match=r"line 1 col \d+") as e:
        _load(ann)
    assert str(ann) in str(e.value)


def test_corrupt_missing_and_resized_images_fail_at_getitem(tiny_coco):
    ds = _load(tiny_coco)
    (ds.image_dir / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(DataError) as e:
        ds[0]
    assert "image id 10" in str(e.value) and "a.png" in str(e.value)
    (ds.image_dir / "b.png").unlink()
    with pytest.raises(DataError, match="image id 20.*b.png.*not found"):
        ds[1]
    from PIL import Image

    Image.new("RGB", (31, 32)).save(ds.image_dir / "c.png")
    with pytest.raises(DataError, match="image id 30.*31x32.*32x32"):
        ds[2]


def test_with_masks_requires_segmentations(tmp_path, cocodata):
    coco = cocodata.base()
    del coco["annotations"][1]["segmentation"]
    with pytest.raises(DataError, match="annotation id 2.*no segmentation"):
        _load(cocodata.write(tmp_path, coco), with_masks=True)
    assert len(_load(cocodata.write(tmp_path, coco))) == 3  # fine without masks


def test_config_dataclass_and_registry():
    from dataclasses import fields

    from percepta.registry import DATASETS

    names = [f.name for f in fields(CocoDatasetConfig)]
    assert names[0] == "name" and CocoDatasetConfig().name == "coco"
    assert {"ann_file", "image_dir", "augment", "with_masks", "filter_empty", "max_images"} <= set(
        names
    )
    assert DATASETS.get("coco") is build_coco_dataset
    assert DATASETS.options("coco") is CocoDatasetConfig


def test_builder_resolves_paths_and_transforms(tiny_coco, tmp_path, monkeypatch):
    root = tiny_coco.parents[1]
    cfg = CocoDatasetConfig(ann_file="annotations/instances_val2017.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val = build_coco_dataset(cfg, root=str(root), train=False)
        train = build_coco_dataset(cfg, root=str(root), train=True)
        no_aug = build_coco_dataset(
            CocoDatasetConfig(ann_file=cfg.ann_file, augment=False), root=str(root), train=True
        )
        # relative to the current directory when not under root
        monkeypatch.chdir(root)
        cwd = build_coco_dataset(cfg, root=str(tmp_path / "nowhere"), train=False)
    assert val.transforms is None and no_aug.transforms is None and train.transforms is not None
    assert len(cwd) == 3
    with pytest.raises(DataError) as e:
        build_coco_dataset(CocoDatasetConfig(ann_file="missing.json"), root=str(tmp_path / "r"))
    assert str(tmp_path / "r" / "missing.json") in str(e.value) and str(
        root / "missing.json"
    ) in str(e.value)
    with pytest.raises(DataError, match="ann_file"):
        build_coco_dataset(CocoDatasetConfig(), root=str(root))


def test_config_validation_uses_the_options(tiny_coco):
    from percepta.config import ConfigError, from_dict

    cfg = from_dict(
        {"data": {"train": {"name": "coco", "ann_file": str(tiny_coco), "max_images": 2}}}
    )
    assert cfg.data.train.max_images == 2 and cfg.data.train.with_masks is False
    with pytest.raises(ConfigError, match="max_image"):
        from_dict({"data": {"train": {"name": "coco", "ann_file": "x", "max_image": 2}}})


@pytest.mark.shared_data
def test_tiny_coco_val(cocodata):
    ann = cocodata.shared("tiny_coco", "annotations", "instances_val2017.json")
    raw = json.loads(ann.read_text())
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = CocoDetection(ann)
    assert not [w for w in rec if issubclass(w.category, UserWarning)]  # clean: nothing clipped
    assert len(ds) == 50 and ds.num_classes == 80
    assert ds.cat_ids[-1] == 90 and ds.class_names[0] == "person"
    assert ds.image_dir.name == "val2017"
    n_box = n_ign = n_empty = 0
    by_img: dict[int, list[dict]] = {}
    for a in raw["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    for i in range(len(ds)):
        img, t = ds[i]
        assert img.dtype == torch.uint8 and tuple(img.shape[1:]) == t["orig_size"]
        n_box += len(t["boxes"])
        n_ign += len(t["ignore_boxes"])
        n_empty += len(t["boxes"]) == 0
        # label -> category id round trip against the json
        want = sorted(
            (a["category_id"], round(a["bbox"][0], 2))
            for a in by_img.get(t["image_id"], [])
            if not a["iscrowd"]
        )
        got = sorted(
            (ds.cat_ids[lab], round(b[0], 2))
            for lab, b in zip(t["labels"].tolist(), t["boxes"].tolist())
        )
        assert got == want
    assert n_ign == 5 and n_box == 382 - 5
    assert n_empty >= 2


@pytest.mark.shared_data
def test_tiny_coco_targets_written_back_as_results_score_ap_1(cocodata):
    """label -> category id round trip through a COCO result file, scored by pycocotools."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann = cocodata.shared("tiny_coco", "annotations", "instances_val2017.json")
    ds = _load(ann)
    results = []
    for i in range(len(ds)):
        _, t = ds[i]
        for (x0, y0, x1, y1), lab in zip(t["boxes"].tolist(), t["labels"].tolist()):
            results.append(
                {
                    "image_id": t["image_id"],
                    "category_id": ds.cat_ids[lab],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": 1.0,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ds.coco_gt
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)
    # a wrong mapping (labels shifted by one category) must not score 1
    shifted = [
        {
            **r,
            "category_id": ds.cat_ids[(ds.cat_id_to_label[r["category_id"]] + 1) % ds.num_classes],
        }
        for r in results
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(shifted), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] < 0.2


# ------------------------------------------------------------------- ignore regions (iscrowd)
def test_ignore_boxes_are_bounding_boxes_that_v2_flips_move(tiny_coco):
    """The crowd box of image 10 (xywh [0,0,10,10] on a 64-wide image) is a BoundingBoxes, so a
    bare v2 flip moves it (a plain tensor would stay put); percepta's pipeline moves it too."""
    from torchvision.transforms import v2

    from percepta.data.transforms import DetectionAugment

    img, t = _load(tiny_coco)[0]
    ign = t["ignore_boxes"]
    assert isinstance(ign, tv_tensors.BoundingBoxes) and tuple(ign.canvas_size) == (48, 64)
    assert ign.format == tv_tensors.BoundingBoxFormat.XYXY
    flipped = [[64 - 10, 0, 64 - 0, 10]]  # x' = W - x, by hand
    _, bare = v2.RandomHorizontalFlip(p=1.0)(tv_tensors.Image(img), t)
    assert bare["ignore_boxes"].tolist() == flipped
    _, ours = DetectionAugment(v2.RandomHorizontalFlip(p=1.0))(img, t)
    assert ours["ignore_boxes"].tolist() == flipped
    assert ours["boxes"].tolist() == [[64 - 25, 6, 64 - 5, 16], [64 - 40.5, 10, 64 - 30.5, 30]]
    assert ours["labels"].tolist() == [1, 2]


def test_ignore_flag_without_iscrowd_is_an_ordinary_object_and_warns(tmp_path, cocodata):
    """Only iscrowd makes an ignore region (what pycocotools / faster-coco-eval honour); an
    'ignore': 1 or 'difficult': 1 annotation with iscrowd 0 is a normal target, with a warning."""
    coco = cocodata.base()
    coco["annotations"][0]["ignore"] = 1
    coco["annotations"][1]["difficult"] = 1
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = CocoDetection(cocodata.write(tmp_path, coco))
    msgs = [str(w.message) for w in rec if "iscrowd" in str(w.message)]
    assert len(msgs) == 1 and "2 annotations" in msgs[0], msgs
    _, t = ds[0]
    assert t["boxes"].tolist() == [[5, 6, 25, 16], [30.5, 10, 40.5, 30]]
    assert t["ignore_boxes"].tolist() == [[0, 0, 10, 10]]  # the iscrowd=1 region only
