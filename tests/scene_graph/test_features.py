"""Relation-head features: box geometry, union boxes, two-box masks, RoI heads, word vectors.

Expected values are worked out by hand from the official formulas (``sgg_official_semantics.md``
"Position encoding"; ``RelationFeatureExtractor``'s rectangles), not taken from the code. The
geometry also feeds the MOTIFS parity test (``test_motifs.py``), which would fail if it
differed from the official one.
"""

from __future__ import annotations

import pytest
import torch

from percepta.errors import ConfigError, DataError
from percepta.scene_graph.features import (
    RoIFeatureHead,
    SpatialMaskConv,
    UnionFeatureHead,
    class_word_vectors,
    encode_box_info,
    label_embedding,
    pair_rect_masks,
    pos_embed,
    union_boxes,
)


def test_encode_box_info_uses_inclusive_widths():
    # image h=40, w=20; box x1=0 y1=0 x2=9 y2=19: w=10, h=20, cx=5, cy=10
    out = encode_box_info(torch.tensor([[0.0, 0.0, 9.0, 19.0]]), (40, 20))
    want = [10 / 20, 20 / 40, 5 / 20, 10 / 40, 0.0, 0.0, 9 / 20, 19 / 40, 200 / 800]
    torch.testing.assert_close(out, torch.tensor([want]), atol=1e-7, rtol=0)
    out = encode_box_info(torch.tensor([[2.0, 4.0, 5.0, 6.0]]), (10, 8))
    # w=4, h=3, cx=4, cy=5.5
    want = [4 / 8, 3 / 10, 4 / 8, 5.5 / 10, 2 / 8, 4 / 10, 5 / 8, 6 / 10, 12 / 80]
    torch.testing.assert_close(out, torch.tensor([want]), atol=1e-7, rtol=0)


def test_encode_box_info_refuses_an_empty_image():
    with pytest.raises(DataError, match="zero side"):
        encode_box_info(torch.zeros(1, 4), (0, 5))


def test_pos_embed_layout_matches_the_official_state_dict():
    m = pos_embed()
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["0.weight"] == (32, 9)
    assert shapes["1.running_mean"] == (32,)
    assert shapes["2.weight"] == (128, 32)
    assert m[1].momentum == pytest.approx(0.001)
    out = m.eval()(torch.randn(5, 9))
    assert out.shape == (5, 128) and bool((out >= 0).all())


def test_union_boxes():
    boxes = torch.tensor([[0.0, 5, 10, 15], [3, 1, 20, 8], [7, 7, 9, 9]])
    pairs = torch.tensor([[0, 1], [2, 0]])
    assert union_boxes(boxes, pairs).tolist() == [[0, 1, 20, 15], [0, 5, 10, 15]]


def test_rect_masks_are_inclusive_floor_ceil_in_the_image_frame():
    # a 27 x 27 image: scale 1; subject x 2.5..5.1 -> cols 2..6, y 3.2..4.0 -> rows 3..4
    boxes = torch.tensor([[2.5, 3.2, 5.1, 4.0], [0.0, 0.0, 26.0, 26.0]])
    m = pair_rect_masks(boxes, torch.tensor([[0, 1]]), (27, 27), 27)
    assert m.shape == (1, 2, 27, 27)
    subj = m[0, 0]
    assert subj.sum() == 5 * 2
    assert subj[3:5, 2:7].eq(1).all()
    assert m[0, 1].sum() == 27 * 27
    # a 54 (h) x 27 (w) image: y is halved -> rows floor(10/2)=5 .. ceil(21/2)=11
    m = pair_rect_masks(
        torch.tensor([[1.0, 10.0, 1.0, 21.0]]), torch.tensor([[0, 0]]), (54, 27), 27
    )
    rows = torch.nonzero(m[0, 0].any(1)).view(-1).tolist()
    cols = torch.nonzero(m[0, 0].any(0)).view(-1).tolist()
    assert rows == list(range(5, 12)) and cols == [1]


@pytest.mark.parametrize("s", [3, 5, 7])
def test_spatial_mask_conv_maps_4s_minus_1_to_s(s):
    conv = SpatialMaskConv(8).eval()
    out = conv(torch.rand(2, 2, 4 * s - 1, 4 * s - 1))
    assert out.shape == (2, 8, s, s)


def test_roi_heads_shapes_and_mask_branch():
    torch.manual_seed(0)
    head = RoIFeatureHead(4, 3, 10)
    x = torch.randn(6, 4, 3, 3)
    out = head(x)
    assert out.shape == (6, 10) and bool((out >= 0).all())
    assert torch.equal(head.fc6.bias, torch.zeros(10))
    union = UnionFeatureHead(4, 3, 10).eval()
    assert union.rect_size == 11
    masks = torch.zeros(6, 2, 11, 11)
    a = union(x, masks)
    masks[:, 0, 2:5, 2:5] = 1
    b = union(x, masks)
    assert a.shape == (6, 10) and not torch.allclose(a, b)


def _glove(tmp_path, text):
    p = tmp_path / "vectors.txt"
    p.write_text(text, encoding="utf-8")
    return p


def test_word_vectors_whole_name_then_mean_of_words_then_random(tmp_path):
    path = _glove(tmp_path, "cat 1 2 3\ndog 4 5 6\ntraffic 1 1 1\nlight 3 3 3\n")
    with pytest.warns(UserWarning, match="1 of 3 class names"):
        vecs, missing = class_word_vectors(["cat", "traffic light", "unicorn"], 3, path)
    assert missing == 1
    assert vecs[0].tolist() == [1.0, 2.0, 3.0]
    assert vecs[1].tolist() == [2.0, 2.0, 2.0]
    assert vecs.shape == (3, 3)
    emb = label_embedding(["dog", "cat"], 3, path)
    assert isinstance(emb, torch.nn.Embedding) and emb.weight.requires_grad
    assert emb.weight.detach().tolist() == [[4.0, 5.0, 6.0], [1.0, 2.0, 3.0]]


def test_word_vectors_without_file_are_random_normal():
    g = torch.Generator().manual_seed(0)
    vecs, missing = class_word_vectors(["a", "b"], 4, None, generator=g)
    assert missing == 0
    assert torch.equal(vecs, torch.randn(2, 4, generator=torch.Generator().manual_seed(0)))


def test_word_vector_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        class_word_vectors(["a"], 3, tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="2-d vectors but model.embed_dim is 3"):
        class_word_vectors(["a"], 3, _glove(tmp_path, "a 1 2\n"))
    bad = _glove(tmp_path, "x 1 2 3\na 1 2\n")
    with pytest.raises(DataError, match=r"vectors.txt: line 2 \('a'\): 2 values, expected 3"):
        class_word_vectors(["a"], 3, bad)
    bad = _glove(tmp_path, "a 1 b 3\n")
    with pytest.raises(DataError, match="line 1"):
        class_word_vectors(["a"], 3, bad)
