"""VOC and Penn-Fudan -> COCO converters; the output loads and checks without extra flags."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from percepta.cli import main
from percepta.data.check import check_coco
from percepta.data.coco import CocoDetection
from percepta.data.convert import pennfudan_to_coco, voc_to_coco
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

VOC_XML = """<annotation>
  <folder>VOC2007</folder><filename>{fn}</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  {objects}
</annotation>"""
VOC_OBJ = """<object><name>{name}</name><pose>Left</pose><truncated>{trunc}</truncated>
  <difficult>{diff}</difficult>
  <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"""


def _voc(root: Path) -> Path:
    """Two images: 000001 (dog 1-based (1,1)-(10,20), difficult cat) and 000002 (person)."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    specs = {
        "000001": (40, 30, [("dog", 0, 0, 1, 1, 10, 20), ("cat", 1, 1, 20, 5, 40, 30)]),
        "000002": (32, 24, [("person", 0, 0, 3, 4, 12, 24)]),
    }
    for stem, (w, h, objs) in specs.items():
        Image.new("RGB", (w, h), (9, 9, 9)).save(root / "JPEGImages" / f"{stem}.jpg")
        objects = "\n".join(
            VOC_OBJ.format(name=n, diff=d, trunc=t, x0=a, y0=b, x1=c, y1=e)
            for n, d, t, a, b, c, e in objs
        )
        (root / "Annotations" / f"{stem}.xml").write_text(
            VOC_XML.format(fn=f"{stem}.jpg", w=w, h=h, objects=objects)
        )
    (root / "ImageSets" / "Main" / "train.txt").write_text("000002\n")
    return root


def test_voc_coordinates_difficult_and_categories(tmp_path):
    src = _voc(tmp_path / "VOC2007")
    out = tmp_path / "coco" / "voc_all.json"
    coco = voc_to_coco(src, out)
    assert json.loads(out.read_text()) == coco
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog", "person"]
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    assert [(im["id"], im["voc_id"], im["width"], im["height"]) for im in coco["images"]] == [
        (1, "000001", 40, 30),
        (2, "000002", 32, 24),
    ]
    # file names relative to the json's folder
    assert coco["images"][0]["file_name"] == "../VOC2007/JPEGImages/000001.jpg"
    a = {(x["image_id"], x["category_id"]): x for x in coco["annotations"]}
    dog = a[(1, 2)]
    assert dog["bbox"] == [0, 0, 10, 20] and dog["area"] == 200 and dog["iscrowd"] == 0
    assert all(type(v) is int for v in dog["bbox"])
    assert "ignore" not in dog and dog["difficult"] == 0
    cat = a[(1, 1)]  # VOC (20,5)-(40,30), 1-based inclusive on a 40x30 image
    # difficult -> COCO ignore region (iscrowd=1, the flag pycocotools honours); no 'ignore' key
    assert cat["bbox"] == [19, 4, 21, 26] and cat["iscrowd"] == 1
    assert cat["difficult"] == 1 and "ignore" not in cat and cat["truncated"] == 1
    assert a[(2, 3)]["bbox"] == [2, 3, 10, 21]


def test_voc_output_loads_and_checks_without_flags(tmp_path, monkeypatch):
    src = _voc(tmp_path / "VOC2007")
    out = tmp_path / "coco" / "voc.json"
    voc_to_coco(src, out)
    r = check_coco(out)
    assert r.ok and r.errors == [], r.format_text()
    assert r.image_dir == str(out.parent)
    monkeypatch.chdir(tmp_path)  # the names must not depend on the current directory
    ds = CocoDetection(Path("coco") / "voc.json")
    img, t = ds[0]
    assert img.shape == (3, 30, 40)
    assert t["boxes"].tolist() == [[0, 0, 10, 20]] and ds.class_names[t["labels"][0]] == "dog"
    assert t["ignore_boxes"].tolist() == [[19, 4, 40, 30]]  # the difficult cat


def test_voc_split_and_classes(tmp_path):
    src = _voc(tmp_path / "VOC2007")
    coco = voc_to_coco(src, tmp_path / "train.json", split="train")
    assert [im["voc_id"] for im in coco["images"]] == ["000002"]
    with pytest.warns(UserWarning, match="skipped objects.*'cat': 1"):
        coco = voc_to_coco(src, tmp_path / "x.json", classes="person,dog")
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "person"), (2, "dog")]
    assert sorted(a["category_id"] for a in coco["annotations"]) == [1, 2]
    with pytest.raises(DataError, match="split 'val' not found"):
        voc_to_coco(src, tmp_path / "y.json", split="val")


def test_voc_bad_inputs_name_the_file(tmp_path):
    src = _voc(tmp_path / "VOC2007")
    bad = src / "Annotations" / "000002.xml"
    bad.write_text("<annotation><object><name>dog</name>")
    with pytest.raises(DataError, match=r"000002\.xml: invalid XML at line 1"):
        voc_to_coco(src, tmp_path / "o.json")
    bad.write_text(
        VOC_XML.format(
            fn="000002.jpg",
            w=32,
            h=24,
            objects=VOC_OBJ.format(name="dog", diff=0, trunc=0, x0=10, y0=4, x1=5, y1=20),
        )
    )
    with pytest.raises(DataError, match=r"000002\.xml: object 1 \('dog'\).*xmax < xmin"):
        voc_to_coco(src, tmp_path / "o.json")
    bad.write_text(VOC_XML.format(fn="gone.jpg", w=32, h=24, objects=""))
    with pytest.raises(DataError, match=r"000002\.xml.*gone\.jpg"):
        voc_to_coco(src, tmp_path / "o.json")
    with pytest.raises(DataError, match="not a Pascal VOC folder"):
        voc_to_coco(tmp_path, tmp_path / "o.json")


def _pennfudan(root: Path) -> dict[str, np.ndarray]:
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    masks = {}
    m = np.zeros((30, 40), np.uint8)
    m[2:12, 3:9] = 1
    m[10:28, 20:35] = 2
    m[27, 35] = 2  # one stray pixel widens instance 2's box
    masks["FudanPed00001"] = m
    masks["PennPed00002"] = np.zeros((20, 25), np.uint8)  # no pedestrian
    for stem, mask in masks.items():
        Image.new("RGB", mask.shape[::-1], (5, 5, 5)).save(root / "PNGImages" / f"{stem}.png")
        Image.fromarray(mask).save(root / "PedMasks" / f"{stem}_mask.png")
    return masks


def test_pennfudan_boxes_masks_and_loader(tmp_path):
    from pycocotools import mask as mask_utils

    masks = _pennfudan(tmp_path / "pf")
    out = tmp_path / "pf.json"
    coco = pennfudan_to_coco(tmp_path / "pf", out)
    assert coco["categories"] == [{"id": 1, "name": "person", "supercategory": "person"}]
    assert [im["file_name"] for im in coco["images"]] == [
        "pf/PNGImages/FudanPed00001.png",
        "pf/PNGImages/PennPed00002.png",
    ]
    anns = coco["annotations"]
    assert [a["instance_id"] for a in anns] == [1, 2]
    m = masks["FudanPed00001"]
    for a in anns:  # independent: tight box and pixel count with numpy
        ys, xs = np.nonzero(m == a["instance_id"])
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert a["area"] == len(xs)
        np.testing.assert_array_equal(
            mask_utils.decode(a["segmentation"]), (m == a["instance_id"]).astype(np.uint8)
        )
    assert check_coco(out).ok
    ds = CocoDetection(out, with_masks=True)
    _, t = ds[0]
    assert t["boxes"].tolist() == [[3, 2, 9, 12], [20, 10, 36, 28]]
    assert t["masks"].shape == (2, 30, 40) and int(t["masks"][1].sum()) == 18 * 15 + 1
    assert len(ds[1][1]["boxes"]) == 0


def test_pennfudan_mask_size_mismatch(tmp_path):
    _pennfudan(tmp_path / "pf")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(
        tmp_path / "pf" / "PedMasks" / "PennPed00002_mask.png"
    )
    with pytest.raises(DataError, match=r"PennPed00002_mask\.png.*25x20"):
        pennfudan_to_coco(tmp_path / "pf", tmp_path / "o.json")


def test_cli_convert(tmp_path, capsys):
    src = _voc(tmp_path / "VOC2007")
    out = tmp_path / "o" / "train.json"
    assert main(["data", "convert", "voc", str(src), "--out", str(out), "--split", "train"]) == 0
    assert "1 images, 1 annotations, 1 categories" in capsys.readouterr().out
    assert main(["data", "check", str(out)]) == 0
    _pennfudan(tmp_path / "pf")
    assert (
        main(
            [
                "data",
                "convert",
                "pennfudan",
                str(tmp_path / "pf"),
                "--out",
                str(tmp_path / "pf.json"),
                "--split",
                "x",
            ]
        )
        == 2
    )


def _txt_boxes(path: Path) -> list[tuple[int, int, int, int]]:
    pat = r"\(Xmin, Ymin\) - \(Xmax, Ymax\) : \((\d+), (\d+)\) - \((\d+), (\d+)\)"
    return [tuple(map(int, m)) for m in re.findall(pat, path.read_text(errors="replace"))]


@pytest.mark.shared_data
def test_pennfudan_real_against_annotation_txt(tmp_path, cocodata):
    src = cocodata.shared("pennfudan")
    out = tmp_path / "pennfudan.json"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coco = pennfudan_to_coco(src, out)
    assert len(coco["images"]) == 170 and len(coco["annotations"]) == 423
    by_img: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    exact = total = 0
    for im in coco["images"]:
        stem = Path(im["file_name"]).stem
        txt = _txt_boxes(src / "Annotation" / f"{stem}.txt")
        anns = by_img.get(im["id"], [])
        assert len(anns) == len(txt), stem
        for a, (x0, y0, x1, y1) in zip(anns, txt):
            ref = np.array(
                [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1], float
            )  # 1-based -> 0-based xywh
            got = np.array(a["bbox"])
            exact += bool(np.array_equal(ref, got))
            total += 1
            assert np.abs(ref - got).max() <= 8, (stem, a["instance_id"], ref, got)
    assert total == 423 and exact / total > 0.95
    r = check_coco(out)
    assert r.ok and r.problems == [], r.format_text()
    ds = CocoDetection(out, with_masks=True)
    img, t = ds[0]
    assert tuple(img.shape[1:]) == t["masks"].shape[1:] and len(t["boxes"]) == len(t["masks"]) == 2
