"""FrequencyBias and the FREQ baseline, with the official statistics of the causal-predictor vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from percepta.errors import DataError
from percepta.scene_graph.frequency import FrequencyBaseline, FrequencyBias, pair_labels
from percepta.scene_graph.pairs import prepare_test_pairs
from percepta.scene_graph.postprocess import RelationPostProcessor

FIXTURE = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "sgg_model"
    / "causal_predictor_motifs_predcls.json"
)
PRED_ATOL, CAUSAL_TOL = 1e-6, 1e-4  # tolerances of sgg_official_semantics.md


@pytest.fixture(scope="module")
def causal() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def pred_dist(causal) -> np.ndarray:
    return np.asarray(causal["statistics_pred_dist"], dtype=np.float32)  # (7, 7, 5)


def tensor(entry: dict) -> torch.Tensor:
    return torch.tensor(entry["data"], dtype=getattr(torch, entry["dtype"])).reshape(entry["shape"])


def test_weight_layout_matches_official_state_dict(causal, pred_dist):
    fb = FrequencyBias(pred_dist)
    C, R = pred_dist.shape[0], pred_dist.shape[2]
    assert fb.obj_baseline.weight.shape == (C * C, R)
    for s in range(C):
        for o in range(C):
            np.testing.assert_array_equal(
                fb.obj_baseline.weight[s * C + o].detach().numpy(), pred_dist[s, o]
            )
    official = tensor(causal["state_dicts"]["motifs"]["freq_bias.obj_baseline.weight"])
    assert torch.equal(fb.obj_baseline.weight.detach(), official)
    # the official key loads unchanged
    fb.load_state_dict({"obj_baseline.weight": official})


def test_index_with_labels_rows(pred_dist):
    fb = FrequencyBias(pred_dist)
    labels = torch.tensor([[3, 4], [0, 3], [6, 6], [1, 5]])
    got = fb.index_with_labels(labels).detach().numpy()
    np.testing.assert_array_equal(got, pred_dist[labels[:, 0], labels[:, 1]])
    assert torch.equal(fb(labels), fb.index_with_labels(labels))


def test_index_with_probability_equals_independent_sum(pred_dist):
    fb = FrequencyBias(pred_dist)
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(9, 7, 2, generator=g) * 2, dim=1)
    got = fb.index_with_probability(probs).detach().numpy()
    p = probs.double().numpy()
    want = np.einsum("ps,po,sor->pr", p[:, :, 0], p[:, :, 1], pred_dist.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # explicit loop for one row, same sum written out
    row = sum(
        p[0, s, 0] * p[0, o, 1] * pred_dist[s, o].astype(np.float64)
        for s in range(7)
        for o in range(7)
    )
    np.testing.assert_allclose(got[0], row, rtol=1e-5, atol=1e-5)


def test_one_hot_probability_equals_label_lookup(pred_dist):
    fb = FrequencyBias(pred_dist)
    labels = torch.tensor([[1, 2], [4, 4], [0, 6], [5, 3]])
    one_hot = torch.stack((F.one_hot(labels[:, 0], 7), F.one_hot(labels[:, 1], 7)), dim=2).float()
    np.testing.assert_allclose(
        fb.index_with_probability(one_hot).detach().numpy(),
        fb.index_with_labels(labels).detach().numpy(),
        rtol=0,
        atol=PRED_ATOL,
    )


def test_official_calculate_logits_sum_fusion(causal, pred_dist):
    """Official ``calculate_logits`` (fusion 'sum'): vis_compress(u) + ctx_compress(c) + freq."""
    run = next(r for r in causal["runs"] if r["fusion_type"] == "sum" and not r["effect_analysis"])
    sd = causal["state_dicts"]["motifs"]
    c = run["calculate_logits_standalone"]
    vis = F.linear(
        torch.tensor(c["vis_rep"]),
        tensor(sd["vis_compress.weight"]),
        tensor(sd["vis_compress.bias"]),
    )
    ctx = F.linear(
        torch.tensor(c["ctx_rep"]),
        tensor(sd["ctx_compress.weight"]),
        tensor(sd["ctx_compress.bias"]),
    )
    fb = FrequencyBias(pred_dist)
    with torch.no_grad():
        by_label = vis + ctx + fb.index_with_labels(torch.tensor(c["pair_labels"]))
        by_prob = vis + ctx + fb.index_with_probability(torch.tensor(c["pair_obj_probs"]))
    np.testing.assert_allclose(
        by_label.numpy(), c["out_use_label_dist_false"], rtol=CAUSAL_TOL, atol=CAUSAL_TOL
    )
    np.testing.assert_allclose(
        by_prob.numpy(), c["out_use_label_dist_true"], rtol=CAUSAL_TOL, atol=CAUSAL_TOL
    )


def test_bias_is_learnable(pred_dist):
    fb = FrequencyBias(pred_dist)
    fb.index_with_probability(torch.full((2, 7, 2), 1 / 7)).sum().backward()
    grad = fb.obj_baseline.weight.grad
    assert grad is not None and torch.allclose(grad, torch.full_like(grad, 2 / 49))


def test_bad_pred_dist_and_probabilities(pred_dist):
    with pytest.raises(DataError, match="pred_dist"):
        FrequencyBias(np.zeros((7, 6, 5)))
    with pytest.raises(DataError, match="pred_dist"):
        FrequencyBias(np.full((2, 2, 3), np.nan))
    with pytest.raises(DataError, match="pair_probs"):
        FrequencyBias(pred_dist).index_with_probability(torch.zeros(3, 6, 2))


def test_freq_baseline_predicts_most_frequent_predicate(pred_dist):
    model = FrequencyBaseline(pred_dist)
    labels = [torch.tensor([3, 4, 5, 2]), torch.tensor([1, 2])]
    boxes = [
        torch.tensor([[0.0, 0, 10, 10]]).repeat(4, 1),
        torch.tensor([[0.0, 0, 5, 5]]).repeat(2, 1),
    ]
    pairs = [prepare_test_pairs(b, "predcls") for b in boxes]
    with torch.no_grad():
        logits = model(labels, pairs)
    for lab, p, lg in zip(labels, pairs, logits):
        assert torch.equal(pair_labels(lab, p), torch.stack((lab[p[:, 0]], lab[p[:, 1]]), 1))
        np.testing.assert_array_equal(lg.numpy(), pred_dist[lab[p[:, 0]], lab[p[:, 1]]])
    # through the post-processor (PredCls: one-hot +-1000 logits of the GT labels)
    obj = [F.one_hot(lab, 7).float() * 2000 - 1000 for lab in labels]
    outs = RelationPostProcessor("predcls")(logits, obj, pairs, boxes)
    for lab, out in zip(labels, outs):
        s, o = lab[out["rel_pairs"][:, 0]], lab[out["rel_pairs"][:, 1]]
        assert out["rel_labels"].tolist() == (pred_dist[s, o, 1:].argmax(1) + 1).tolist()
        key = out["rel_scores"][:, 1:].max(1).values
        assert (key[:-1] >= key[1:]).all()
