"""Tests of the built-in detection data generator (``percepta data synth --task detection``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from percepta.cli import main
from percepta.data.synthetic import SynthOptionError, generate_detection, render_image
from percepta.data.synthetic.detection import split_sizes
from percepta.data.synthetic.shapes import (
    CLASS_FREQUENCIES,
    CLASS_NAMES,
    draw_polygon,
    polygon_bbox,
    shape_polygon,
)
from percepta.errors import DataError, NotAvailableError, PerceptaError


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_output_for_any_number_of_workers(tmp_path):
    a = generate_detection(tmp_path / "a", num_images=10, image_size=96, seed=3, workers=1)
    b = generate_detection(tmp_path / "b", num_images=10, image_size=96, seed=3, workers=2)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(fa) == 10 + 4  # 10 PNGs, 2 json, README, synth_meta
    assert fa.keys() == fb.keys()
    assert all(fa[k] == fb[k] for k in fa), [k for k in fa if fa[k] != fb[k]]
    assert a["train"]["images"] == 8 and a["val"]["images"] == 2
    assert a["instances_per_class"] == b["instances_per_class"]
    # another seed gives other images
    generate_detection(tmp_path / "c", num_images=10, image_size=96, seed=4, workers=1)
    fc = _files(tmp_path / "c")
    assert fc["train/000000000001.png"] != fa["train/000000000001.png"]


def test_valid_coco(tmp_path):
    from pycocotools.coco import COCO

    size = 128
    generate_detection(
        tmp_path, num_images=24, image_size=size, val_fraction=0.25, seed=1, workers=2
    )
    seen_ids = set()
    for split, n_images in (("train", 18), ("val", 6)):
        path = tmp_path / "annotations" / f"instances_{split}.json"
        coco = COCO(str(path))
        raw = json.loads(path.read_text())
        assert [(c["id"], c["name"], c["supercategory"]) for c in raw["categories"]] == [
            (i + 1, n, "shape") for i, n in enumerate(CLASS_NAMES)
        ]
        names = [c["name"] for c in raw["categories"]]
        assert len(set(names)) == 6 and all(n == n.lower() for n in names)
        assert len(coco.getImgIds()) == n_images
        assert len(raw["annotations"]) > 0
        assert len({a["id"] for a in raw["annotations"]}) == len(raw["annotations"])
        for img in coco.loadImgs(coco.getImgIds()):
            assert img["id"] not in seen_ids
            seen_ids.add(img["id"])
            with Image.open(tmp_path / split / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"]) == (size, size)
                assert im.mode == "RGB"
        for ann in coco.loadAnns(coco.getAnnIds()):
            x, y, w, h = ann["bbox"]
            assert all(isinstance(v, float) for v in ann["bbox"])
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= size and y + h <= size
            assert min(w, h) >= 16 - 0.01
            assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 6
            poly = np.asarray(ann["segmentation"][0]).reshape(-1, 2)
            assert poly[:, 0].min() == pytest.approx(x, abs=0.02)
            assert poly[:, 0].max() == pytest.approx(x + w, abs=0.02)
            assert poly[:, 1].min() == pytest.approx(y, abs=0.02)
            assert poly[:, 1].max() == pytest.approx(y + h, abs=0.02)
            # area of the polygon, independently of the generator: pycocotools' rasterised mask
            mask_area = coco.annToMask(ann).sum()
            assert 0 < ann["area"] <= w * h
            assert abs(mask_area - ann["area"]) <= 0.25 * ann["area"] + 4


def test_class_frequency_is_long_tailed():
    counts = np.zeros(len(CLASS_NAMES), dtype=int)
    for i in range(220):
        for o in render_image(7, i, 128).objects:
            counts[o["category"]] += 1
    share = counts / counts.sum()
    assert counts.sum() > 600
    assert list(np.argsort(-counts)[:2]) == [0, 1] and np.argmin(counts) == 5
    assert share[0] > 2.5 * share[5]  # target 30 % vs 8 %
    assert np.allclose(share, CLASS_FREQUENCIES, atol=0.06), share


def test_empty_images_and_object_counts():
    n_objects = np.array([len(render_image(11, i, 64).objects) for i in range(400)])
    empty = (n_objects == 0).mean()
    assert 0.01 <= empty <= 0.07, empty  # target 3 %
    assert n_objects.max() <= 7 and (n_objects >= 4).mean() > 0.2


def test_square_box_is_tight():
    # A square of side 40 centred at (100, 120): the unit square has its vertices at radius 1.
    for angle, half in (
        (0.0, 20.0),
        (30.0, 20.0 * (math.cos(math.pi / 6) + math.sin(math.pi / 6))),
    ):
        poly = shape_polygon("square", 100.0, 120.0, 20.0 * math.sqrt(2.0), angle)
        x, y, w, h = polygon_bbox(poly)
        assert (x, y, w, h) == pytest.approx((100 - half, 120 - half, 2 * half, 2 * half), abs=1e-6)
        im = Image.new("RGB", (256, 256), (90, 90, 90))
        draw_polygon(ImageDraw.Draw(im), poly, (250, 20, 20))
        ys, xs = np.nonzero(np.any(np.asarray(im) != 90, axis=2))
        # pixel i covers [i, i + 1)
        assert abs(xs.min() - x) <= 1 and abs(xs.max() + 1 - (x + w)) <= 1
        assert abs(ys.min() - y) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1


def test_generated_boxes_are_tight_and_occlusion_is_mild():
    n_partly_hidden = 0
    for i in range(60):
        r = render_image(5, i, 256)
        for o in r.objects:
            ys, xs = np.nonzero(r.instances == o["instance_id"])
            x, y, w, h = o["bbox"]
            # every visible pixel lies in the box (1 px rasterisation tolerance) ...
            assert xs.min() >= x - 1 and xs.max() + 1 <= x + w + 1
            assert ys.min() >= y - 1 and ys.max() + 1 <= y + h + 1
            # ... and an unoccluded object reaches every side of its box
            if o["visible"] == 1.0:
                assert abs(xs.min() - x) <= 1 and abs(xs.max() + 1 - (x + w)) <= 1
                assert abs(ys.min() - y) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1
            else:
                n_partly_hidden += 1
            # visible share, counted on the pixels, against the polygon's own area
            assert len(xs) >= 0.9 * 0.6 * o["area"]
            assert o["visible"] >= 0.6  # the brief: keep an annotation only if >= 60 % visible
    assert n_partly_hidden >= 3  # overlap happens, the task is not trivial


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_images": 0},
        {"image_size": 32},
        {"val_fraction": 1.0},
        {"val_fraction": -0.1},
        {"seed": -1},
        {"workers": 0},
    ],
)
def test_bad_options_rejected(tmp_path, kwargs):
    with pytest.raises(SynthOptionError) as e:
        generate_detection(tmp_path / "x", **{"num_images": 4, **kwargs})
    assert isinstance(e.value, PerceptaError)
    assert not (tmp_path / "x").exists()


def test_split_sizes():
    assert split_sizes(1000, 0.2) == (800, 200)
    assert split_sizes(5, 0.0) == (5, 0)
    assert split_sizes(3, 0.1) == (2, 1)  # a requested val split is never empty ...
    assert split_sizes(2, 0.9) == (1, 1)  # ... and train never is
    assert split_sizes(1, 0.5) == (1, 0)


def test_cli_writes_skips_and_overwrites(tmp_path, capsys):
    out = tmp_path / "builtin"
    argv = [
        "data",
        "synth",
        "--task",
        "detection",
        "--out",
        str(out),
        "--num-images",
        "6",
        "--image-size",
        "64",
        "--workers",
        "1",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "instances_val.json" in text and "centernet_r18_builtin.yaml" in text
    assert "circle" in text and "cross" in text
    first = _files(out)
    assert main(argv) == 0
    assert "nothing regenerated" in capsys.readouterr().out
    assert _files(out) == first
    # other options: regenerated, with no stale image left behind
    assert main(argv[:-4] + ["--num-images", "4", "--workers", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert len(list(out.glob("*/*.png"))) == 4 and "README.txt" in _files(out)
    assert json.loads((out / "synth_meta.json").read_text())["options"]["num_images"] == 4


def test_cli_errors(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "y"), "--num-images", "0"]) == 2
    assert "--num-images" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "y"), "--val-fraction", "1"]) == 2
    assert "--val-fraction" in capsys.readouterr().err
    import argparse

    from percepta.data.synthetic import cli_synth

    with pytest.raises(NotAvailableError):
        cli_synth(argparse.Namespace(task="segmentation", out=str(tmp_path)))


def test_refuses_to_mix_with_a_foreign_dataset(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "photo.jpg").write_bytes(b"not ours")
    with pytest.raises(DataError, match="did not generate"):
        generate_detection(tmp_path, num_images=2, image_size=64, workers=1)
    assert (tmp_path / "train" / "photo.jpg").exists()


def test_interrupted_run_is_regenerated(tmp_path):
    generate_detection(tmp_path, num_images=3, image_size=64, workers=1)
    meta = json.loads((tmp_path / "synth_meta.json").read_text())
    (tmp_path / "synth_meta.json").write_text(json.dumps({**meta, "complete": False}))
    (tmp_path / "val" / "000000000003.png").unlink()
    result = generate_detection(tmp_path, num_images=3, image_size=64, workers=1)
    assert not result["skipped"] and (tmp_path / "val" / "000000000003.png").is_file()
    assert generate_detection(tmp_path, num_images=3, image_size=64, workers=1)["skipped"]
