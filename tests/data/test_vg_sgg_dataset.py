"""The VG-SGG training dataset: official get_groundtruth semantics on files written by
:func:`percepta.data.vg_sgg.write_vg_sgg` (expected values built by hand in each test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.io import write_png

from percepta.data.vg_sgg import SGGImage, write_vg_sgg
from percepta.data.vg_sgg_dataset import VGSGGDataset, VGSGGDatasetConfig, dedup_relations
from percepta.errors import DataError

OBJECTS = ["cat", "dog", "ball"]
PREDICATES = ["on", "near", "has"]


def _write(tmp_path, images, sizes=None):
    (tmp_path / "images").mkdir(exist_ok=True)
    for img in images:
        h, w = (sizes or {}).get(img.image_id, (img.height, img.width))
        write_png(torch.zeros(3, h, w, dtype=torch.uint8), str(tmp_path / "images" / img.file_name))
    write_vg_sgg(tmp_path, images, OBJECTS, PREDICATES)


def _img(i, split=0, relations=((0, 1, 1),), boxes=((8, 8, 40, 48), (16, 24, 120, 64))):
    return SGGImage(
        image_id=100 + i,
        file_name=f"{i}.png",
        width=128,
        height=96,
        boxes=np.array(boxes, dtype=np.float64),
        labels=np.array([1, 3][: len(boxes)] + [2] * (len(boxes) - 2)),
        relations=np.array(relations, dtype=np.int64).reshape(-1, 3),
        split=split,
    )


def _ds(root, **kw):
    return VGSGGDataset(VGSGGDatasetConfig(**kw), root)


def test_round_trip_boxes_labels_relations(tmp_path):
    _write(tmp_path, [_img(0), _img(1, split=2, relations=((1, 0, 3), (0, 1, 2)))])
    train, test = _ds(tmp_path, split="train"), _ds(tmp_path, split="test")
    assert len(train) == len(test) == 1
    img, t = train[0]
    assert img.shape == (3, 96, 128) and img.dtype == torch.uint8
    # 1024 / max(128, 96) = 8: integer boxes survive the 1024-scale storage exactly
    torch.testing.assert_close(t["boxes"], torch.tensor([[8.0, 8, 40, 48], [16, 24, 120, 64]]))
    assert t["labels"].tolist() == [0, 2]  # 1-based file classes -> percepta's 0..C-1
    assert t["relations"].tolist() == [[0, 1, 1]]  # predicates stay 1..P
    assert t["image_id"] == 100
    _, t2 = test[0]
    assert t2["relations"].tolist() == [[1, 0, 3], [0, 1, 2]] and t2["image_id"] == 101
    assert train.meta["object_names"] == OBJECTS and train.meta["num_predicates"] == 3


def test_train_dedups_pairs_test_keeps_duplicates(tmp_path):
    rels = ((0, 1, 1), (0, 1, 2), (0, 1, 2), (1, 0, 3))
    _write(tmp_path, [_img(0, relations=rels), _img(1, split=2, relations=rels)])
    test = _ds(tmp_path, split="test")
    assert test[0][1]["relations"].tolist() == [list(r) for r in rels]
    train = _ds(tmp_path, split="train")
    seen = set()
    for seed in range(40):
        np.random.seed(seed)
        r = train[0][1]["relations"].tolist()
        assert [x[:2] for x in r] == [[0, 1], [1, 0]] and r[1][2] == 3
        seen.add(r[0][2])
    assert seen == {1, 2}  # a draw over the pair's predicates
    # the draw weighs repeated predicates: P(2) = 2/3 over many seeds
    rng = np.random.RandomState(0)
    draws = [dedup_relations(np.array(rels), rng)[0, 2] for _ in range(3000)]
    assert abs(np.mean(np.array(draws) == 2) - 2 / 3) < 0.03


def test_clipping_and_train_only_removal_of_empty_boxes(tmp_path):
    # a box lying on the right border collapses to x2 == x1 == w - 1 after clipping
    boxes = ((8, 8, 40, 48), (127, 10, 128, 30), (16, 24, 120, 64))
    rels = ((0, 1, 1), (0, 2, 2), (2, 1, 3))
    _write(tmp_path, [_img(0, boxes=boxes, relations=rels), _img(1, 2, rels, boxes)])
    _, t = _ds(tmp_path, split="train")[0]
    assert t["boxes"].tolist() == [[8, 8, 40, 48], [16, 24, 120, 64]]
    assert t["relations"].tolist() == [[0, 1, 2]]  # index 2 -> 1; relations of box 1 dropped
    _, te = _ds(tmp_path, split="test")[0]
    assert te["boxes"][1].tolist() == [127, 10, 127, 30] and len(te["relations"]) == 3


def test_val_carve_out_and_num_im(tmp_path):
    _write(tmp_path, [_img(i) for i in range(5)])
    assert [_ds(tmp_path, split="val", num_val_im=2)[i][1]["image_id"] for i in (0, 1)] == [
        100,
        101,
    ]
    train = _ds(tmp_path, split="train", num_val_im=2)
    assert [train[i][1]["image_id"] for i in range(len(train))] == [102, 103, 104]
    assert len(_ds(tmp_path, split="train", num_im=4, num_val_im=1)) == 3


def test_missing_images_are_left_out_with_their_graphs(tmp_path):
    _write(tmp_path, [_img(0), _img(1, relations=((1, 0, 3),)), _img(2)])
    (tmp_path / "images" / "0.png").unlink()
    with pytest.warns(UserWarning, match="1 of 3 train images are missing"):
        ds = _ds(tmp_path, split="train")
    assert len(ds) == 2
    _, t = ds[0]
    assert t["image_id"] == 101 and t["relations"].tolist() == [[1, 0, 3]]  # not shifted


def test_bad_inputs_name_the_file(tmp_path):
    _write(tmp_path, [_img(0)], sizes={100: (50, 60)})
    with pytest.raises(DataError, match=r"0\.png: image is 60x50"):
        _ds(tmp_path, split="train")[0]
    with pytest.raises(DataError, match="split must be one of"):
        _ds(tmp_path, split="dev")
    with pytest.raises(DataError, match="VG-SGG h5 file"):
        _ds(tmp_path, split="train", h5="nope.h5")
    import json

    data = json.loads((tmp_path / "image_data.json").read_text())
    (tmp_path / "image_data.json").write_text(json.dumps(data + data))
    with pytest.raises(DataError, match="2 image records .* the h5 has 1 images"):
        _ds(tmp_path, split="train")


def test_registered_and_built_through_the_engine(tmp_path):
    from percepta.components import build_dataset
    from percepta.config import from_dict

    _write(tmp_path, [_img(0), _img(1, split=2)])
    cfg = from_dict(
        {
            "model": {"name": "centernet"},
            "data": {"root": str(tmp_path), "train": {"name": "vg_sgg", "split": "train"}},
        }
    )
    ds = build_dataset(cfg, "train")
    assert isinstance(ds, VGSGGDataset) and len(ds) == 1


def test_training_split_publishes_its_frequency_statistics(tmp_path):
    # image 0 (val), images 1-2 (train): the statistics count the train split only
    rels = ((0, 1, 2), (1, 0, 3))
    _write(tmp_path, [_img(0, relations=((0, 1, 1),)), _img(1, relations=rels), _img(2)])
    ds = _ds(tmp_path, split="train", num_val_im=1)
    assert "statistics_file" not in _ds(tmp_path, split="val", num_val_im=1).meta
    with np.load(ds.meta["statistics_file"]) as z:
        fg = z["fg_matrix"]
    expected = np.zeros((4, 4, 4), dtype=np.int64)  # classes / predicates with background 0
    expected[1, 3, 2] += 1  # image 1: cat -> ball "near"
    expected[3, 1, 3] += 1  # image 1: ball -> cat "has"
    expected[1, 3, 1] += 1  # image 2: cat -> ball "on"
    assert np.array_equal(fg, expected)
