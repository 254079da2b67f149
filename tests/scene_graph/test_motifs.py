"""MOTIFS predictor: parity with the official module, and properties independent of the code.

Reference: ``tests/fixtures/sgg_model/causal_predictor_motifs_predcls.json`` (a copy of
``../shared/testdata/sgg_model/``, see that folder's README and the fixture PROVENANCE.md): the
official ``CausalAnalysisPredictor`` (MOTIFS context, PredCls, tiny dims) with its
``state_dict``, inputs and eval runs. The runs with effect analysis off are the factual logits,
which :class:`MotifsPredictor` with fusion ``sum`` / ``gate`` must reproduce after
:func:`official_state_dict` (tolerance atol = rtol = 1e-4, the reference README's).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from percepta.scene_graph.postprocess import RelationPostProcessor
from percepta.scene_graph.predictors.motifs import (
    OFFICIAL_UNUSED_PREFIXES,
    DecoderRNN,
    MotifsPredictor,
    context_sequences,
    official_state_dict,
    to_onehot,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sgg_model"
REF_FILE = FIXTURE / "causal_predictor_motifs_predcls.json"
TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module")
def ref():
    return json.loads(REF_FILE.read_text())


def _state_dict(ref):
    return {
        k: torch.tensor(v["data"], dtype=getattr(torch, v["dtype"])).reshape(v["shape"])
        for k, v in ref["state_dicts"]["motifs"].items()
    }


def _inputs(ref):
    inp = ref["inputs"]["predcls_2img"]
    images = inp["images"]
    return {
        "x": torch.tensor(inp["roi_features"]),
        "union": torch.tensor(inp["union_features"]),
        "boxes": [torch.tensor(im["bbox"]) for im in images],
        # the official BoxList size is (w, h); percepta's image sizes are (h, w)
        "sizes": [(im["image_size"][1], im["image_size"][0]) for im in images],
        "labels": torch.cat([torch.tensor(im["labels"]) for im in images]),
        "pairs": [torch.tensor(im["rel_pair_idxs"]) for im in images],
    }


def _predictor(ref, fusion: str) -> MotifsPredictor:
    d = ref["dims"]
    names = ["__background__"] + [f"c{i}" for i in range(1, d["num_obj_classes"])]
    return MotifsPredictor(
        "predcls",
        names,
        d["num_rel_classes"],
        d["in_channels"],
        d["CONTEXT_POOLING_DIM"],
        hidden_dim=d["CONTEXT_HIDDEN_DIM"],
        embed_dim=d["EMBED_DIM"],
        fusion=fusion,
        nms_thresh=d["LATER_NMS_PREDICTION_THRES"],
    )


def _factual_runs(ref):
    runs = [r for r in ref["runs"] if not r["effect_analysis"]]
    assert sorted(r["fusion_type"] for r in runs) == ["gate", "sum"]
    return runs


def _run(ref, fusion):
    model = _predictor(ref, fusion)
    model.load_state_dict(official_state_dict(model, _state_dict(ref)), strict=True)
    model.eval()
    i = _inputs(ref)
    with torch.no_grad():
        out = model(i["x"], i["union"], i["boxes"], i["sizes"], i["pairs"], labels=i["labels"])
    return out, i


@pytest.mark.parametrize("fusion", ["sum", "gate"])
def test_factual_outputs_match_the_official_predictor(ref, fusion):
    run = next(r for r in _factual_runs(ref) if r["fusion_type"] == fusion)
    out, _ = _run(ref, fusion)
    pair_ref = run["pair_feature_generate_returns"][0]
    assert not pair_ref["ctx_average"]
    torch.testing.assert_close(out.post_ctx_rep, torch.tensor(pair_ref["post_ctx_rep"]), **TOL)
    assert out.pair_preds.tolist() == pair_ref["pair_pred"]
    obj_ref = torch.cat([torch.tensor(o) for o in run["obj_dists"]])
    rel_ref = torch.cat([torch.tensor(r) for r in run["rel_dists"]])
    torch.testing.assert_close(out.obj_dists, obj_ref, **TOL)
    torch.testing.assert_close(out.rel_dists, rel_ref, **TOL)


@pytest.mark.parametrize("fusion", ["sum", "gate"])
def test_post_processed_factual_outputs_match_the_official_ranking(ref, fusion):
    run = next(r for r in _factual_runs(ref) if r["fusion_type"] == fusion)
    out, i = _run(ref, fusion)
    counts = [len(b) for b in i["boxes"]]
    rel_counts = [len(p) for p in i["pairs"]]
    res = RelationPostProcessor("predcls")(
        list(out.rel_dists.split(rel_counts)),
        list(out.obj_dists.split(counts)),
        i["pairs"],
        i["boxes"],
    )
    for got, want in zip(res, run["postprocessor_on_outputs"]):
        assert got["labels"].tolist() == want["pred_labels"]
        assert got["rel_pairs"].tolist() == want["rel_pair_idxs"]
        assert got["rel_labels"].tolist() == want["pred_rel_labels"]


def test_official_key_mapping_is_complete_and_documented(ref):
    sd = _state_dict(ref)
    for fusion in ("sum", "gate"):
        model = _predictor(ref, fusion)
        mapped = official_state_dict(model, sd)
        assert set(mapped) == set(model.state_dict())  # nothing missing, nothing extra
        dropped = {k for k in sd if k not in mapped and k.replace(".0.", ".", 1) not in mapped}
        expected_dropped = {k for k in sd if k.startswith(OFFICIAL_UNUSED_PREFIXES)}
        expected_dropped |= {k for k in sd if k.startswith("context_layer.decoder_rnn.")}
        if fusion == "sum":
            expected_dropped |= {k for k in sd if k.startswith("ctx_gate_fc.")}
        assert dropped == expected_dropped
        assert torch.equal(mapped["post_cat.weight"], sd["post_cat.0.weight"])
    # the standard MotifPredictor has rel_compress, which a causal state dict lacks
    plain = _predictor(ref, "motifs")
    with pytest.raises(RuntimeError, match="rel_compress"):
        plain.load_state_dict(official_state_dict(plain, sd), strict=True)


def test_to_onehot():
    out = to_onehot(torch.tensor([2, 0]), 3)
    assert out.tolist() == [[-1000.0, -1000.0, 1000.0], [1000.0, -1000.0, -1000.0]]


def test_context_sequences_sort_each_image_by_centre_x_descending():
    a = torch.tensor([[0.0, 0, 10, 10], [50, 0, 60, 10], [20, 0, 30, 10], [20, 5, 30, 9]])
    b = torch.zeros(0, 4)
    c = torch.tensor([[5.0, 5, 6, 6], [1, 1, 2, 2]])
    seqs = context_sequences([a, b, c])
    # image a: centres 5, 55, 25, 25 -> 1, then the tie 2, 3 in input order, then 0
    assert [s.tolist() for s in seqs] == [[1, 2, 3, 0], [4, 5]]


def _tiny_predictor(mode="predcls", fusion="motifs", seed=0):
    torch.manual_seed(seed)
    names = ["__background__", "a", "b", "c"]
    model = MotifsPredictor(mode, names, 4, 6, 5, hidden_dim=4, embed_dim=3, fusion=fusion)
    with torch.no_grad():
        model.freq_bias.obj_baseline.weight.normal_()
    return model.eval()


def _tiny_image(seed, n=4):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 50
    wh = torch.rand(n, 2, generator=g) * 20 + 2
    boxes = torch.cat([xy, xy + wh], 1)
    pairs = torch.tensor([[i, j] for i in range(n) for j in range(n) if i != j])
    return {
        "x": torch.randn(n, 6, generator=g),
        "u": torch.randn(len(pairs), 5, generator=g),
        "boxes": boxes,
        "labels": torch.randint(1, 4, (n,), generator=g),
        "pairs": pairs,
    }


@pytest.mark.parametrize("fusion", ["motifs", "sum", "gate"])
def test_images_of_a_batch_do_not_influence_each_other(fusion):
    model = _tiny_predictor(fusion=fusion)
    a, b = _tiny_image(1, 4), _tiny_image(2, 3)
    size = (80, 90)
    with torch.no_grad():
        both = model(
            torch.cat([a["x"], b["x"]]),
            torch.cat([a["u"], b["u"]]),
            [a["boxes"], b["boxes"]],
            [size, size],
            [a["pairs"], b["pairs"]],
            labels=torch.cat([a["labels"], b["labels"]]),
        )
        alone = [
            model(m["x"], m["u"], [m["boxes"]], [size], [m["pairs"]], labels=m["labels"])
            for m in (a, b)
        ]
    torch.testing.assert_close(
        both.rel_dists, torch.cat([r.rel_dists for r in alone]), atol=1e-5, rtol=1e-5
    )


def test_object_order_does_not_matter():
    """The LSTMs read objects by centre x, so permuting an image's objects (and re-indexing
    its pairs) permutes nothing in the relation logits."""
    model = _tiny_predictor()
    m = _tiny_image(3, 5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    inv = torch.argsort(perm)
    size = (100, 100)
    with torch.no_grad():
        ref = model(m["x"], m["u"], [m["boxes"]], [size], [m["pairs"]], labels=m["labels"])
        got = model(
            m["x"][perm],
            m["u"],
            [m["boxes"][perm]],
            [size],
            [inv[m["pairs"]]],
            labels=m["labels"][perm],
        )
    torch.testing.assert_close(got.rel_dists, ref.rel_dists, atol=1e-5, rtol=1e-5)


def test_standard_motifs_fusion_formula():
    """rel = rel_compress(post_cat([head(s), tail(o)]) * union) + freq[s, o]."""
    model = _tiny_predictor(fusion="motifs")
    m = _tiny_image(4, 3)
    size = (60, 70)
    with torch.no_grad():
        out = model(m["x"], m["u"], [m["boxes"]], [size], [m["pairs"]], labels=m["labels"])
        _, _, edge = model.context_layer(m["x"], [m["boxes"]], [size], m["labels"])
        rep = model.post_emb(edge).view(-1, 2, 4)
        s, o = m["pairs"][:, 0], m["pairs"][:, 1]
        prod = torch.cat([rep[s, 0], rep[o, 1]], 1)
        w = model.freq_bias.obj_baseline.weight
        want = (
            model.rel_compress(model.post_cat(prod) * m["u"])
            + w[m["labels"][s] * 4 + m["labels"][o]]
        )
    torch.testing.assert_close(out.rel_dists, want, atol=1e-6, rtol=1e-6)


def test_decoder_greedy_and_teacher_forcing():
    torch.manual_seed(0)
    dec = DecoderRNN(num_classes=5, embed_dim=3, inputs_dim=4, hidden_dim=6, dropout=0.0)
    inputs = torch.randn(7, 4)
    seqs = [torch.tensor([2, 0, 5, 1]), torch.tensor([6, 3, 4])]
    dec.eval()
    dists, preds = dec(inputs, seqs, None)
    assert dists.shape == (7, 5)
    assert torch.equal(preds, dists[:, 1:].argmax(1) + 1)  # greedy over classes 1..C
    dec.train()
    labels = torch.tensor([0, 3, 2, 1, 4, 0, 2])
    dists, preds = dec(inputs, seqs, labels)
    fg = labels > 0
    assert torch.equal(preds[fg], labels[fg])
    assert torch.equal(preds[~fg], dists[~fg, 1:].argmax(1) + 1)  # background: the prediction


def test_sgdet_label_nms_spreads_overlapping_objects_over_classes():
    """All objects prefer class 2, then class 1: two objects whose class boxes overlap
    cannot both keep class 2; a distant one can."""
    torch.manual_seed(0)
    names = ["__background__", "a", "b", "c"]
    model = MotifsPredictor("sgdet", names, 3, 6, 5, hidden_dim=4, embed_dim=3).eval()
    with torch.no_grad():
        out_obj = model.context_layer.decoder_rnn.out_obj
        out_obj.weight.zero_()
        out_obj.bias.copy_(torch.tensor([0.0, 1.0, 5.0, 0.0]))
    boxes = torch.tensor([[0.0, 0, 20, 20], [1, 1, 21, 21], [60, 60, 80, 80]])
    per_cls = boxes[:, None, :].expand(3, 4, 4).clone()
    pairs = torch.tensor([[0, 1], [1, 2]])
    with torch.no_grad():
        out = model(
            torch.randn(3, 6),
            torch.randn(2, 5),
            [boxes],
            [(100, 100)],
            [pairs],
            det_logits=torch.zeros(3, 4),
            boxes_per_cls=[per_cls],
        )
    labels = out.obj_preds.tolist()
    assert labels[2] == 2
    assert sorted(labels[:2]) == [1, 2]
    assert out.pair_preds.tolist() == [[labels[0], labels[1]], [labels[1], labels[2]]]
