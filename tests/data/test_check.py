"""`percepta data check`: a clean dataset passes, every defect of a broken copy is named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from percepta.cli import main
from percepta.data.check import check_coco, guess_image_dir, image_dir_candidates

# library deprecations outside our control (torchvision.io -> torchcodec; pycocotools + numpy 2)
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:The image decoding and encoding capabilities:DeprecationWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
    ),
]


def _kinds(report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in report.problems:
        out.setdefault(p.kind, []).append(p.record)
    return out


def test_clean_tiny_dataset(tiny_coco):
    r = check_coco(tiny_coco)
    assert r.ok and r.errors == [], r.format_text()
    assert (r.num_images, r.num_annotations, r.num_categories) == (3, 5, 3)
    assert r.num_crowd == 1 and r.num_images_without_annotations == 1
    assert r.image_dir == str(tiny_coco.parents[1] / "val2017")
    k = _kinds(r)
    # the loader copes with these, so they are warnings, each naming its annotation
    assert k["zero_size_box"] == ["annotation id 5"]
    assert k["box_partly_outside"] == ["annotation id 4"]
    assert all(p.severity == "warning" and p.file == str(tiny_coco) for p in r.problems)


def _broken(tmp_path: Path, cocodata) -> Path:
    coco = cocodata.base()
    anns, imgs = coco["annotations"], coco["images"]
    anns.append({**anns[0]})  # duplicate annotation id 1
    anns[1]["bbox"] = [1, 2, "3", 4]  # malformed bbox, annotation id 2
    anns[3]["category_id"] = 99  # unknown category, annotation id 4
    anns[4]["bbox"] = [1, 1, -2, 5]  # negative size, annotation id 5
    anns.append({"id": 6, "image_id": 999, "category_id": 3, "bbox": [0, 0, 1, 1]})
    coco["categories"].append({"id": 12, "name": "cone again"})  # duplicate category id
    imgs.append({"id": 40, "file_name": "missing.png", "width": 8, "height": 8})
    imgs.append({"id": 50, "file_name": "corrupt.png", "width": 8, "height": 8})
    imgs.append({"id": 60, "file_name": "cut.jpg", "width": 120, "height": 90})
    imgs.append({"id": 20, "file_name": "b.png", "width": 50, "height": 40})  # duplicate image id
    imgs[2]["width"] = 33  # c.png is 32x32 -> size mismatch
    ann = cocodata.write(tmp_path, coco)
    img_dir = tmp_path / "val2017"
    (img_dir / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    noise = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(noise).save(img_dir / "cut.jpg", quality=90)  # header survives the cut
    data = (img_dir / "cut.jpg").read_bytes()
    (img_dir / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    return ann


def test_broken_copy_names_every_defect(tmp_path, cocodata):
    ann = _broken(tmp_path, cocodata)
    r = check_coco(ann)
    assert not r.ok
    k = _kinds(r)
    assert "annotation id 1" in k["duplicate_id"]
    assert "image id 20" in k["duplicate_id"]
    assert "category id 12" in k["duplicate_id"]
    assert k["bad_bbox"] == ["annotation id 2"]
    assert k["unknown_category"] == ["annotation id 4"]
    assert k["negative_box_size"] == ["annotation id 5"]
    assert k["unknown_image"] == ["annotation id 6"]
    assert k["missing_image"] == ["image id 40 ('missing.png')"]
    assert sorted(k["corrupt_image"]) == ["image id 50 ('corrupt.png')", "image id 60 ('cut.jpg')"]
    assert k["size_mismatch"] == ["image id 30 ('c.png')"]
    assert all(p.file == str(ann) for p in r.problems)
    for p in r.errors:
        assert p.severity == "error"
    text = r.format_text()
    for needle in (
        "duplicate annotation id",
        "category_id 99",
        "missing.png",
        "33x32",
        "end-of-image marker",
    ):
        assert needle in text, needle
    back = json.loads(r.to_json())
    assert back["ok"] is False and back["num_errors"] == len(r.errors)


def test_no_images_skips_file_checks(tmp_path, cocodata):
    ann = _broken(tmp_path, cocodata)
    k = _kinds(check_coco(ann, open_images=False))
    assert "missing_image" not in k and "corrupt_image" not in k and "bad_bbox" in k


def test_truncated_json_reports_line_and_col(tiny_coco):
    text = tiny_coco.read_text()
    tiny_coco.write_text(text[:-40])
    r = check_coco(tiny_coco)
    assert [p.kind for p in r.problems] == ["invalid_json"]
    assert r.problems[0].record.startswith("line 1 col ")
    assert str(tiny_coco) == r.problems[0].file


def test_missing_keys_and_wrong_types(tmp_path, cocodata):
    coco = cocodata.base()
    del coco["annotations"]
    coco["images"][0]["file_name"] = 5
    coco["images"][1].pop("height")
    ann = cocodata.write(tmp_path, coco)
    r = check_coco(ann, open_images=False)
    msgs = [(p.record, p.message) for p in r.errors]
    assert ("(top level)", "missing top-level key 'annotations'") in msgs
    assert any(rec == "image id 10" and "file_name" in m for rec, m in msgs)
    assert any(rec == "image id 20" and "height" in m for rec, m in msgs)


def test_image_dir_candidates_order(tmp_path):
    c = image_dir_candidates(tmp_path / "annotations" / "instances_val2017.json")
    assert c[:3] == [tmp_path / "val2017", tmp_path / "images" / "val2017", tmp_path / "images"]
    assert tmp_path / "annotations" in c
    d, tried = guess_image_dir(tmp_path / "annotations" / "x.json", [{"file_name": "nope.png"}])
    assert d is None and tried


def test_cli_exit_codes_and_output(tmp_path, cocodata, capsys):
    good = cocodata.write(tmp_path / "good")
    assert main(["data", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "3 images, 5 annotations (1 crowd), 3 categories" in out and "0 errors" in out
    # a folder with annotations/*.json
    assert main(["data", "check", str(tmp_path / "good"), "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert len(reports) == 1 and reports[0]["ok"] is True

    bad = _broken(tmp_path / "bad", cocodata)
    assert main(["data", "check", str(bad), "--max-report", "1"]) == 1
    out = capsys.readouterr().out
    assert (
        "error missing_image (1)" in out
        and "error duplicate_id (3)" in out
        and "... and 2 more" in out
    )
    # --images overrides the guess
    assert main(["data", "check", str(good), "--images", str(tmp_path / "bad" / "val2017")]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(tmp_path / "nothing-here.json")]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.shared_data
def test_shared_tiny_coco_is_clean(cocodata, capsys):
    ann = cocodata.shared("tiny_coco", "annotations", "instances_val2017.json")
    r = check_coco(ann)
    assert r.ok, r.format_text()
    assert (r.num_images, r.num_annotations, r.num_categories) == (50, 382, 80)
    assert r.num_crowd == 5 and r.num_images_without_annotations == 2
    assert {p.kind for p in r.warnings} == {"empty_category"}
    assert main(["data", "check", str(ann.parents[1])]) == 0
    assert "2 files checked, 0 with errors" in capsys.readouterr().out
