"""VG-SGG files (percepta.data.vg_sgg) against the official Scene-Graph-Benchmark loader.

References: ``tests/fixtures/sgg_model/vg_load_graphs.json`` (outputs of the unmodified official
``load_info`` / ``load_graphs`` on a 16-image synthetic h5, see that folder's PROVENANCE.md),
an independent loop-based re-implementation of ``get_VG_statistics`` written here from the
official code (per image, n x n matrices, Python loops), and the third-party files in
``../shared/data/vg_sgg_ships`` (read in place).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from percepta.data import vg_sgg as V
from percepta.errors import ConfigError, DataError

REF = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "sgg_model" / "vg_load_graphs.json").read_text()
)
CASES = REF["load_graphs_cases"]
F32 = REF["load_graphs_float32_boxes_variant"]


def _write_h5(path: Path, datasets: dict) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=np.array(v["data"], dtype=v["dtype"]).reshape(v["shape"]))
    return path


@pytest.fixture(scope="module")
def ref_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vg_ref")
    h5 = _write_h5(d / "VG-SGG.h5", REF["inputs"]["h5"])
    f32 = _write_h5(d / "f32.h5", {**REF["inputs"]["h5"], "boxes_1024": F32["h5_boxes_1024"]})
    dicts = d / "VG-SGG-dicts.json"
    dicts.write_text(json.dumps(REF["inputs"]["dicts_json"]))
    return {"h5": h5, "f32": f32, "dicts": dicts, "dir": d}


def _call(h5, args):
    return V.load_graphs(
        h5,
        args["split"],
        num_im=args["num_im"],
        num_val_im=args["num_val_im"],
        filter_empty_rels=args["filter_empty_rels"],
        filter_non_overlap=args["filter_non_overlap"],
    )


# --------------------------------------------------------------------------------------------
# the official loader's recorded outputs (exact: masks, boxes, dtypes, labels, relations)


@pytest.mark.parametrize(
    "k", range(len(CASES)), ids=lambda k: "-".join(map(str, CASES[k]["args"].values()))
)
def test_load_graphs_matches_official(ref_files, k):
    case = CASES[k]
    mask, boxes, classes, attrs, rels = _call(ref_files["h5"], case["args"])
    assert mask.dtype == np.bool_ and mask.tolist() == case["split_mask"]
    assert np.flatnonzero(mask).tolist() == case["image_indices"]
    assert [b.tolist() for b in boxes] == case["boxes"]
    assert {str(b.dtype) for b in boxes} <= {case["boxes_dtype"]}
    assert [c.tolist() for c in classes] == case["gt_classes"]
    assert [a.tolist() for a in attrs] == case["gt_attributes"]
    assert [r.tolist() for r in rels] == case["relationships"]
    assert [str(r.dtype) for r in rels] == case["relationships_dtype"]


def test_all_72_cases_are_there():
    assert len(CASES) == 72


@pytest.mark.parametrize("k", range(len(F32["cases"])))
def test_load_graphs_float32_boxes(ref_files, k):
    case = F32["cases"][k]
    mask, boxes, _, _, rels = _call(ref_files["f32"], case["args"])
    assert mask.tolist() == case["split_mask"]
    assert [b.tolist() for b in boxes] == case["boxes"]  # float32 arithmetic, exact
    assert all(str(b.dtype) == case["boxes_dtype"] for b in boxes)
    assert [r.tolist() for r in rels] == case["relationships"]


def test_load_info_matches_official(ref_files):
    for add_bg, key in ((True, "synthetic_add_bg_true"), (False, "synthetic_add_bg_false")):
        exp = REF["load_info"][key]
        got = V.load_info(ref_files["dicts"], add_bg=add_bg)
        assert list(got) == [
            exp["ind_to_classes"],
            exp["ind_to_predicates"],
            exp["ind_to_attributes"],
        ]


def test_load_info_official_vg150_vocabulary(tmp_path):
    """The official VG150 names, written back into a dicts json in a scrambled key order."""
    exp = REF["load_info"]["official_VG-SGG-dicts-with-attri.json"]
    rng = np.random.default_rng(0)
    info = {}
    for key, names in (
        ("label_to_idx", exp["ind_to_classes"]),
        ("predicate_to_idx", exp["ind_to_predicates"]),
        ("attribute_to_idx", exp["ind_to_attributes"]),
    ):
        pairs = [(n, i) for i, n in enumerate(names) if i > 0]
        info[key] = dict(pairs[j] for j in rng.permutation(len(pairs)))
    p = tmp_path / "dicts.json"
    p.write_text(json.dumps(info))
    got = V.load_info(p)
    assert [len(x) for x in got] == [151, 51, 201]
    assert list(got) == [exp["ind_to_classes"], exp["ind_to_predicates"], exp["ind_to_attributes"]]


def test_load_info_refuses_gaps_and_missing_keys(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"label_to_idx": {"a": 1, "b": 3}, "predicate_to_idx": {"on": 1}}))
    with pytest.raises(DataError, match=r"d\.json: 'label_to_idx' indices must be exactly 1\.\.2"):
        V.load_info(p)
    p.write_text(json.dumps({"label_to_idx": {"a": 1}}))
    with pytest.raises(DataError, match="key 'predicate_to_idx' is missing"):
        V.load_info(p)


def test_split_and_option_errors(ref_files):
    with pytest.raises(ConfigError, match="train split only"):
        V.load_graphs(ref_files["h5"], "val", filter_non_overlap=True)
    with pytest.raises(ConfigError, match="split must be one of"):
        V.load_graphs(ref_files["h5"], "training")


# --------------------------------------------------------------------------------------------
# statistics: an independent loop-based get_VG_statistics (official structure, per image)


def _ref_statistics(h5_path, num_classes, num_predicates, num_val_im=5000, must_overlap=True):
    with h5py.File(h5_path, "r") as f:
        split = f["split"][:]
        fb, lb = f["img_to_first_box"][:], f["img_to_last_box"][:]
        fr, lr = f["img_to_first_rel"][:], f["img_to_last_rel"][:]
        labels = f["labels"][:].reshape(-1)
        raw = f["boxes_1024"][:]
        rel_all = f["relationships"][:]
        pred_all = f["predicates"][:].reshape(-1)
    sel = [i for i in range(len(split)) if split[i] == 0 and fb[i] >= 0 and fr[i] >= 0]
    sel = sel[num_val_im:] if num_val_im > 0 else sel
    fg = np.zeros((num_classes, num_classes, num_predicates), dtype=np.int64)
    bg = np.zeros((num_classes, num_classes), dtype=np.int64)
    for i in sel:
        cxcywh = raw[fb[i] : lb[i] + 1]
        boxes = np.empty_like(cxcywh)
        for j, (cx, cy, w, h) in enumerate(cxcywh):
            if cxcywh.dtype.kind == "i":  # int32 storage: trunc toward zero
                x1, y1 = math.trunc(cx - w / 2), math.trunc(cy - h / 2)
            else:  # float32 storage: float32 arithmetic
                x1, y1 = cx - w / np.float32(2), cy - h / np.float32(2)
            boxes[j] = (x1, y1, x1 + w, y1 + h)
        cls = labels[fb[i] : lb[i] + 1]
        n = len(boxes)
        b32 = boxes.astype(np.float32)
        kept = []
        for r in range(fr[i], lr[i] + 1):  # filter_non_overlap: boxlist_iou (+1) > 0
            s, o = rel_all[r] - fb[i]
            one = np.float32(1)
            iw = max(min(b32[s, 2], b32[o, 2]) - max(b32[s, 0], b32[o, 0]) + one, 0)
            ih = max(min(b32[s, 3], b32[o, 3]) - max(b32[s, 1], b32[o, 1]) + one, 0)
            if iw * ih > 0:
                kept.append((s, o, pred_all[r]))
        if not kept:
            continue
        for s, o, p in kept:
            fg[cls[s], cls[o], p] += 1
        b64 = boxes.astype(np.float64)
        pairs = []
        for a in range(n):
            for b in range(n):
                iw = max(min(b64[a, 2], b64[b, 2]) - max(b64[a, 0], b64[b, 0]), 0)
                ih = max(min(b64[a, 3], b64[b, 3]) - max(b64[a, 1], b64[b, 1]), 0)
                if a != b and iw * ih > 0:
                    pairs.append((a, b))
        if not pairs or not must_overlap:
            pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
        for a, b in pairs:
            bg[cls[a], cls[b]] += 1
    return fg, bg


def _ref_pred_dist(fg, bg):
    out = np.zeros(fg.shape, dtype=np.float64)
    for s in range(fg.shape[0]):
        for o in range(fg.shape[1]):
            row = [bg[s, o] + 1] + [int(v) for v in fg[s, o, 1:]]
            total = sum(row)
            out[s, o] = [math.log(v / total + 1e-3) for v in row]
    return out


@pytest.mark.parametrize("num_val_im", [5000, 0, 2])
@pytest.mark.parametrize("h5_key", ["h5", "f32"])
def test_statistics_synthetic(ref_files, num_val_im, h5_key):
    fg, bg = V.vg_statistics(ref_files[h5_key], ref_files["dicts"], num_val_im=num_val_im)
    efg, ebg = _ref_statistics(ref_files[h5_key], 7, 5, num_val_im)
    assert fg.dtype == np.int64 and bg.dtype == np.int64
    assert fg.shape == (7, 7, 5) and bg.shape == (7, 7)
    np.testing.assert_array_equal(fg, efg)
    np.testing.assert_array_equal(bg, ebg)
    if num_val_im == 5000:  # the official fixed split leaves no image of these 16
        assert fg.sum() == 0 and bg.sum() == 0
    else:
        assert fg.sum() > 0 and bg.sum() > 0


def test_statistics_synthetic_hand_counts(ref_files):
    """num_val_im=0: train = images 0, 3, 8, 9, 11, 12, 13 after the non-overlap filter."""
    fg, bg = V.vg_statistics(ref_files["h5"], ref_files["dicts"], num_val_im=0)
    # kept relations (+1 IoU > 0): image 0: both; 3: (0,1,1) x2, (0,1,2), (2,3,3), not the
    # far pair (0,3,4) / (3,0,4); 8: (0,1), (1,0), not (2,3) / (3,2); 9: the overlapping and
    # the touching pair, not the 1-pixel gap or the far box; 11: one; 12: one of two; 13: two
    assert int(fg.sum()) == 2 + 4 + 2 + 2 + 1 + 1 + 2
    # (man, shirt, on): image 0 once + image 3 twice (an exact duplicate, counted)
    assert fg[1, 2, 1] == 3 and fg[1, 2, 2] == 2 and fg[6, 6, 1] == 2 and fg[1, 6, 4] == 0
    fg_nf, bg_nf = V.vg_statistics(ref_files["h5"], ref_files["dicts"], False, num_val_im=0)
    np.testing.assert_array_equal(fg_nf, fg)
    ebg = _ref_statistics(ref_files["h5"], 7, 5, 0, must_overlap=False)[1]
    np.testing.assert_array_equal(bg_nf, ebg)


def test_pred_dist_matches_loop(ref_files):
    fg, bg = V.vg_statistics(ref_files["h5"], ref_files["dicts"], num_val_im=0)
    fg0, bg0 = fg.copy(), bg.copy()
    pd = V.predicate_log_distribution(fg, bg)
    assert pd.dtype == np.float32 and pd.shape == fg.shape
    np.testing.assert_allclose(pd, _ref_pred_dist(fg, bg), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(fg, fg0)  # inputs untouched
    np.testing.assert_array_equal(bg, bg0)
    # a pair never seen: all mass on background -> log(1 + 1e-3), the rest log(1e-3)
    assert pd[0, 0, 0] == pytest.approx(math.log(1 + 1e-3), abs=1e-6)
    assert pd[0, 0, 1] == pytest.approx(math.log(1e-3), abs=1e-6)


def test_statistics_cached(ref_files, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    a = V.statistics_cached(ref_files["h5"], ref_files["dicts"], cache, num_val_im=0)
    efg, ebg = _ref_statistics(ref_files["h5"], 7, 5, 0)
    np.testing.assert_array_equal(a["fg_matrix"], efg)
    np.testing.assert_array_equal(a["bg_matrix"], ebg)
    np.testing.assert_allclose(a["pred_dist"], _ref_pred_dist(efg, ebg), atol=1e-6, rtol=0)
    assert a["obj_classes"][0] == "__background__" and len(a["rel_classes"]) == 5
    path = a["cache_file"]
    assert path.is_file() and path.parent == cache and path.suffix == ".npz"
    with np.load(path, allow_pickle=False) as z:  # no pickle inside
        assert set(z.files) == {"key", "fg_matrix", "bg_matrix", "pred_dist"}

    calls = []
    real = V.vg_statistics
    monkeypatch.setattr(V, "vg_statistics", lambda *a, **k: calls.append(1) or real(*a, **k))
    b = V.statistics_cached(ref_files["h5"], ref_files["dicts"], cache, num_val_im=0)
    assert calls == []  # served from the cache
    np.testing.assert_array_equal(b["fg_matrix"], a["fg_matrix"])

    path.write_bytes(b"not a zip file")  # corrupt -> recomputed, rewritten
    c = V.statistics_cached(ref_files["h5"], ref_files["dicts"], cache, num_val_im=0)
    assert calls == [1]
    np.testing.assert_array_equal(c["fg_matrix"], efg)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["pred_dist"] = arrays["pred_dist"] + 1  # consistent file, inconsistent content
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    d = V.statistics_cached(ref_files["h5"], ref_files["dicts"], cache, num_val_im=0)
    assert calls == [1, 1]
    np.testing.assert_array_equal(d["pred_dist"], a["pred_dist"])

    other = V.statistics_cached(ref_files["h5"], ref_files["dicts"], cache)  # other split
    assert other["cache_file"] != path and calls == [1, 1, 1]
    st = ref_files["h5"].stat()
    os.utime(ref_files["h5"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "edited"
    e = V.statistics_cached(ref_files["h5"], ref_files["dicts"], cache, num_val_im=0)
    assert e["cache_file"] != path and calls == [1, 1, 1, 1]
    assert not list(cache.glob("*.tmp"))


# --------------------------------------------------------------------------------------------
# writer


def _images():
    """Integer boxes on 128- and 256-px images: boxes * 1024 / max(w, h) are integers."""
    return [
        V.SGGImage(
            1, "a.png", 128, 96,
            np.array([[0, 0, 5, 7], [3, 4, 128, 96], [10, 11, 13, 20]], float),
            np.array([1, 2, 3]),
            np.array([[0, 1, 1], [2, 0, 2], [0, 1, 1]]),
            attributes=np.array([[1] + [0] * 9, [0] * 10, [2, 1] + [0] * 8]),
        ),
        V.SGGImage(2, "b.png", 64, 64, np.zeros((0, 4)), np.zeros(0, int), np.zeros((0, 3), int), 2),
        V.SGGImage(3, "sub/c.png", 256, 200, np.array([[1, 2, 33, 45], [100, 100, 101, 101]], float),
                   np.array([3, 3]), np.zeros((0, 3), int), 2),
        V.SGGImage(4, "d.png", 200, 256, np.array([[1, 1, 7, 9], [2, 3, 9, 11], [0, 0, 200, 256]], float),
                   np.array([2, 1, 3]), np.array([[1, 2, 2]]), 0),
    ]  # fmt: skip


def test_writer_round_trip(tmp_path):
    ims = _images()
    paths = V.write_vg_sgg(tmp_path, ims, ["a", "b", "c"], ["on", "has"], ["red", "big"])
    assert paths == {
        "h5": tmp_path / "VG-SGG.h5",
        "dicts": tmp_path / "VG-SGG-dicts.json",
        "image_data": tmp_path / "image_data.json",
    }
    ref_h5 = REF["inputs"]["h5"]
    with h5py.File(paths["h5"], "r") as f:
        assert set(f.keys()) == set(ref_h5)  # every key of the official file, same dtypes
        for k in f:
            assert str(f[k].dtype) == ref_h5[k]["dtype"], k
            assert f[k].ndim == len(ref_h5[k]["shape"]), k
        assert f["img_to_first_box"][:].tolist() == [0, -1, 3, 5]
        assert f["img_to_last_box"][:].tolist() == [2, -1, 4, 7]
        assert f["img_to_first_rel"][:].tolist() == [0, -1, -1, 3]
        assert f["img_to_last_rel"][:].tolist() == [2, -1, -1, 3]
        assert f["relationships"][:].tolist() == [[0, 1], [2, 0], [0, 1], [6, 7]]  # global rows
        assert f["split"][:].tolist() == [0, 2, 2, 0]
        b512 = f["boxes_512"][:]
    sizes = {im.image_id: max(im.width, im.height) for im in ims}
    got = {}
    for split in ("train", "test"):
        mask, boxes, classes, attrs, rels = V.load_graphs(
            paths["h5"], split, filter_empty_rels=False
        )
        for i, b, c, a, r in zip(np.flatnonzero(mask), boxes, classes, attrs, rels):
            got[int(i)] = (b, c, a, r)
    assert sorted(got) == [0, 2, 3]  # image 1 has no boxes
    for i, im in enumerate(ims):
        if i not in got:
            continue
        b, c, a, r = got[i]
        px = (b / V.BOX_SCALE * sizes[im.image_id]).astype(np.float32)  # the official rescale
        np.testing.assert_array_equal(px, im.boxes.astype(np.float32))
        assert c.tolist() == im.labels.tolist()
        assert r.tolist() == im.relations.tolist()
        exp_a = im.attributes if im.attributes is not None else np.zeros((len(im.boxes), 10))
        assert a.tolist() == exp_a.tolist()
    # boxes_512 at half the resolution: the 128-px image's boxes are still integral there
    np.testing.assert_array_equal(V.convert_boxes(b512[:3]) / 512 * 128, ims[0].boxes)

    dicts = json.loads(paths["dicts"].read_text())
    assert set(dicts) == set(REF["inputs"]["dicts_json"])  # the official keys
    assert dicts["label_to_idx"] == {"a": 1, "b": 2, "c": 3}
    assert dicts["idx_to_predicate"] == {"1": "on", "2": "has"}
    assert dicts["idx_to_attribute"] == {"1": "red", "2": "big"}
    assert dicts["object_count"] == {"a": 2, "b": 2, "c": 4}
    assert dicts["predicate_count"] == {"on": 2, "has": 2}
    assert dicts["attribute_count"] == {"red": 2, "big": 1}
    assert V.load_info(paths["dicts"]) == (
        ["__background__", "a", "b", "c"],
        ["__background__", "on", "has"],
        ["__background__", "red", "big"],
    )
    recs = json.loads(paths["image_data"].read_text())
    assert [(r["image_id"], r["width"], r["height"], r["file_name"]) for r in recs] == [
        (im.image_id, im.width, im.height, im.file_name) for im in ims
    ]
    assert not list(tmp_path.glob(".*.tmp"))


def test_writer_encoding_exact_for_odd_sizes():
    """Odd widths: cx = x1 + ceil(w/2) survives the loader's trunc(cx - w/2)."""
    boxes = np.array([[0, 0, 1, 1], [3, 5, 8, 12], [1023, 1000, 1024, 1024], [7, 0, 10, 3]], float)
    enc = V.encode_boxes(boxes, 1024, 1024)
    assert enc.dtype == np.int32
    assert enc.tolist() == [[1, 1, 1, 1], [6, 9, 5, 7], [1024, 1012, 1, 24], [9, 2, 3, 3]]
    np.testing.assert_array_equal(V.convert_boxes(enc), boxes)
    # non-integral boxes: within half a pixel of the 1024 frame
    rng = np.random.default_rng(1)
    x1 = rng.uniform(0, 500, (200, 2))
    b = np.concatenate([x1, x1 + rng.uniform(1, 100, (200, 2))], 1)
    back = V.convert_boxes(V.encode_boxes(b, 700, 640)) / 1024 * 700
    assert np.abs(back - b).max() <= 0.5 * 700 / 1024 + 1e-9


@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"labels": np.array([1, 2, 4])},
            r"images\[0\] \(image_id 1\): label 4 of box 2 is outside 1\.\.3",
        ),
        ({"labels": np.array([0, 2, 3])}, "label 0 of box 0"),
        ({"relations": np.array([[0, 3, 1]])}, r"relation 0 \[0, 3, 1\] points outside"),
        ({"relations": np.array([[1, 1, 1]])}, "relates a box to itself"),
        ({"relations": np.array([[0, 1, 3]])}, r"predicate 3 of relation 0 is outside 1\.\.2"),
        ({"split": 1}, "split must be 0 .* or 2"),
        ({"image_id": 1592}, "skipped by the official"),
        (
            {"boxes": np.array([[0, 0, 5, 7], [3, 4, 3, 96], [10, 11, 13, 20]], float)},
            "box 1 .* has no area",
        ),
        (
            {"boxes": np.array([[200, 0, 300, 7], [3, 4, 9, 96], [10, 11, 13, 20]], float)},
            "box 0 .* no area inside the 128x96",
        ),
        ({"boxes": np.array([[0, 0, 5, np.nan], [3, 4, 9, 96], [10, 11, 13, 20]])}, "NaN"),
        ({"attributes": np.full((3, 10), 3)}, r"attributes must be in 0\.\.2"),
        ({"width": 0}, "width must be a positive integer"),
    ],
)
def test_writer_refuses_bad_images(tmp_path, change, match):
    ims = _images()
    for k, v in change.items():
        setattr(ims[0], k, v)
    with pytest.raises(DataError, match=match):
        V.write_vg_sgg(tmp_path, ims, ["a", "b", "c"], ["on", "has"], ["red", "big"])
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_writer_refuses_duplicate_ids_and_names(tmp_path):
    ims = _images()
    ims[2].image_id = 1
    with pytest.raises(DataError, match=r"images\[2\]: duplicate image_id 1"):
        V.write_vg_sgg(tmp_path, ims, ["a", "b", "c"], ["on", "has"], ["red", "big"])
    with pytest.raises(DataError, match=r"attributes must be in 0\.\.0"):  # no attribute names
        V.write_vg_sgg(tmp_path, _images(), ["a", "b", "c"], ["on", "has"])
    with pytest.raises(DataError, match="duplicate names"):
        V.write_vg_sgg(tmp_path, _images(), ["a", "b", "a"], ["on", "has"])
    with pytest.raises(DataError, match="__background__"):
        V.write_vg_sgg(tmp_path, _images(), ["__background__", "b", "c"], ["on", "has"])


def test_load_image_filenames(tmp_path):
    recs = [
        {"image_id": 1, "width": 4, "height": 4, "file_name": "x/one.png"},
        {"image_id": 1592, "width": 4, "height": 4},  # a corrupted VG id: skipped
        {"image_id": 7, "width": 4, "height": 4},  # official name 7.jpg
        {"image_id": "8", "width": 4, "height": 4},  # missing on disk
        {"image_id": 9, "width": 4, "height": 4},
    ]
    f = tmp_path / "image_data.json"
    f.write_text(json.dumps(recs))
    (tmp_path / "x").mkdir()
    for name in ("x/one.png", "7.jpg", "9.jpg", "1592.jpg"):
        (tmp_path / name).write_bytes(b"")
    fns, info, missing = V.load_image_filenames(tmp_path, f)
    assert fns == [os.path.join(tmp_path, n) for n in ("x/one.png", "7.jpg", "9.jpg")]
    assert [r["image_id"] for r in info] == [1, 7, 9] and missing == 1
    fns, info, missing = V.load_image_filenames(tmp_path, f, corrupted_ids=())
    assert [r["image_id"] for r in info] == [1, 1592, 7, 9] and missing == 1
    f.write_text(json.dumps({"image_id": 1}))
    with pytest.raises(DataError, match="image_data.json: image_data must be a JSON list"):
        V.load_image_filenames(tmp_path, f)


# --------------------------------------------------------------------------------------------
# malformed files: one DataError naming the file, the h5 key and the image


def _broken(tmp_path: Path, **changes) -> Path:
    h5 = {k: dict(v) for k, v in REF["inputs"]["h5"].items()}
    for key, fn in changes.items():
        if fn is None:
            del h5[key]
        else:
            arr = np.array(h5[key]["data"], dtype=h5[key]["dtype"]).reshape(h5[key]["shape"])
            arr = fn(arr)
            h5[key] = {"data": arr.tolist(), "dtype": str(arr.dtype), "shape": list(arr.shape)}
    return _write_h5(tmp_path / "bad.h5", h5)


def _set(idx, value):
    def fn(a):
        a = a.copy()
        a[idx] = value
        return a

    return fn


MALFORMED = {
    "missing_key": ({"predicates": None}, r"key 'predicates' is missing"),
    "lengths": (
        {"img_to_last_box": lambda a: a[:-1]},
        r"key 'img_to_last_box' has 15 entries but 'split' has 16",
    ),
    "label_rows": ({"labels": lambda a: a[:-2]}, r"key 'boxes_1024' must have shape \(37, 4\)"),
    "pred_rows": (
        {"predicates": lambda a: a[:-1]},
        r"key 'predicates' has 32 rows but 'relationships' has 33",
    ),
    "last_beyond": (
        {"img_to_last_box": _set(15, 39)},
        r"key 'img_to_last_box', image 15: .*36\.\.39 is not a range inside the file's 39 box rows",
    ),
    "last_before_first": (
        {"img_to_last_rel": _set(3, 1)},
        r"key 'img_to_last_rel', image 3: .*2\.\.1",
    ),
    "first_minus_two": (
        {"img_to_first_box": _set(2, -2)},
        r"key 'img_to_first_box', image 2: img_to_first_box = -2",
    ),
    "rels_without_boxes": (
        {"img_to_first_rel": _set(7, 0), "img_to_last_rel": _set(7, 0)},
        r"key 'img_to_first_rel', image 7: the image has relations but no boxes",
    ),
    "rel_outside": (
        {"relationships": _set((0, 1), 5)},
        r"key 'relationships', image 0, row 0: .*\[0, 5\] points outside the image's box rows 0\.\.2",
    ),
    "negative_width": (
        {"boxes_1024": _set((22, 2), 0)},
        r"key 'boxes_1024', image 9, row 22: .*w, h > 0",
    ),
    "label_zero": (
        {"labels": _set((30, 0), 0)},
        r"key 'labels', image 12, row 30: object label 0 < 1",
    ),
    "predicate_zero": (
        {"predicates": _set((27, 0), 0)},
        r"key 'predicates', image 13, row 27: predicate 0 < 1",
    ),
    "not_int": (
        {"img_to_first_box": lambda a: a.astype(np.float32)},
        r"key 'img_to_first_box' must be a 1-D integer array",
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_file_raises_one_data_error(tmp_path, name):
    changes, match = MALFORMED[name]
    bad = _broken(tmp_path, **changes)
    with pytest.raises(DataError, match=match) as e:
        V.load_graphs(bad, "train", filter_empty_rels=False)
    msg = str(e.value)
    assert msg.startswith(f"{bad}: ") and "\n" not in msg


def test_vocabulary_errors_name_file_key_and_image(tmp_path, ref_files):
    bad = _broken(tmp_path, predicates=_set((30, 0), 9))  # image 15 (rows 30..32)
    with pytest.raises(
        DataError,
        match=rf"^{bad}: key 'predicates', image 15, row 30: predicate 9 is beyond the dicts' 4 predicates",
    ):
        V.vg_statistics(bad, ref_files["dicts"])
    bad = _broken(tmp_path, labels=_set((4, 0), 7))  # image 1 (rows 3..4)
    with pytest.raises(
        DataError,
        match=r"key 'labels', image 1, row 4: object label 7 is beyond the dicts' 6 object classes",
    ):
        V.vg_statistics(bad, ref_files["dicts"])
    bad = _broken(tmp_path, attributes=_set((0, 0), 4))
    with pytest.raises(
        DataError, match=r"key 'attributes', image 0, row 0: .* beyond the dicts' 3 attributes"
    ):
        V.vg_statistics(bad, ref_files["dicts"])


def test_not_an_h5_file(tmp_path):
    p = tmp_path / "x.h5"
    p.write_text("hello")
    with pytest.raises(DataError, match=r"x\.h5: not a readable HDF5 file"):
        V.load_graphs(p, "train")
    with pytest.raises(DataError, match="not found"):
        V.load_graphs(tmp_path / "none.h5", "train")


# --------------------------------------------------------------------------------------------
# a third-party file: vg_sgg_ships (no boxes_512, 1-D predicates, empty 'attribute', float32)


@pytest.fixture
def ships(cocodata) -> dict[str, Path]:
    root = cocodata.shared("vg_sgg_ships")
    return {
        "h5": root / "VG-SGG.h5",
        "dicts": root / "VG-SGG-dicts.json",
        "image_data": root / "image_data.json",
    }


@pytest.mark.shared_data
def test_ships_loads(ships):
    r = V.read_roidb(ships["h5"])
    assert (r.num_images, r.num_boxes, r.num_relations) == (7306, 101156, 110772)
    assert any("boxes_512" in x for x in r.layout) and any("1-D" in x for x in r.layout)
    classes, predicates, attributes = V.load_info(ships["dicts"])
    assert (len(classes), len(predicates), attributes) == (31, 53, ["__background__"])
    with h5py.File(ships["h5"], "r") as f:
        split, fb = f["split"][:], f["img_to_first_box"][:]
        fr, lr = f["img_to_first_rel"][:], f["img_to_last_rel"][:]
        raw, rel, pred = f["boxes_1024"][:], f["relationships"][:], f["predicates"][:]
        labels = f["labels"][:, 0]
    for name, flag in (("train", 0), ("test", 2)):
        mask, boxes, classes_, attrs, rels = V.load_graphs(ships["h5"], name)
        exp = (split == flag) & (fb >= 0) & (fr >= 0)
        np.testing.assert_array_equal(mask, exp)
        assert len(boxes) == int(exp.sum()) == {"train": 3661, "test": 754}[name]
        for k in (0, len(boxes) // 2, len(boxes) - 1):  # spot checks against the raw arrays
            i = int(np.flatnonzero(mask)[k])
            n = len(boxes[k])
            cx, cy, w, h = raw[fb[i] : fb[i] + n].T
            x1, y1 = cx - w / np.float32(2), cy - h / np.float32(2)
            np.testing.assert_array_equal(boxes[k], np.stack([x1, y1, x1 + w, y1 + h], 1))
            assert boxes[k].dtype == np.float32
            np.testing.assert_array_equal(classes_[k], labels[fb[i] : fb[i] + n])
            assert attrs[k].shape == (n, 10) and not attrs[k].any()
            exp_rel = np.column_stack([rel[fr[i] : lr[i] + 1] - fb[i], pred[fr[i] : lr[i] + 1]])
            np.testing.assert_array_equal(rels[k], exp_rel)
        assert all(((r[:, :2] >= 0) & (r[:, :2] < len(b))).all() for b, r in zip(boxes, rels))


@pytest.mark.shared_data
def test_ships_statistics_match_loop(ships):
    classes, predicates, _ = V.load_info(ships["dicts"])
    c, p = len(classes), len(predicates)
    fg, bg = V.vg_statistics(ships["h5"], ships["dicts"])  # official split: 3,661 < 5,000
    assert fg.shape == (c, c, p) and fg.sum() == 0 and bg.sum() == 0
    fg, bg = V.vg_statistics(ships["h5"], ships["dicts"], num_val_im=3300)
    efg, ebg = _ref_statistics(ships["h5"], c, p, 3300)
    np.testing.assert_array_equal(fg, efg)
    np.testing.assert_array_equal(bg, ebg)
    assert fg.sum() > 500 and bg.sum() > fg.sum()
    np.testing.assert_allclose(
        V.predicate_log_distribution(fg, bg), _ref_pred_dist(fg, bg), atol=1e-6, rtol=0
    )
