"""``percepta data convert vrd``: the official VRD json to VG-SGG files (+ zero-shot triplets).

Real data: ``../shared/data/vrd`` (60 test images with files; read in place; the tests skip when
it is absent). The expected values are computed here from the raw json and the official ``.mat``
files with loops of their own (scipy.io for the .mat), never with the converter's helpers.
A tiny hand-made VRD folder, written by the test, has answers worked out by hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from percepta import cli
from percepta.data.convert_vrd import vrd_image_ids, vrd_to_vg_sgg
from percepta.data.vg_sgg import load_graphs, load_info
from percepta.data.vg_sgg_dataset import VGSGGDataset, VGSGGDatasetConfig
from percepta.errors import DataError
from percepta.scene_graph.results_io import load_zero_shot_triplets

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("PERCEPTA_SHARED_DATA", REPO.parent / "shared" / "data"))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _vrd_src() -> Path:
    p = SHARED_DATA / "vrd"
    if not (p / "json_dataset" / "annotations_test.json").is_file():
        pytest.skip(f"shared VRD data not found at {p} (set PERCEPTA_SHARED_DATA)")
    return p


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The real VRD test split converted once: (src, out, summary)."""
    src = _vrd_src()
    out = tmp_path_factory.mktemp("vrd") / "converted"
    assert cli.main(["data", "convert", "vrd", str(src), "--out", str(out)]) == 0  # as documented
    summary = json.loads((out / "vrd_conversion.json").read_text())
    return src, out, summary


def _raw(src: Path) -> tuple[dict, list[str]]:
    ann = json.loads((src / "json_dataset" / "annotations_test.json").read_text())
    names = [n for n in ann if (src / "images" / n).is_file()]
    return ann, names


# ----------------------------------------------------------------------------- the real data


def test_real_vrd_counts(real):
    src, out, s = real
    ann, names = _raw(src)
    assert len(names) == 60 and len(ann) == 1000
    raw_rels = sum(len(ann[n]) for n in names)
    assert raw_rels == 621  # the data README's count
    self_rels = sum(r["subject"] == r["object"] for n in names for r in ann[n])
    objects = sum(
        len(
            {(tuple(e["bbox"]), e["category"]) for r in ann[n] for e in (r["subject"], r["object"])}
        )
        for n in names
    )
    assert (self_rels, objects) == (4, 473)
    assert s["images"] == 60 and s["skipped_no_image"] == 940 and s["json_images"] == 1000
    assert s["json_relations"] == 621
    assert s["relations"] == 617 == raw_rels - self_rels  # subject == object: not a VG-SGG pair
    assert s["self_relations"] == 4 and s["objects"] == 473
    assert s["duplicate_relations"] == 17 and s["boxes_with_two_classes"] == 4
    assert s["clipped_boxes"] == 0 and s["dropped_boxes"] == 0
    assert s["image_dir"] == str((src / "images").resolve())
    with h5py.File(out / "VG-SGG.h5", "r") as f:
        assert f["split"][()].tolist() == [2] * 60
        labels, preds = f["labels"][()].ravel(), f["predicates"][()].ravel()
        assert len(labels) == 473 and len(preds) == 617 and len(f["relationships"]) == 617
        assert labels.min() >= 1 and labels.max() <= 100
        assert preds.min() >= 1 and preds.max() <= 70
    classes, predicates, _ = load_info(out / "VG-SGG-dicts.json")
    objects_json = json.loads((src / "json_dataset" / "objects.json").read_text())
    predicates_json = json.loads((src / "json_dataset" / "predicates.json").read_text())
    assert classes[1:] == objects_json and predicates[1:] == predicates_json
    assert (out / "LICENSE").read_bytes() == (src / "LICENSE").read_bytes()
    readme = (out / "README.txt").read_text()
    assert "617 relations" in readme and "data.train.image_dir=" in readme
    assert "LICENSE" in readme


def test_real_vrd_graphs_match_the_json(real):
    """Every written relation is a json relationship with its boxes at the -1 offset, and the
    boxes lie inside their image (load_graphs decodes the h5 as the official loader does)."""
    src, out, _ = real
    ann, names = _raw(src)
    records = json.loads((out / "image_data.json").read_text())
    assert [r["file_name"] for r in records] == names
    position = {n: i for i, n in enumerate(ann)}
    assert [r["image_id"] for r in records] == [position[n] + 1 for n in names]  # ids <= 1000
    mask, boxes, labels, _, rels = load_graphs(out / "VG-SGG.h5", "test", filter_empty_rels=False)
    assert mask.sum() == 60
    for rec, b, lab, rel in zip(records, boxes, labels, rels):
        w, h = rec["width"], rec["height"]
        with Image.open(src / "images" / rec["file_name"]) as im:
            assert im.size == (w, h)
        px = b.astype(np.float64) / 1024 * max(w, h)
        tol = 0.5 * max(w, h) / 1024 + 1e-9  # one 1024-scale rounding step
        assert (px[:, 0] >= -tol).all() and (px[:, 1] >= -tol).all()
        assert (px[:, 2] <= w - 1 + tol).all() and (px[:, 3] <= h - 1 + tol).all()
        assert (px[:, 2] > px[:, 0]).all() and (px[:, 3] > px[:, 1]).all()
        expected = []
        for r in ann[rec["file_name"]]:
            if r["subject"] == r["object"]:
                continue
            sy1, sy2, sx1, sx2 = r["subject"]["bbox"]
            oy1, oy2, ox1, ox2 = r["object"]["bbox"]
            expected.append(
                (
                    r["subject"]["category"] + 1,
                    r["object"]["category"] + 1,
                    r["predicate"] + 1,
                    (sx1 - 1, sy1 - 1, sx2 - 1, sy2 - 1),
                    (ox1 - 1, oy1 - 1, ox2 - 1, oy2 - 1),
                )
            )
        assert len(rel) == len(expected)
        got = [(int(lab[s]), int(lab[o]), int(p), px[s], px[o]) for s, o, p in rel]
        for (es, eo, ep, ebs, ebo), (gs, go, gp, gbs, gbo) in zip(expected, got):  # json order
            assert (gs, go, gp) == (es, eo, ep)
            np.testing.assert_allclose(gbs, ebs, atol=tol, rtol=0)
            np.testing.assert_allclose(gbo, ebo, atol=tol, rtol=0)
        if max(w, h) == 1024:  # the scale is 1: the round trip is exact
            assert all(np.array_equal(g[3], e[3]) for g, e in zip(got, expected))


def test_real_vrd_coco_objects(real):
    """The COCO json lists the unique (box, class) objects with the pixels they cover, and its
    relative file names reach the source images."""
    src, out, _ = real
    ann, names = _raw(src)
    coco_file = out / "annotations" / "instances_test.json"
    coco = json.loads(coco_file.read_text())
    assert len(coco["images"]) == 60 and len(coco["annotations"]) == 473
    assert [c["id"] for c in coco["categories"]] == list(range(1, 101))
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append((a["category_id"], tuple(a["bbox"])))
    for im in coco["images"]:
        name = im["vrd_file"]
        assert (coco_file.parent / im["file_name"]).resolve() == (src / "images" / name).resolve()
        expected = {
            (e["category"] + 1, (x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1))
            for r in ann[name]
            for e in (r["subject"], r["object"])
            for y1, y2, x1, x2 in [e["bbox"]]
        }
        assert sorted(by_image[im["id"]]) == sorted(expected)


def test_real_vrd_zero_shot_triplets(real):
    """The file loads with the evaluator's loader and equals the gt.mat types flagged by
    zeroShot.mat (classes 0-based, predicates 1-based); 115 of the written relations are
    zero-shot (116 flagged gt.mat rows on the 60 images, one of them a subject == object row)."""
    import scipy.io

    src, out, s = real
    trip = load_zero_shot_triplets(str(out / "zero_shot_triplets.json"))
    gt = scipy.io.loadmat(src / "evaluation" / "gt.mat", mat_dtype=True)
    zs = scipy.io.loadmat(src / "evaluation" / "zeroShot.mat", mat_dtype=True)["zeroShot"][0]
    paths = [str(p[0]) for p in scipy.io.loadmat(src / "data" / "imagePath.mat")["imagePath"][0]]
    expected, flagged_rows = set(), {}
    for path, lab, flag in zip(paths, gt["gt_tuple_label"][0], zs):
        rows = [
            (int(t[0]) - 1, int(t[2]) - 1, int(t[1]))
            for t, f in zip(lab.reshape(-1, 3), flag.reshape(-1))
            if f
        ]
        expected |= set(rows)
        flagged_rows[path] = rows
    assert trip.shape == (1029, 3) and {tuple(t) for t in trip.tolist()} == expected
    assert trip[:, :2].min() >= 0 and trip[:, :2].max() <= 99
    assert trip[:, 2].min() >= 1 and trip[:, 2].max() <= 70
    ann, names = _raw(src)
    assert sum(len(flagged_rows[n]) for n in names) == 116
    zs_self = sum(
        r["subject"] == r["object"]
        and (r["subject"]["category"], r["object"]["category"], r["predicate"] + 1) in expected
        for n in names
        for r in ann[n]
    )
    assert zs_self == 1
    assert s["zero_shot"]["relations"] == 116 - zs_self
    assert s["zero_shot"]["gt_mat_images_same"] == 60


def test_real_vrd_through_the_vg_sgg_dataset(real):
    src, out, _ = real
    image_dir = str((src / "images").resolve())
    ds = VGSGGDataset(
        VGSGGDatasetConfig(
            split="test", image_dir=image_dir, zero_shot_triplets="zero_shot_triplets.json"
        ),
        root=out,
    )
    assert len(ds) == 60 and ds.meta["num_object_classes"] == 100
    assert ds.meta["num_predicates"] == 70
    assert ds.meta["zero_shot_triplets"] == str(out / "zero_shot_triplets.json")
    n_rel = 0
    for i in range(len(ds)):
        t = ds.targets_only(i)
        n_rel += len(t["relations"])
        assert int(t["labels"].min()) >= 0 and int(t["labels"].max()) <= 99
        assert int(t["relations"][:, 2].min()) >= 1 and int(t["relations"][:, 2].max()) <= 70
    assert n_rel == 617  # evaluation keeps every relation, repeats included
    img, t = ds[0]
    assert tuple(img.shape[-2:]) == t["orig_size"]


# ------------------------------------------------------------------------- a tiny hand-made VRD


def _rel(p, sc, sb, oc, ob):
    return {
        "predicate": p,
        "subject": {"category": sc, "bbox": sb},
        "object": {"category": oc, "bbox": ob},
    }


def _tiny(root: Path, *, mats: bool = True) -> Path:
    """3 classes, 2 predicates; a.jpg (64x48) and c.png (32x32) have files, b.jpg has none."""
    src = root / "vrd"
    (src / "json_dataset").mkdir(parents=True)
    (src / "images").mkdir()
    Image.new("RGB", (64, 48), (90, 20, 20)).save(src / "images" / "a.jpg")
    Image.new("RGB", (32, 32), (20, 90, 20)).save(src / "images" / "c.png")
    box_s = [1, 10, 2, 64]  # [ymin, ymax, xmin, xmax] 1-based inclusive: touches the right edge
    box_o = [5, 48, 1, 20]
    ann = {
        "a.jpg": [
            _rel(1, 0, box_s, 1, box_o),
            _rel(0, 0, box_s, 2, box_o),  # the same box with another class: another object
            _rel(0, 1, box_o, 1, box_o),  # subject == object: dropped
            _rel(1, 0, box_s, 1, box_o),  # an exact repeat: kept
        ],
        "b.jpg": [_rel(0, 0, [1, 2, 1, 2], 1, [3, 4, 3, 4])],
        "c.png": [_rel(1, 2, [1, 32, 1, 32], 0, [3, 8, 5, 9])],
    }
    (src / "json_dataset" / "annotations_test.json").write_text(json.dumps(ann))
    (src / "json_dataset" / "objects.json").write_text(json.dumps(["cat", "dog", "mat"]))
    (src / "json_dataset" / "predicates.json").write_text(json.dumps(["on", "near"]))
    (src / "LICENSE").write_text("tiny licence notice\n")
    if mats:
        import scipy.io

        (src / "evaluation").mkdir()

        def cells(*arrays):
            c = np.empty((1, len(arrays)), dtype=object)
            for i, a in enumerate(arrays):
                c[0, i] = a
            return c

        labels = cells(np.array([[1.0, 2, 3], [2, 1, 1]]), np.array([[3.0, 1, 2]]))
        scipy.io.savemat(src / "evaluation" / "gt.mat", {"gt_tuple_label": labels})
        flags = cells(np.array([[True], [False]]), np.array([[True]]))
        scipy.io.savemat(src / "evaluation" / "zeroShot.mat", {"zeroShot": flags})
    return src


def test_tiny_vrd_known_answer(tmp_path):
    src = _tiny(tmp_path)
    out = tmp_path / "out"
    s = vrd_to_vg_sgg(src, out)
    assert (s["images"], s["skipped_no_image"], s["objects"], s["relations"]) == (2, 1, 5, 4)
    assert (s["self_relations"], s["duplicate_relations"], s["boxes_with_two_classes"]) == (1, 1, 1)
    records = json.loads((out / "image_data.json").read_text())
    assert [(r["image_id"], r["file_name"], r["width"], r["height"]) for r in records] == [
        (1, "a.jpg", 64, 48),
        (3, "c.png", 32, 32),  # ids follow the json position (b.jpg is 2)
    ]
    _, boxes, labels, _, rels = load_graphs(out / "VG-SGG.h5", "test", filter_empty_rels=False)
    # a.jpg: scale 1024 / 64 = 16, so the decoded boxes are exact
    np.testing.assert_array_equal(
        boxes[0] / 16, [[1, 0, 63, 9], [0, 4, 19, 47], [0, 4, 19, 47]]
    )  # minus 1 on every coordinate of [xmin, ymin, xmax, ymax]
    assert labels[0].tolist() == [1, 2, 3]
    assert rels[0].tolist() == [[0, 1, 2], [0, 2, 1], [0, 1, 2]]
    np.testing.assert_array_equal(boxes[1] / 32, [[0, 0, 31, 31], [4, 2, 8, 7]])
    assert labels[1].tolist() == [3, 1] and rels[1].tolist() == [[0, 1, 2]]
    # gt.mat [s, p, o] 1-based, flagged rows [1, 2, 3] and [3, 1, 2] -> (s-1, o-1, p)
    assert json.loads((out / "zero_shot_triplets.json").read_text()) == [[0, 2, 2], [2, 1, 1]]
    assert s["zero_shot"]["triplets"] == 2
    assert s["zero_shot"]["relations"] == 0  # a.jpg's (0, 1, 2), (0, 2, 1) are not flagged
    assert (out / "LICENSE").read_text() == "tiny licence notice\n"
    coco = json.loads((out / "annotations" / "instances_test.json").read_text())
    assert [a["bbox"] for a in coco["annotations"] if a["image_id"] == 1] == [
        [1, 0, 63, 10],  # [x1, y1, w, h] = [xmin - 1, ymin - 1, xmax - xmin + 1, ...]
        [0, 4, 20, 44],
        [0, 4, 20, 44],
    ]
    assert [a["category_id"] for a in coco["annotations"]] == [1, 2, 3, 3, 1]
    assert json.loads((out / "vrd_conversion.json").read_text())["relations"] == 4


def test_tiny_vrd_train_split_and_missing_optional_files(tmp_path):
    src = _tiny(tmp_path, mats=False)
    (src / "json_dataset" / "annotations_test.json").rename(
        src / "json_dataset" / "annotations_train.json"
    )
    (src / "LICENSE").unlink()
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="LICENSE"):
        s = vrd_to_vg_sgg(src, out, split="train")
    assert s["h5_split"] == 0 and not s["zero_shot"]["written"]
    assert not (out / "zero_shot_triplets.json").exists()
    with h5py.File(out / "VG-SGG.h5", "r") as f:
        assert f["split"][()].tolist() == [0, 0]
    (src / "json_dataset" / "annotations_train.json").rename(
        src / "json_dataset" / "annotations_test.json"
    )
    (src / "LICENSE").write_text("back\n")
    with pytest.warns(UserWarning, match="zeroShot.mat"):  # the test split wants the .mat files
        s = vrd_to_vg_sgg(src, tmp_path / "out2")
    assert s["h5_split"] == 2 and not s["zero_shot"]["written"]


def test_ids_skip_the_corrupted_vg_ids():
    ids = vrd_image_ids(4000)
    assert ids[:3] == [1, 2, 3] and len(set(ids)) == 4000
    assert not {1592, 1722, 4616, 4617} & set(ids)
    assert ids[1590] == 1591 and ids[1591] == 1593 and ids[-1] == 4002


def test_tiny_vrd_through_the_cli(tmp_path, capsys):
    src = _tiny(tmp_path)
    out = tmp_path / "cli_out"
    assert cli.main(["data", "convert", "vrd", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 images" in text and "4 relations" in text and "images stay in" in text
    assert (out / "VG-SGG.h5").is_file()
    assert cli.main(["data", "convert", "vrd", str(src), "--out", str(out), "--classes", "a"]) == 2
    assert "--classes" in capsys.readouterr().err
    assert cli.main(["data", "convert", "vrd", str(src), "--out", str(out), "--split", "val"]) == 2
    assert "split" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ bad input


def _edit(src: Path, fn) -> Path:
    path = src / "json_dataset" / "annotations_test.json"
    ann = json.loads(path.read_text())
    fn(ann)
    path.write_text(json.dumps(ann))
    return path


def _one_line_error(src: Path, out: Path, *needles: str, **kw) -> None:
    with pytest.raises(DataError) as e:
        vrd_to_vg_sgg(src, out, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


def test_bad_inputs_raise_one_data_error_naming_file_and_image(tmp_path):
    src = _tiny(tmp_path)
    ann_file = str(src / "json_dataset" / "annotations_test.json")
    out = tmp_path / "out"
    _one_line_error(tmp_path / "nowhere", out, "nowhere")
    _one_line_error(src, out, "'b.jpg'", ann_file, images_only=False)  # b.jpg: no file
    _one_line_error(src, out, "annotations_train.json", split="train")

    def inverted(a):
        a["c.png"][0]["object"]["bbox"] = [8, 3, 5, 9]  # ymin > ymax

    _edit(src, inverted)
    _one_line_error(src, out, ann_file, "'c.png'", "ymin > ymax")
    src = _tiny(tmp_path / "2")
    ann_file = str(src / "json_dataset" / "annotations_test.json")

    def no_subject(a):
        del a["a.jpg"][2]["subject"]

    _edit(src, no_subject)
    _one_line_error(src, out, ann_file, "'a.jpg'", "relationship 2", "subject")
    src = _tiny(tmp_path / "3")
    ann_file = str(src / "json_dataset" / "annotations_test.json")

    def bad_predicate(a):
        a["b.jpg"][0]["predicate"] = 7  # also checked for entries without an image file

    _edit(src, bad_predicate)
    _one_line_error(src, out, ann_file, "'b.jpg'", "predicate 7", "0..1")
    (src / "json_dataset" / "annotations_test.json").write_text("[1, 2]")
    _one_line_error(src, out, ann_file, "JSON object")
    (src / "json_dataset" / "annotations_test.json").write_text("{bad json")
    _one_line_error(src, out, ann_file)
    (src / "json_dataset" / "objects.json").unlink()
    _one_line_error(src, out, "objects.json")


# ------------------------------------------------------------------------ training smoke test


def _tiny_centernet(path: Path, num_classes: int) -> str:
    """An untrained tiny CenterNet checkpoint (as tests/test_model_contract.py writes one)."""
    import percepta
    from percepta import checkpoints
    from percepta import config as _config
    from percepta.engine.build import build_model

    cfg = _config.load(
        None,
        [
            "model.name=centernet",
            "model.backbone=test_resnet",
            "model.input_size=64",
            f"model.num_classes={num_classes}",
            "model.neck_channels=[32,16,8]",
            "model.head_conv=8",
        ],
    )
    torch.manual_seed(0)
    state = {
        "format": checkpoints.FORMAT,
        "version": checkpoints.VERSION,
        "percepta_version": percepta.__version__,
        "task": "detection",
        "config": _config.to_dict(cfg),
        "model": build_model(cfg).state_dict(),
        "ema": None,
    }
    checkpoints.save_checkpoint(state, path)
    return str(path)


def test_motifs_trains_and_evaluates_on_converted_vrd(real, tmp_path):
    """The shipped config, 2 iterations on the 60 converted images, then the evaluation on them
    (a smoke test of the real-data path: train and evaluation images are the same)."""
    from percepta import config
    from percepta.engine import launch

    src, out, _ = real
    image_dir = str((src / "images").resolve())
    det = _tiny_centernet(tmp_path / "det.pt", 100)
    cfg = config.load(
        REPO / "configs" / "scene_graph" / "motifs_predcls_vrd.yaml",
        [
            f"data.root={out}",
            f"data.train.image_dir={image_dir}",
            f"data.val.image_dir={image_dir}",
            f"model.detector_checkpoint={det}",
            f"output_dir={tmp_path / 'runs'}",
            "model.obj_dim=16",
            "model.pooling_dim=16",
            "model.hidden_dim=8",
            "model.embed_dim=8",
            "model.roi_size=3",
            "model.batch_size_per_image=16",
            "train.max_iters=2",
            "train.batch_size=2",
            "train.progress=false",
            "train.log_period=1",
        ],
    )
    with pytest.warns(UserWarning, match="zero"):  # split 2 has no frequency statistics
        metrics = launch.train(cfg)
    for k in (20, 50, 100):
        assert 0.0 <= metrics[f"R@{k}"] <= 1.0 and 0.0 <= metrics[f"mR@{k}"] <= 1.0
    assert metrics["R@20"] <= metrics["R@50"] <= metrics["R@100"]
    assert np.isfinite(metrics["zR@100"])  # the converted images hold zero-shot relations
    run = tmp_path / "runs" / "motifs_predcls_vrd"
    assert (run / "checkpoints" / "last.pt").is_file()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval" in m for m in lines)
    steps = [m for m in lines if "loss_rel" in m]
    assert [m["iteration"] for m in steps] == [1, 2]
    assert all(np.isfinite(m["loss_rel"]) and m["loss_rel"] > 0 for m in steps)
