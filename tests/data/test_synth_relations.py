"""Tests of the built-in relation data (``percepta data synth --task relations``).

The relation rule is checked on hand-built masks whose expected predicates follow from the
documented rules by hand; the generated scenes against geometry computed here independently
(scipy's chessboard distance transform, a re-drawn occlusion map); the files against the
existing readers (``percepta.data.coco``, ``percepta.data.vg_sgg.load_graphs``, the scene-graph
evaluator's zero-shot reader).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from percepta.cli import main
from percepta.data.synthetic import SynthOptionError, generate_detection, generate_relations
from percepta.data.synthetic import relations as rel
from percepta.data.synthetic.shapes import CLASS_NAMES
from percepta.errors import DataError, PerceptaError

N_BIG = 240


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("rel_big")
    result = generate_relations(out, num_images=N_BIG, seed=0, workers=2)
    return out, result


def _truth(out: Path) -> dict:
    return json.loads((out / "truth.json").read_text())


# ------------------------------------------------------------------------- the relation rule
def _obj(x0: int, y0: int, x1: int, y1: int, depth: int = 0, colour: str = "red", label: int = 0):
    """A rectangle covering pixel columns x0..x1-1 and rows y0..y1-1 of a 64x64 image."""
    m = np.zeros((64, 64), dtype=bool)
    m[y0:y1, x0:x1] = True
    return rel.SceneObject(label=label, mask=m, depth=depth, colour=colour)


def test_inside_and_around():
    big_, small = _obj(10, 10, 40, 40, 0, "red"), _obj(20, 20, 26, 26, 1, "blue")
    assert rel.pair_predicates(small, big_) == ("inside",)
    assert rel.pair_predicates(big_, small) == ("around",)
    # one column of 6 pixels (of 36) outside: no longer inside, covering instead
    poking = _obj(35, 20, 41, 26, 1, "blue")
    assert rel.pair_predicates(poking, big_)[0] == "covering"


def test_covering_behind_with_the_spatial_offset():
    a = _obj(10, 10, 30, 30, depth=0, colour="red")  # centre (20, 20)
    b = _obj(22, 12, 42, 28, depth=1, colour="blue")  # centre (32, 20): to the right, on top
    assert rel.pair_predicates(b, a) == ("covering", "right of")
    assert rel.pair_predicates(a, b) == ("behind", "left of")


def test_touching_up_to_one_empty_pixel():
    a = _obj(10, 10, 20, 20, colour="red")
    adjacent = _obj(20, 10, 30, 20, colour="blue")  # shares an edge, no pixel
    one_gap = _obj(21, 10, 31, 20, colour="blue")  # one empty column between them
    two_gap = _obj(22, 10, 32, 20, colour="blue")  # two empty columns
    assert rel.pair_predicates(a, adjacent) == ("touching", "left of")
    assert rel.pair_predicates(one_gap, a) == ("touching", "right of")
    assert rel.pair_predicates(a, two_gap) == ("left of",)
    # diagonal contact counts (8-connected chessboard distance)
    corner = _obj(21, 21, 31, 31, colour="blue")
    assert rel.pair_predicates(a, corner) == ("touching",)  # 45 degrees: no dominant axis


def test_spatial_needs_near_boxes_and_a_dominant_axis():
    a = _obj(10, 10, 20, 20, colour="red")  # side 10
    near_below = _obj(10, 28, 20, 38, colour="blue")  # gap 8 <= 10
    far_below = _obj(10, 41, 20, 51, colour="blue")  # gap 21 > 10
    assert rel.pair_predicates(a, near_below) == ("above",)
    assert rel.pair_predicates(near_below, a) == ("below",)
    assert rel.pair_predicates(a, far_below) == ()  # unrelated
    # offsets (12, 10): 12 < 1.5 * 10, no dominant axis; (16, 10): 16 >= 15, "left of"
    assert rel.pair_predicates(a, _obj(22, 20, 32, 30, colour="blue")) == ()
    assert rel.pair_predicates(a, _obj(26, 20, 36, 30, colour="blue")) == ("left of",)


def test_bigger_than_same_colour_and_priority():
    large = _obj(2, 2, 22, 22, colour="green")  # 400 px
    small = _obj(50, 50, 62, 62, colour="green")  # 144 px, far away
    mid = _obj(50, 2, 63, 15, colour="blue")  # 169 px: 400 / 169 < 2.5
    assert rel.pair_predicates(large, small) == ("bigger than", "same colour as")
    assert rel.pair_predicates(small, large) == ("same colour as",)
    assert rel.pair_predicates(large, mid) == ()
    # every rule at once: contact first, then spatial, size, colour
    touching_small = _obj(23, 8, 33, 18, colour="green")  # one empty column right of `large`
    assert rel.pair_predicates(large, touching_small) == (
        "touching",
        "left of",
        "bigger than",
        "same colour as",
    )
    objs = [large, small, mid]
    assert rel.scene_relations(objs) == [
        (0, 1, ("bigger than", "same colour as")),
        (1, 0, ("same colour as",)),
    ]


def test_predicate_vocabulary():
    assert len(rel.PREDICATES) == len(set(rel.PREDICATES)) == 15
    assert set(rel.GENERIC_OF) == set(rel.FINE_PREDICATES)
    assert set(rel.GENERIC_OF.values()) == set(rel.GENERIC_PREDICATES)


# ------------------------------------------------------------------------- the annotation step
def test_annotation_rates_follow_the_documented_formula():
    labels = [CLASS_NAMES.index("circle"), CLASS_NAMES.index("square")]
    rels = [(0, 1, ("left of",))] * 4000
    rng = np.random.default_rng(0)
    out = rel.annotate(labels, rels, rng, max_relations=10**6, generic_prob=0.3, unannotated=0.25)
    kept = len(out) / len(rels)
    assert abs(kept - 0.75) < 0.03, kept  # binomial sd 0.007
    p_generic = min(1.0, 0.3 * 2.0 * 1.3)  # GENERIC_WEIGHT["left of"] * circle's class weight
    share = Counter(p for _, _, p in out)["near"] / len(out)
    assert abs(share - p_generic) < 0.03, share
    assert {p for _, _, p in out} == {"left of", "near"}
    # no bias at all: every relation, its first predicate
    plain = rel.annotate(
        labels, rels[:50], rng, max_relations=100, generic_prob=0.0, unannotated=0.0
    )
    assert plain == [(0, 1, "left of")] * 50
    capped = rel.annotate(labels, rels[:50], rng, max_relations=6, generic_prob=0.0, unannotated=0)
    assert len(capped) == 6


def test_class_preference_picks_a_secondary_true_predicate():
    star, circle = CLASS_NAMES.index("star"), CLASS_NAMES.index("circle")
    rels = [(0, 1, ("left of", "same colour as"))] * 3000
    opts = {"max_relations": 10**6, "generic_prob": 0.0, "unannotated": 0.0}
    for subject, prob in ((star, 0.7), (circle, 0.5)):
        out = rel.annotate([subject, circle], rels, np.random.default_rng(1), **opts)
        share = Counter(p for _, _, p in out)["same colour as"] / len(out)
        assert abs(share - prob) < 0.03, (subject, share)


# ------------------------------------------------------------------------- the scenes
def test_scene_geometry_is_clear_cut():
    n_touch = n_overlap = n_inside = 0
    for i in range(25):
        scene = rel.compose_scene(2, i, 128)
        objs = scene.objects
        assert rel.MIN_OBJECTS <= len(objs) <= rel.MAX_OBJECTS
        order = np.zeros((128, 128), dtype=np.int64)  # occlusion map, re-drawn here
        for k, o in enumerate(objs, start=1):
            order[o.mask] = k
        for k, o in enumerate(objs, start=1):
            x1, y1, x2, y2 = o.box
            assert 0 < x1 < x2 <= 128 and 0 < y1 < y2 <= 128
            assert min(x2 - x1, y2 - y1) >= 12
            assert (order == k).sum() >= 0.6 * o.mask.sum()  # >= 60 % visible
            dist = ndimage.distance_transform_cdt(~o.mask, metric="chessboard")
            for other in objs[k:]:
                d = int(dist[other.mask].min())
                # touching (<= 2) or clearly apart (> 5): never borderline
                assert d <= rel.TOUCH_PX or d > rel.CLEAR_PX, (i, k, d)
                n_touch += 1 <= d <= 2
                n_overlap += d == 0
                if d == 0:
                    inter = (o.mask & other.mask).sum()
                    n_inside += inter == min(o.mask.sum(), other.mask.sum())
    assert n_touch >= 5 and n_overlap >= 10 and n_inside >= 3


def test_annotations_are_true_or_their_generic_parent(big):
    out, _ = big
    n_fine = n_generic = n_secondary = 0
    for im in _truth(out)["images"]:
        true = {(s, o): [rel.PREDICATES[p - 1] for p in ps] for s, o, ps in im["true"]}
        for s, o, p in im["annotated"]:
            name = rel.PREDICATES[p - 1]
            assert (s, o) in true, (im["image_id"], s, o)
            if name in rel.GENERIC_PREDICATES:
                assert any(rel.GENERIC_OF[q] == name for q in true[(s, o)])
                n_generic += 1
            else:
                assert name in true[(s, o)]
                n_fine += 1
                n_secondary += name != true[(s, o)][0]
        assert len(im["annotated"]) <= 6
    assert n_generic > 0.2 * (n_fine + n_generic) and n_secondary > 20


def test_predicate_histogram_is_long_tailed(big):
    _, result = big
    counts = result["predicate_counts"]["annotated"]
    total = sum(counts.values())
    share = {p: c / total for p, c in counts.items()}
    head = max(share, key=share.get)
    assert total > 800
    assert head == "near" and share[head] > 0.25, share
    assert min(share.values()) < 0.02, share
    # true labels are not long-tailed that way: no predicate holds a quarter of them
    truth = result["predicate_counts"]["truth"]
    assert max(truth.values()) < 0.25 * sum(truth.values())
    assert sum(truth[p] for p in rel.GENERIC_PREDICATES) == 0


# ------------------------------------------------------------------------- the files
def test_same_files_for_any_worker_count_and_another_seed_differs(tmp_path):
    a = generate_relations(tmp_path / "a", num_images=12, seed=3, workers=1)
    generate_relations(tmp_path / "b", num_images=12, seed=3, workers=2)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(fa) == 12 + 3 + 3 + 4  # PNGs, COCO jsons, VG-SGG files, zs + truth + README + meta
    assert fa.keys() == fb.keys()
    assert [k for k in fa if fa[k] != fb[k]] == []
    assert a["num_val_im"] == 2 and a["splits"]["test"]["images"] == 3
    generate_relations(tmp_path / "c", num_images=12, seed=4, workers=1)
    fc = _files(tmp_path / "c")
    assert fc["images/000000000001.png"] != fa["images/000000000001.png"]
    assert fc["truth.json"] != fa["truth.json"]
    # annotation options change the annotations, never the pixels
    generate_relations(tmp_path / "d", num_images=12, seed=3, workers=1, generic_prob=0.9)
    fd = _files(tmp_path / "d")
    assert all(fd[k] == fa[k] for k in fa if k.endswith(".png"))
    assert fd["VG-SGG.h5"] != fa["VG-SGG.h5"]


def test_coco_files_load_with_the_coco_dataset(big):
    from percepta.data.coco import CocoDetection

    out, result = big
    truth = {im["image_id"]: im for im in _truth(out)["images"]}
    seen: set[int] = set()
    for split in ("train", "val", "test"):
        ds = CocoDetection(out / "annotations" / f"instances_{split}.json")
        assert ds.image_dir == out / "images"  # guessed, as for the detection config
        assert len(ds) == result["splits"][split]["images"]
        assert ds.class_names == list(CLASS_NAMES)
        for index in range(0, len(ds), max(1, len(ds) // 4)):
            img, target = ds[index]
            im = truth[target["image_id"]]
            assert im["split"] == split and tuple(img.shape) == (3, 128, 128)
            want = np.array([o["box"] for o in im["objects"]], dtype=np.float32)
            np.testing.assert_array_equal(target["boxes"].numpy(), want)
            labels = [o["category_id"] - 1 for o in im["objects"]]
            assert target["labels"].tolist() == labels
        ids = set(ds.image_ids)
        assert not ids & seen
        seen |= ids
    assert len(seen) == N_BIG


def test_vg_sgg_round_trip_per_split(big):
    from percepta.data.vg_sgg import load_graphs, load_info

    out, result = big
    h5 = out / "VG-SGG.h5"
    classes, predicates, attributes = load_info(out / "VG-SGG-dicts.json")
    assert classes == ["__background__", *CLASS_NAMES]
    assert predicates == ["__background__", *rel.PREDICATES]
    assert attributes == ["__background__", *rel.COLOUR_NAMES]
    order = [r["image_id"] for r in json.loads((out / "image_data.json").read_text())]
    truth = {im["image_id"]: im for im in _truth(out)["images"]}
    zs = {tuple(t) for t in json.loads((out / "zero_shot_triplets.json").read_text())}
    nv = result["num_val_im"]
    for split in ("train", "val", "test"):
        mask, boxes, labels, attrs, rels = load_graphs(
            h5, split, num_val_im=nv, filter_empty_rels=False
        )
        ids = [order[i] for i in np.flatnonzero(mask)]
        assert all(truth[i]["split"] == split for i in ids)
        assert len(ids) == result["splits"][split]["images"]
        for iid, b, lab, at, r in zip(ids, boxes, labels, attrs, rels):
            im = truth[iid]
            np.testing.assert_array_equal(
                b * (128 / 1024), np.array([o["box"] for o in im["objects"]])
            )
            assert lab.tolist() == [o["category_id"] for o in im["objects"]]
            assert at[:, 0].tolist() == [
                rel.COLOUR_NAMES.index(o["colour"]) + 1 for o in im["objects"]
            ]
            cls = [o["category_id"] - 1 for o in im["objects"]]
            want = [
                (s, o, p)
                for s, o, p in im["annotated"]
                if split == "test" or (cls[s], cls[o], p) not in zs
            ]
            assert [tuple(x) for x in r.tolist()] == want, iid
    # the official carve-out: val = the first num_val_im split-0 images that have relations
    val_mask = load_graphs(h5, "val", num_val_im=nv)[0]
    assert sorted(order[i] for i in np.flatnonzero(val_mask)) == sorted(
        i for i, im in truth.items() if im["split"] == "val"
    )


def test_zero_shot_triplets_absent_from_train_present_in_test(big):
    from percepta.data.vg_sgg import load_graphs
    from percepta.scene_graph.results_io import load_zero_shot_triplets

    out, result = big
    zs_file = out / "zero_shot_triplets.json"
    zs = load_zero_shot_triplets(zs_file)  # the evaluator's reader: [subject, object, predicate]
    assert zs.shape[1] == 3 and len(zs) == len(result["zero_shot"]["triplets"])
    zs_set = {tuple(int(v) for v in t) for t in zs}
    held = {
        (CLASS_NAMES.index(s), CLASS_NAMES.index(o), rel.PREDICATES.index(p) + 1)
        for s, p, o in result["zero_shot"]["held_out"]
    }
    assert held and held <= zs_set
    n_types = len(
        {
            (o["category_id"], p, q["category_id"])
            for im in _truth(out)["images"]
            for s, t, p in im["annotated"]
            for o, q in [(im["objects"][s], im["objects"][t])]
        }
    )
    assert len(held) == round(0.07 * n_types)

    def triplets(split: str) -> Counter:
        _, _, labels, _, rels = load_graphs(
            out / "VG-SGG.h5", split, num_val_im=result["num_val_im"], filter_empty_rels=False
        )
        # h5 labels are 1-based; the zero-shot file uses percepta's 0-based targets
        return Counter(
            (int(lab[s]) - 1, int(lab[o]) - 1, int(p))
            for lab, r in zip(labels, rels)
            for s, o, p in r
        )

    train, val, test = triplets("train"), triplets("val"), triplets("test")
    assert not zs_set & set(train) and not zs_set & set(val)
    assert zs_set <= set(test)
    # the held-out types were annotated in split 0 before the removal (so they were held out)
    before = Counter()
    for im in _truth(out)["images"]:
        if im["split"] != "test":
            cls = [o["category_id"] - 1 for o in im["objects"]]
            before.update((cls[s], cls[o], p) for s, o, p in im["annotated"])
    assert all(before[t] > 0 for t in held)
    assert sum(test[t] for t in zs_set) == result["zero_shot"]["test_relations_zero_shot"]


# ------------------------------------------------------------------------- options, CLI, folders
@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_images": 1},
        {"image_size": 64},
        {"val_fraction": 1.0},
        {"test_fraction": -0.1},
        {"generic_prob": 1.5},
        {"unannotated": 1.0},
        {"zero_shot": float("nan")},
        {"max_relations": 0},
        {"seed": -1},
        {"workers": 0},
    ],
)
def test_bad_options_rejected(tmp_path, kwargs):
    with pytest.raises(SynthOptionError) as e:
        generate_relations(tmp_path / "x", **{"num_images": 4, **kwargs})
    assert isinstance(e.value, PerceptaError)
    assert not (tmp_path / "x").exists()


def test_cli_writes_skips_and_regenerates(tmp_path, capsys):
    out = tmp_path / "rel"
    argv = ["data", "synth", "--task", "relations", "--out", str(out), "--num-images", "6"]
    argv += ["--workers", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "VG-SGG" in text and "num_val_im" in text and "near" in text
    first = _files(out)
    assert main(argv) == 0
    assert "nothing regenerated" in capsys.readouterr().out
    assert _files(out) == first
    assert main(argv + ["--generic-prob", "0.6", "--zero-shot", "0"]) == 0
    assert "wrote" in capsys.readouterr().out
    meta = json.loads((out / "synth_meta.json").read_text())
    assert meta["complete"] and meta["options"]["generic_prob"] == 0.6
    assert json.loads((out / "zero_shot_triplets.json").read_text()) == [
        list(t) for t in meta["summary"]["zero_shot"]["triplets"]
    ]
    assert meta["summary"]["zero_shot"]["held_out"] == []
    # relation-only options are refused for the other tasks
    assert main(["data", "synth", "--out", str(tmp_path / "d"), "--unannotated", "0.1"]) == 2
    assert "--unannotated" in capsys.readouterr().err


def test_refuses_foreign_and_other_task_folders(tmp_path):
    (tmp_path / "f" / "images").mkdir(parents=True)
    (tmp_path / "f" / "images" / "photo.jpg").write_bytes(b"not ours")
    with pytest.raises(DataError, match="did not generate"):
        generate_relations(tmp_path / "f", num_images=2, workers=1)
    assert (tmp_path / "f" / "images" / "photo.jpg").exists()
    generate_detection(tmp_path / "det", num_images=2, image_size=64, workers=1)
    with pytest.raises(DataError, match="built-in detection dataset"):
        generate_relations(tmp_path / "det", num_images=2, workers=1)


def test_interrupted_run_is_regenerated(tmp_path):
    generate_relations(tmp_path, num_images=3, workers=1)
    meta = json.loads((tmp_path / "synth_meta.json").read_text())
    (tmp_path / "synth_meta.json").write_text(json.dumps({**meta, "complete": False}))
    (tmp_path / "VG-SGG.h5").unlink()
    result = generate_relations(tmp_path, num_images=3, workers=1)
    assert not result["skipped"] and (tmp_path / "VG-SGG.h5").is_file()
    assert generate_relations(tmp_path, num_images=3, workers=1)["skipped"]
