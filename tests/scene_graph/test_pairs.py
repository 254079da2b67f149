"""Test-time pairs and nms_overlaps against the official reference; training sampler properties."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from percepta.errors import ConfigError, DataError
from percepta.scene_graph.pairs import (
    RelationSampler,
    box_iou_vg,
    detect_relsample,
    gtbox_relsample,
    nms_overlaps,
    prepare_test_pairs,
    relation_map,
)

FIXTURE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "sgg_model" / "relation_postprocessor.json"
)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(FIXTURE.read_text())


def all_pairs(n: int) -> list[list[int]]:
    return [[i, j] for i in range(n) for j in range(n) if i != j]


# ----------------------------------------------------------------------------- test-time pairs


def test_prepare_test_pairs_reference_cases(reference):
    for c in reference["prepare_test_pairs_cases"]:
        mode = "sgcls" if c["use_gt_box"] else "sgdet"
        got = prepare_test_pairs(torch.tensor(c["bbox"]), mode, c["test_overlap"])
        assert got.dtype == torch.int64
        assert got.tolist() == c["pairs"], c


def test_prepare_test_pairs_postprocessor_inputs(reference):
    for c in reference["cases"]:
        for inp in c["inputs"]:
            got = prepare_test_pairs(
                torch.tensor(inp["bbox"]), c["mode"], c["require_overlap_test"]
            )
            assert got.tolist() == inp["rel_pair_idxs_from_prepare_test_pairs"]


def test_prepare_test_pairs_placeholder_and_modes():
    far = torch.tensor(
        [[0.0, 0, 10, 10], [12, 0, 20, 10], [40, 40, 50, 50]]
    )  # 1-pixel gaps or more
    assert prepare_test_pairs(far, "sgdet", True).tolist() == [[0, 0]]
    assert prepare_test_pairs(far, "sgdet", False).tolist() == all_pairs(3)
    assert prepare_test_pairs(far, "predcls", True).tolist() == all_pairs(3)  # overlap: SGDet only
    assert prepare_test_pairs(far[:1], "sgcls").tolist() == [[0, 0]]
    assert prepare_test_pairs(torch.zeros(0, 4), "sgcls").tolist() == [[0, 0]]
    with pytest.raises(ConfigError, match="mode"):
        prepare_test_pairs(far, "det")
    with pytest.raises(DataError, match=r"\[N, 4\]"):
        prepare_test_pairs(torch.zeros(3, 5), "sgdet")


def test_box_iou_vg_hand_values():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[10.0, 0, 20, 10], [11, 0, 20, 10], [0, 0, 10, 10], [5, 5, 15, 15]])
    # touching: inter 1 x 11 = 11, union 121 + 121 - 11; 1-pixel gap: 0; identical: 1;
    # [5,5,15,15]: inter 6 x 6 = 36, union 242 - 36
    want = [11 / 231, 0.0, 1.0, 36 / 206]
    np.testing.assert_allclose(box_iou_vg(a, b)[0].numpy(), want, rtol=1e-6)


def test_nms_overlaps_reference(reference):
    c = reference["nms_overlaps_case"]
    got = nms_overlaps(torch.tensor(c["boxes"], dtype=torch.float32))
    np.testing.assert_array_equal(got.numpy(), np.asarray(c["out"], dtype=np.float32))


# ----------------------------------------------------------------------------- relation map


def test_relation_map_without_collisions_is_exact():
    rels = torch.tensor([[0, 1, 3], [2, 0, 1], [1, 2, 5]])
    m = relation_map(rels, 3)
    want = torch.zeros(3, 3, dtype=torch.int64)
    want[0, 1], want[2, 0], want[1, 2] = 3, 1, 5
    assert torch.equal(m, want)


def test_relation_map_collisions_pick_a_candidate_deterministically():
    rels = torch.tensor([[0, 1, 3], [0, 1, 4], [0, 1, 2], [1, 0, 1]])
    seen = set()
    for seed in range(20):
        m1 = relation_map(rels, 2, torch.Generator().manual_seed(seed))
        m2 = relation_map(rels, 2, torch.Generator().manual_seed(seed))
        assert torch.equal(m1, m2)
        assert int(m1[0, 1]) in (3, 4, 2) and int(m1[1, 0]) == 1
        seen.add(int(m1[0, 1]))
    assert len(seen) > 1  # the 0.5 overwrite rule is random
    with pytest.raises(DataError, match="outside"):
        relation_map(torch.tensor([[0, 2, 1]]), 2)


# ----------------------------------------------------------------------------- gtbox_relsample


def random_rel_map(n: int, num_rels: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cells = torch.tensor(all_pairs(n))[torch.randperm(n * (n - 1), generator=g)[:num_rels]]
    m = torch.zeros(n, n, dtype=torch.int64)
    m[cells[:, 0], cells[:, 1]] = torch.randint(1, 51, (num_rels,), generator=g)
    return m


def check_sample_basics(sample, rel_map: torch.Tensor) -> tuple[int, int]:
    pairs, labels = sample.pairs, sample.labels
    assert pairs.dtype == labels.dtype == torch.int64
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert len({tuple(p) for p in pairs.tolist()}) == len(pairs)  # no duplicates
    gt = rel_map[pairs[:, 0], pairs[:, 1]]
    num_fg = int((labels > 0).sum())
    assert (labels[:num_fg] > 0).all() and (labels[num_fg:] == 0).all()  # positives first
    assert torch.equal(labels[:num_fg], gt[:num_fg])  # labels from the GT map
    assert (gt[num_fg:] == 0).all()  # background rows are never GT pairs
    return num_fg, len(pairs) - num_fg


def test_gtbox_relsample_official_counts():
    rel_map = random_rel_map(40, 300, seed=0)
    s = gtbox_relsample(rel_map, generator=torch.Generator().manual_seed(1))
    num_fg, num_bg = check_sample_basics(s, rel_map)
    assert (num_fg, num_bg) == (256, 768)  # int(1024 * 0.25), 1024 - 256
    # the binary map is symmetric and marks every GT pair, not only the sampled ones
    gt = rel_map > 0
    assert torch.equal(s.binary.bool(), gt | gt.T)


def test_gtbox_relsample_few_positives_all_kept_in_row_major_order():
    rel_map = random_rel_map(10, 5, seed=3)
    s = gtbox_relsample(
        rel_map,
        batch_size_per_image=16,
        positive_fraction=0.5,
        generator=torch.Generator().manual_seed(0),
    )
    num_fg, num_bg = check_sample_basics(s, rel_map)
    assert num_fg == 5 and num_bg == 11
    assert s.pairs[:5].tolist() == torch.nonzero(rel_map).tolist()


def test_gtbox_relsample_too_few_background_pairs_uses_them_all():
    rel_map = torch.zeros(3, 3, dtype=torch.int64)
    rel_map[0, 1] = 2
    s = gtbox_relsample(
        rel_map, batch_size_per_image=64, generator=torch.Generator().manual_seed(0)
    )
    num_fg, num_bg = check_sample_basics(s, rel_map)
    assert (num_fg, num_bg) == (1, 5)
    assert sorted(s.pairs[1:].tolist()) == [p for p in all_pairs(3) if p != [0, 1]]


def test_gtbox_relsample_is_deterministic_per_generator():
    rel_map = random_rel_map(30, 200, seed=5)
    kw = dict(batch_size_per_image=128, positive_fraction=0.25)
    a = gtbox_relsample(rel_map, generator=torch.Generator().manual_seed(7), **kw)
    b = gtbox_relsample(rel_map, generator=torch.Generator().manual_seed(7), **kw)
    c = gtbox_relsample(rel_map, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a.pairs, b.pairs) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.pairs, c.pairs)
    assert check_sample_basics(a, rel_map) == (32, 96)


# ----------------------------------------------------------------------------- detect_relsample


GT_BOXES = torch.tensor([[0.0, 0, 9, 9], [30, 0, 39, 9]])  # 10 x 10 each (+1 convention)
GT_LABELS = torch.tensor([1, 2])


def gt_map(pred: int = 3) -> torch.Tensor:
    m = torch.zeros(2, 2, dtype=torch.int64)
    m[0, 1] = pred
    return m


def test_detect_relsample_matching_hand_case():
    props = torch.tensor(
        [
            [0.0, 0, 9, 9],  # 0: GT0 exactly, label 1 -> matches GT0
            [30, 0, 39, 9],  # 1: GT1 exactly, label 2 -> matches GT1
            [0, 0, 9, 9],  # 2: GT0's box but label 2 -> no match (label differs)
            [0, 0, 9, 19],  # 3: label 1, IoU with GT0 = 100/200 = 0.5 -> no match (strict >)
            [1, 0, 9, 9],  # 4: label 1, IoU = 90/100 -> matches GT0
            [30, 0, 39, 9],  # 5: background proposal (label 0): in no pair
        ]
    )
    labels = torch.tensor([1, 2, 2, 1, 1, 0])
    s = detect_relsample(
        props, labels, GT_BOXES, GT_LABELS, gt_map(), generator=torch.Generator().manual_seed(0)
    )
    fg = [p for p, lab in zip(s.pairs.tolist(), s.labels.tolist()) if lab > 0]
    assert fg == [[0, 1], [4, 1]]  # every matched combination, head-major
    assert s.labels[:2].tolist() == [3, 3]
    bg = sorted(p for p, lab in zip(s.pairs.tolist(), s.labels.tolist()) if lab == 0)
    fg_props = [0, 1, 2, 3, 4]
    want_bg = sorted([i, j] for i in fg_props for j in fg_props if i != j and [i, j] not in fg)
    assert bg == want_bg  # 20 - 2 background pairs, all used (fewer than the batch)
    binary = torch.zeros(6, 6, dtype=torch.int64)
    for i, j in fg:
        binary[i, j] = binary[j, i] = 1
    assert torch.equal(s.binary, binary)


def test_detect_relsample_thins_to_num_sample_per_gt_rel():
    # 3 proposals match GT0 and 3 match GT1: 9 combinations, 4 kept, all distinct positives
    props = torch.cat(
        [GT_BOXES[0].expand(3, 4) + torch.tensor([0.0, 0, 0, 0]), GT_BOXES[1].expand(3, 4)]
    )
    props[1, 0] = props[2, 0] = 1.0  # IoU 0.9 with GT0
    props[4, 2] = 38.0  # IoU 0.9 with GT1
    labels = torch.tensor([1, 1, 1, 2, 2, 2])
    combos = {(h, t) for h in range(3) for t in range(3, 6)}
    results = []
    for seed in range(3):
        s = detect_relsample(
            props,
            labels,
            GT_BOXES,
            GT_LABELS,
            gt_map(7),
            generator=torch.Generator().manual_seed(seed),
        )
        num_fg = int((s.labels > 0).sum())
        fg = [tuple(p) for p in s.pairs[:num_fg].tolist()]
        assert num_fg == 4 and len(set(fg)) == 4 and set(fg) <= combos
        assert (s.labels[:4] == 7).all()
        # the 5 combinations not kept are not background either (removed from the candidates)
        bg = {tuple(p) for p in s.pairs[num_fg:].tolist()}
        assert not bg & combos
        assert len(bg) == 30 - 9
        results.append(s)
    again = detect_relsample(
        props, labels, GT_BOXES, GT_LABELS, gt_map(7), generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(again.pairs, results[0].pairs)


def test_detect_relsample_require_overlap_and_caps():
    props = torch.tensor(
        [[0.0, 0, 9, 9], [30, 0, 39, 9], [5, 0, 14, 9], [5, 0, 14, 9], [100, 100, 110, 110]]
    )
    labels = torch.tensor([1, 2, 1, 1, 1])
    s = detect_relsample(
        props,
        labels,
        GT_BOXES,
        GT_LABELS,
        gt_map(),
        require_overlap=True,
        generator=torch.Generator().manual_seed(0),
    )
    iou = box_iou_vg(props, props)
    num_fg = int((s.labels > 0).sum())
    assert s.pairs[:num_fg].tolist() == [[0, 1]]  # positives need no overlap
    for i, j in s.pairs[num_fg:].tolist():
        assert 0 < iou[i, j] < 1  # background: overlapping, not identical (2 and 3 are)
    assert sorted(s.pairs[num_fg:].tolist()) == [[0, 2], [0, 3], [2, 0], [3, 0]]
    # batch cap: 1 positive + at most batch - 1 background rows
    s = detect_relsample(
        props,
        labels,
        GT_BOXES,
        GT_LABELS,
        gt_map(),
        batch_size_per_image=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(s.pairs) == 4 and s.labels.tolist() == [3, 0, 0, 0]


def test_detect_relsample_placeholder_when_nothing_qualifies():
    props = torch.tensor([[0.0, 0, 9, 9], [50, 50, 60, 60]])
    s = detect_relsample(props, torch.tensor([0, 0]), GT_BOXES, GT_LABELS, gt_map())
    assert s.pairs.tolist() == [[0, 0]] and s.labels.tolist() == [0]


def test_relation_sampler_batches_both_paths():
    gen = torch.Generator().manual_seed(0)
    target = {"boxes": GT_BOXES, "labels": GT_LABELS, "relations": torch.tensor([[0, 1, 3]])}
    (s,) = RelationSampler("predcls", batch_size_per_image=8)([{"boxes": GT_BOXES}], [target], gen)
    assert s.pairs.tolist() == [[0, 1], [1, 0]] and s.labels.tolist() == [3, 0]
    prop = {"boxes": GT_BOXES.clone(), "labels": torch.tensor([1, 2])}
    (s,) = RelationSampler("sgdet")([prop], [target], gen)
    assert s.pairs.tolist() == [[0, 1], [1, 0]] and s.labels.tolist() == [3, 0]
    with pytest.raises(DataError, match="GT boxes"):
        RelationSampler("sgcls")([{"boxes": GT_BOXES[:1]}], [target], gen)
    with pytest.raises(ConfigError, match="positive_fraction"):
        RelationSampler("sgcls", positive_fraction=1.5)
