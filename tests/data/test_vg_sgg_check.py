"""`percepta data check` on VG-SGG files (percepta.data.vg_sgg_check).

A clean dataset written by the writer passes with statistics counted here from its inputs;
every defect of broken copies of the reference h5 (tests/fixtures/sgg_model/vg_load_graphs.json,
see PROVENANCE.md) is named with its key and image; the third-party vg_sgg_ships files
(../shared/data, read in place) check clean through the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from percepta.cli import main
from percepta.data import vg_sgg as V
from percepta.data.vg_sgg_check import check_vg_sgg, find_companions, vg_sgg_files

REF = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "sgg_model" / "vg_load_graphs.json").read_text()
)
OBJS, PREDS, ATTRS = ["cat", "dog", "mat"], ["on", "near", "has"], ["red"]


def _dataset(root: Path, n: int = 12, with_images: bool = True) -> tuple[dict, list]:
    """n images: even ones train (split 0), odd test (2); image 5 without boxes, 7 without
    relations; relation (0, 1, 1) twice in image 0 (a duplicate)."""
    rng = np.random.default_rng(3)
    ims = []
    for k in range(n):
        nb = 0 if k == 5 else 2 + k % 3
        x1 = rng.integers(0, 60, (nb, 2))
        boxes = np.concatenate([x1, x1 + rng.integers(4, 60, (nb, 2))], 1).astype(float)
        rels = [] if k in (5, 7) else [[0, 1, 1 + k % 3], [1, 0, 2]]
        if k == 0:
            rels.append([0, 1, 1])
        ims.append(
            V.SGGImage(
                100 + k,
                f"img/{k}.png",
                128,
                128,
                boxes,
                rng.integers(1, 3, nb),  # never class 3 ('mat')
                np.array(rels, dtype=int).reshape(-1, 3),
                split=2 if k % 2 else 0,
            )
        )
    paths = V.write_vg_sgg(root, ims, OBJS, PREDS, ATTRS)
    if with_images:
        (root / "img").mkdir()
        for k in range(n):
            (root / "img" / f"{k}.png").write_bytes(b"")
    return paths, ims


def _kinds(report) -> dict[str, list]:
    out: dict[str, list] = {}
    for p in report.problems:
        out.setdefault(p.kind, []).append((p.severity, p.record))
    return out


def test_clean_dataset(tmp_path):
    paths, ims = _dataset(tmp_path)
    assert find_companions(paths["h5"]) == (paths["dicts"], paths["image_data"])
    r = check_vg_sgg(paths["h5"], image_dir=tmp_path)
    assert r.ok, r.format_text()
    kinds = _kinds(r)
    assert set(kinds) == {"unused_classes", "no_statistics_images"}  # 'mat' has no box
    assert "['mat']" in next(p.message for p in r.problems if p.kind == "unused_classes")
    assert (r.num_images, r.num_categories, r.num_predicates) == (12, 3, 3)
    assert r.num_annotations == sum(len(im.boxes) for im in ims)
    assert r.num_relations == sum(len(im.relations) for im in ims)
    assert r.num_images_without_annotations == 1
    s = r.statistics
    for value in (0, 2):
        sel = [im for im in ims if im.split == value]
        assert s["per_split"][str(value)] == {
            "images": len(sel),
            "images_with_boxes": sum(1 for im in sel if len(im.boxes)),
            "images_with_relations": sum(1 for im in sel if len(im.relations)),
            "boxes": sum(len(im.boxes) for im in sel),
            "relations": sum(len(im.relations) for im in sel),
        }
    # official defaults: 6 train-split images with relations, all held out for val
    assert s["loader_splits"] == {"train": 0, "val": 6, "test": 4}
    all_preds = np.concatenate([im.relations[:, 2] for im in ims if len(im.relations)])
    counts = np.bincount(all_preds, minlength=4)
    exp_top = sorted(((PREDS[p - 1], int(counts[p])) for p in (1, 2, 3) if counts[p]),
                     key=lambda t: -t[1])  # fmt: skip
    assert sorted(map(tuple, s["predicates_top10"]), key=lambda t: -t[1]) == exp_top
    assert s["duplicate_relations"] == 1
    assert s["frequency"]["images"] == 0
    fg, bg = V.vg_statistics(paths["h5"], paths["dicts"], num_val_im=0)
    assert s["frequency_num_val_im_0"]["fg_total"] == int(fg.sum())
    assert s["frequency_num_val_im_0"]["bg_total"] == int(bg.sum())
    text = r.format_text()
    assert "split 0: 6 images" in text and "loader splits" in text and "predicates (top 10" in text
    json.loads(r.to_json())  # JSON-safe


def test_missing_images_and_image_data(tmp_path):
    paths, _ = _dataset(tmp_path)
    for k in (2, 9, 10):
        (tmp_path / "img" / f"{k}.png").unlink()
    r = check_vg_sgg(paths["h5"], image_dir=tmp_path)
    (p,) = [p for p in r.problems if p.kind == "missing_images"]
    assert p.severity == "error" and p.message.startswith("3 of 12 image files not found")
    assert "img/2.png, img/9.png, img/10.png" in p.message
    assert check_vg_sgg(paths["h5"]).ok  # without an image folder, files are not looked at
    recs = json.loads(paths["image_data"].read_text())
    paths["image_data"].write_text(json.dumps(recs[:-1]))
    r = check_vg_sgg(paths["h5"])
    assert _kinds(r)["image_count_mismatch"] == [("error", "(image data)")]
    recs[3]["width"] = 0
    paths["image_data"].write_text(json.dumps(recs))
    assert _kinds(check_vg_sgg(paths["h5"]))["bad_image_record"] == [("error", "record [3]")]


def _ref_h5(path: Path, **changes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in REF["inputs"]["h5"].items():
            a = np.array(v["data"], dtype=v["dtype"]).reshape(v["shape"])
            if k in changes:
                a = changes[k](a.copy())
            f.create_dataset(k, data=a)
    (path.parent / f"{path.stem}-dicts.json").write_text(json.dumps(REF["inputs"]["dicts_json"]))
    return path


def _put(idx, value):
    def fn(a):
        a[idx] = value
        return a

    return fn


def test_reference_file_warnings(tmp_path):
    """The official synthetic file is loadable; it has a split value of 1 and no image data."""
    r = check_vg_sgg(_ref_h5(tmp_path / "VG-SGG.h5"))
    assert r.ok, r.format_text()
    k = _kinds(r)
    assert k["unused_split_value"] == [("warning", "image 14")]
    assert k["box_outside_frame"][0] == ("warning", "image 8, row 17")  # [-1, 0, 4, 7]
    assert (r.num_images, r.num_annotations, r.num_relations) == (16, 39, 33)
    assert r.statistics["per_split"]["1"]["images"] == 1


@pytest.mark.parametrize(
    "changes, kind, record",
    [
        ({"img_to_last_box": _put(15, 39)}, "bad_range", "image 15"),
        ({"img_to_first_rel": _put(7, 0), "img_to_last_rel": _put(7, 0)}, "relations_without_boxes", "image 7"),
        ({"relationships": _put((9, 0), 3)}, "relation_outside_image", "image 4, row 9"),
        ({"boxes_1024": _put((22, 3), -4)}, "bad_box", "image 9, row 22"),
        ({"labels": _put((30, 0), 7)}, "label_out_of_vocabulary", "image 12, row 30"),
        ({"predicates": _put((27, 0), 5)}, "predicate_out_of_vocabulary", "image 13, row 27"),
        ({"attributes": _put((1, 3), -1)}, "bad_attribute", "image 0, row 1"),
    ],
)  # fmt: skip
def test_each_defect_is_named(tmp_path, changes, kind, record):
    r = check_vg_sgg(_ref_h5(tmp_path / "VG-SGG.h5", **changes))
    assert not r.ok
    errs = {(p.kind, p.record) for p in r.errors}
    assert (kind, record) in errs, r.format_text()
    assert len(r.errors) == 1


def test_layout_warnings(tmp_path):
    h5 = _ref_h5(
        tmp_path / "VG-SGG.h5",
        img_to_last_box=_put(0, 1),  # row 2 now belongs to no image
        relationships=_put((0, 1), 0),  # 0 -> 0: a self relation
    )
    k = _kinds(check_vg_sgg(h5))
    assert k["ranges_not_contiguous"] == [("warning", "image 1")]
    assert k["unowned_rows"] == [("warning", "(no image), row 2")]
    assert k["self_relation"] == [("warning", "image 0, row 0")]


def test_structural_error_and_missing_dicts(tmp_path):
    h5 = _ref_h5(tmp_path / "VG-SGG.h5")
    (tmp_path / "VG-SGG-dicts.json").unlink()
    r = check_vg_sgg(h5)
    assert r.ok and _kinds(r)["no_dicts"] == [("warning", "(dicts)")]
    (tmp_path / "VG-SGG-dicts.json").write_text('{"label_to_idx": {"a": 2}}')
    assert _kinds(check_vg_sgg(h5))["bad_dicts"] == [("error", "(dicts)")]
    with h5py.File(h5, "a") as f:
        del f["img_to_last_rel"]
    r = check_vg_sgg(h5)
    assert [(p.kind, p.message) for p in r.errors][0][0] == "bad_file"
    assert "key 'img_to_last_rel' is missing" in r.errors[0].message


def test_cli_routes_h5_and_folders(tmp_path, capsys):
    paths, _ = _dataset(tmp_path / "ds")
    assert main(["data", "check", str(paths["h5"]), "--images", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{paths['h5']}: 12 images (1 without boxes)")
    assert "0 errors" in out and "frequency statistics" in out
    assert main(["data", "check", str(tmp_path / "ds"), "--json"]) == 0
    (rep,) = json.loads(capsys.readouterr().out)
    assert rep["num_relations"] == 21 and rep["ok"] is True
    assert vg_sgg_files(tmp_path / "ds") == [paths["h5"]]
    bad = _ref_h5(tmp_path / "bad" / "VG-SGG.h5", img_to_last_box=_put(15, 39))
    assert main(["data", "check", str(bad)]) == 1
    assert "error bad_range (1):" in capsys.readouterr().out
    shutil.copy(bad, tmp_path / "bad" / "VG-SGG-2.h5")
    assert main(["data", "check", str(tmp_path / "bad")]) == 1
    assert "2 files checked, 2 with errors" in capsys.readouterr().out


@pytest.mark.shared_data
def test_cli_ships_runs_clean(cocodata, capsys):
    h5 = cocodata.shared("vg_sgg_ships", "VG-SGG.h5")
    assert main(["data", "check", str(h5)]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith(f"{h5}: 7306 images (2 without boxes), 101156 boxes, 110772 relations")
    assert "30 object classes, 52 predicates; 0 errors" in first
    assert "split 0: 5997 images" in out and "split 2: 1309 images" in out
    assert "no 'boxes_512'" in out and "'predicates' stored 1-D" in out
    assert "predicates (top 10" in out and "frequency statistics" in out
