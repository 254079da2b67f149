"""The relation model (frozen detector + MOTIFS / FREQ) with a FAKE detector written here.

:class:`FakeDetector` follows the ``RelationDetector`` interface of
``percepta.detection.relation_interface`` (``features``, ``roi_features``, ``detect``,
``num_classes``, ``out_channels``, optional ``classify``) on raw pixels: its feature map is the
image itself plus a constant channel, pooled with ``torchvision.ops.roi_align``. The synthetic
problem: three coloured squares per image (class = colour), every ordered pair related by
"left of" (predicate 1) or "right of" (2) -- learnable from geometry.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

from percepta.errors import ConfigError, DataError
from percepta.inference import inference_inputs, run_model
from percepta.registry import MODELS
from percepta.scene_graph.evaluation import SceneGraphEvaluator

C, R = 3, 2  # object classes (colours), predicates (left of, right of)


def _rm():
    """``percepta.scene_graph.model``, imported when a test runs, not at collection: importing
    it registers the ``relation`` model, which ``tests/test_model_contract.py`` would then list
    (it reads the registry at import) before it has a factory for it."""
    import importlib

    return importlib.import_module("percepta.scene_graph.model")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class FakeDetector:
    """A RelationDetector on raw pixels (see the module docstring)."""

    num_classes = C
    out_channels = 4

    def __init__(self, detections=None, with_classify=False):
        self.detections = detections
        self.calls = 0
        if with_classify:
            self.classify = self._classify

    def features(self, images):
        self.calls += 1
        h = max(im.shape[1] for im in images)
        w = max(im.shape[2] for im in images)
        maps = torch.zeros(len(images), 4, h, w)
        for k, im in enumerate(images):
            assert im.is_floating_point() and float(im.max()) <= 1.0  # the interface's 0-1 floats
            maps[k, :3, : im.shape[1], : im.shape[2]] = im
            maps[k, 3] = 1.0
        return SimpleNamespace(
            maps=[maps], image_sizes=[tuple(i.shape[1:]) for i in images], extra={}
        )

    def roi_features(self, feats, boxes, output_size=7):
        return roi_align(feats.maps[0], [b.float() for b in boxes], output_size, 1.0, 2, False)

    def detect(self, feats):
        return self.detections

    def _classify(self, feats, boxes):
        # mean colour of each box: a softmax prior over classes (column 0 = background)
        pooled = self.roi_features(feats, boxes, 3).mean((2, 3))[:, :3]
        logits = torch.cat([torch.zeros(len(pooled), 1), 5 * pooled], 1)
        return list(logits.split([len(b) for b in boxes]))


def _scene(g, n=3, size=24):
    img = torch.zeros(3, size, size, dtype=torch.uint8)
    boxes, labels = [], []
    for k in range(n):
        x, y = (int(v) for v in torch.randint(0, size - 6, (2,), generator=g))
        c = k % C
        img[c, y : y + 6, x : x + 6] = 255
        boxes.append([x, y, x + 5, y + 5])
        labels.append(c)
    b = torch.tensor(boxes, dtype=torch.float32)
    rels = [[i, j, 1 if b[i, 0] < b[j, 0] else 2] for i in range(n) for j in range(n) if i != j]
    return img, {"boxes": b, "labels": torch.tensor(labels), "relations": torch.tensor(rels)}


def _batch(seed=0, n_images=3):
    g = torch.Generator().manual_seed(seed)
    data = [_scene(g) for _ in range(n_images)]
    return [d[0] for d in data], [d[1] for d in data]


def _options(**kw):
    base = dict(
        num_object_classes=C,
        num_predicates=R,
        roi_channels=4,
        roi_size=3,
        obj_dim=12,
        pooling_dim=12,
        hidden_dim=6,
        embed_dim=5,
        dropout=0.0,
        batch_size_per_image=16,
    )
    base.update(kw)
    return _rm().RelationOptions(**base)


def _model(detector=None, seed=0, **kw):
    torch.manual_seed(seed)
    return _rm().RelationModel(_options(**kw), detector=detector or FakeDetector())


def _train(model, images, targets, steps, lr=1e-2):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    history = []
    for _ in range(steps):
        losses = model(images, targets)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    return history


@pytest.mark.parametrize("mode", ["predcls", "sgcls"])
def test_training_reduces_the_loss_on_a_tiny_problem(mode):
    images, targets = _batch()
    model = _model(mode=mode, detector=FakeDetector(with_classify=True))
    hist = _train(model, images, targets, steps=12)
    assert set(hist[0]) == {"loss_rel", "loss_refine_obj"}
    assert hist[0]["loss_rel"] > 0.5
    assert hist[-1]["loss_rel"] < 0.3 * hist[0]["loss_rel"]
    if mode == "predcls":
        assert all(h["loss_refine_obj"] == 0.0 for h in hist)  # one-hot +-1000: exactly 0
    else:
        assert hist[-1]["loss_refine_obj"] < hist[0]["loss_refine_obj"]
    # the frozen detector is not part of the model
    assert not any("detector" in k for k in model.state_dict())


def test_causal_fusion_adds_the_official_auxiliary_losses():
    images, targets = _batch()
    losses = _model(fusion="sum").train()(images, targets)
    assert set(losses) == {
        "loss_rel",
        "loss_refine_obj",
        "loss_aux_ctx",
        "loss_aux_vis",
        "loss_aux_frq",
    }
    losses = _model(fusion="gate").train()(images, targets)
    assert set(losses) == {"loss_rel", "loss_refine_obj", "loss_aux_ctx"}


def _check_ranked(pred, n, scores=None):
    """All ordered pairs, softmax rows, ranked by max_{p>=1} P(p) * s_subj * s_obj."""
    pairs = pred["rel_pairs"]
    assert pairs.shape == (n * (n - 1), 2)
    assert {tuple(p) for p in pairs.tolist()} == {
        (i, j) for i in range(n) for j in range(n) if i != j
    }
    rs = pred["rel_scores"]
    assert rs.shape == (len(pairs), R + 1)
    torch.testing.assert_close(rs.sum(1), torch.ones(len(rs)), atol=1e-6, rtol=0)
    assert torch.equal(pred["rel_labels"], rs[:, 1:].argmax(1) + 1)
    s = pred["scores"] if scores is None else scores
    triple = rs[:, 1:].max(1).values * s[pairs[:, 0]] * s[pairs[:, 1]]
    assert bool((triple[:-1] >= triple[1:]).all())


def test_predcls_eval_output_is_what_the_evaluator_consumes():
    images, targets = _batch()
    model = _model().eval()
    assert inference_inputs(model) == ("boxes", "labels")
    preds = run_model(model, images, targets)
    assert len(preds) == len(images)
    for pred, t in zip(preds, targets):
        assert set(pred) == {"boxes", "labels", "scores", "rel_pairs", "rel_scores", "rel_labels"}
        assert torch.equal(pred["boxes"], t["boxes"])
        assert torch.equal(pred["labels"], t["labels"])  # percepta's 0..C-1 labels
        assert torch.equal(pred["scores"], torch.ones(3))
        _check_ranked(pred, 3)
    ev = SceneGraphEvaluator(mode="predcls", num_predicates=R, k=(1, 5), primary_metric="R@5")
    ev.update(preds, [{**t, "image_id": i} for i, t in enumerate(targets)])
    assert ev.compute()["images"]["evaluated"] == 3


def test_a_trained_predcls_model_recalls_the_geometry():
    images, targets = _batch()
    model = _model()
    _train(model, images, targets, steps=12)
    preds = model.eval()(images, targets)
    ev = SceneGraphEvaluator(mode="predcls", num_predicates=R, k=(6,), primary_metric="R@6")
    ev.update(preds, [{**t, "image_id": i} for i, t in enumerate(targets)])
    assert ev.compute()["R@6"] == 1.0


def test_sgcls_eval_needs_only_boxes_and_labels_come_from_the_model():
    images, targets = _batch()
    model = _model(mode="sgcls", detector=FakeDetector(with_classify=True)).eval()
    assert inference_inputs(model) == ("boxes",)
    preds = run_model(model, images, targets)
    for pred, t in zip(preds, targets):
        assert torch.equal(pred["boxes"], t["boxes"])
        assert pred["labels"].dtype == torch.int64
        assert bool(((pred["labels"] >= 0) & (pred["labels"] < C)).all())
        assert bool(((pred["scores"] > 0) & (pred["scores"] <= 1)).all())
        _check_ranked(pred, 3)


def _detections(targets, jitter=0.5):
    """Detections near the GT boxes, with class logits and class-specific boxes."""
    dets = []
    for t in targets:
        b = t["boxes"] + jitter
        logits = torch.full((len(b), C + 1), -2.0)
        logits[torch.arange(len(b)), t["labels"] + 1] = 2.0
        dets.append(
            {
                "boxes": b,
                "labels": t["labels"],
                "scores": torch.full((len(b),), 0.9),
                "class_logits": logits,
                "boxes_per_cls": b[:, None, :].expand(len(b), C + 1, 4).clone(),
            }
        )
    return dets


def test_sgdet_trains_and_predicts_from_detections():
    images, targets = _batch()
    det = FakeDetector(detections=_detections(targets))
    model = _model(mode="sgdet", detector=det)
    assert inference_inputs(model) == ()
    hist = _train(model, images, targets, steps=3)
    assert all(np.isfinite(list(h.values())).all() for h in hist)
    preds = run_model(model.eval(), images, None)
    for pred, d in zip(preds, det.detections):
        n = len(d["boxes"])
        assert pred["boxes"].shape == (n, 4)
        # each box is its class-specific box of the chosen label (here all equal the box)
        assert torch.equal(pred["boxes"], d["boxes"])
        _check_ranked(pred, n)


def test_sgdet_keeps_the_top_detections_by_score():
    images, targets = _batch()
    dets = _detections(targets)
    for d in dets:  # scores 0.9, 0.5, 0.7: the two best are boxes 0 and 2, kept in order
        d["scores"] = torch.tensor([0.9, 0.5, 0.7])
    model = _model(mode="sgdet", detector=FakeDetector(detections=dets), max_detections=2)
    preds = run_model(model.eval(), images, None)
    for pred, d in zip(preds, dets):
        assert torch.equal(pred["boxes"], d["boxes"][[0, 2]])
        assert pred["rel_pairs"].shape == (2, 2)


def test_images_without_objects_train_and_predict():
    images, targets = _batch()
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.long),
        "relations": torch.zeros(0, 3, dtype=torch.long),
    }
    model = _model()
    losses = model.train()([images[0], images[1]], [empty, targets[1]])
    sum(losses.values()).backward()
    losses = model.train()([images[0]], [empty])
    assert all(float(v.detach()) == 0.0 for v in losses.values())
    sum(losses.values()).backward()  # connected to the parameters (DDP-safe)
    preds = model.eval()([images[0], images[1]], [empty, targets[1]])
    assert preds[0]["rel_pairs"].shape == (0, 2) and preds[0]["boxes"].shape == (0, 4)
    assert preds[1]["rel_pairs"].shape == (6, 2)


def _pred_dist(targets):
    return _rm().pred_dist_from_targets(targets, C, R)


def test_freq_predictor_scores_are_the_statistics(tmp_path):
    images, targets = _batch()
    pd = _pred_dist(targets)
    path = tmp_path / "stats.npz"
    np.savez(path, pred_dist=pd)
    model = _rm().RelationModel(_options(predictor="freq", statistics_file=str(path)))
    model.prepare_training()  # reads the statistics; PredCls FREQ needs no detector at all
    preds = model.eval()(images, targets)
    for pred, t in zip(preds, targets):
        lab = t["labels"] + 1
        s, o = pred["rel_pairs"][:, 0], pred["rel_pairs"][:, 1]
        want = torch.softmax(torch.from_numpy(pd)[lab[s], lab[o]], 1)
        torch.testing.assert_close(pred["rel_scores"], want, atol=1e-6, rtol=1e-6)


def test_freq_needs_statistics_to_train():
    model = _rm().RelationModel(_options(predictor="freq"))
    with pytest.raises(ConfigError, match="model.statistics_file is empty"):
        model.prepare_training()


def test_pred_dist_from_targets_follows_the_official_rules():
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15], [40, 40, 50, 50]])
    t1 = {
        "boxes": boxes,
        "labels": torch.tensor([0, 1, 2]),
        # (0,1) overlaps: counted twice (duplicates kept); (0,2) does not overlap: dropped
        "relations": torch.tensor([[0, 1, 2], [0, 1, 2], [0, 2, 1]]),
    }
    t2 = {"boxes": boxes, "labels": torch.tensor([0, 1, 2]), "relations": torch.tensor([[0, 2, 1]])}
    pd = _rm().pred_dist_from_targets([t1, t2], C, R)
    fg = np.zeros((4, 4, 3))
    fg[1, 2, 2] = 2
    bg = np.zeros((4, 4))
    bg[1, 2] = bg[2, 1] = 1  # image 1: boxes 0 and 1 intersect; image 2 has no overlapping relation
    fg[:, :, 0] = bg + 1
    want = np.log(fg / fg.sum(2, keepdims=True) + 1e-3)
    np.testing.assert_allclose(pd, want, atol=1e-6)


def test_statistics_files(tmp_path):
    pd = np.random.default_rng(0).normal(size=(4, 4, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", pd)
    np.testing.assert_array_equal(_rm().load_pred_dist(tmp_path / "a.npy"), pd)
    fg = np.ones((4, 4, 3))
    bg = np.ones((4, 4))
    np.savez(tmp_path / "b.npz", fg_matrix=fg, bg_matrix=bg)
    got = _rm().load_pred_dist(tmp_path / "b.npz")
    # fg[:, :, 0] = bg + 1 = 2, so every row is [2, 1, 1] / 4
    want = np.broadcast_to(np.log(np.array([0.5, 0.25, 0.25]) + 1e-3), (4, 4, 3))
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.savez(tmp_path / "c.npz", other=pd)
    with pytest.raises(DataError, match="c.npz: holds neither"):
        _rm().load_pred_dist(tmp_path / "c.npz")
    with pytest.raises(ConfigError, match="does not exist"):
        _rm().load_pred_dist(tmp_path / "missing.npz")
    model = _model()
    with pytest.raises(DataError, match=r"expected \[4, 4, 3\]"):
        model.set_pred_dist(np.zeros((3, 3, 3)))


def test_missing_detector_checkpoint_is_one_config_error(tmp_path):
    opts = _options(roi_channels=0, detector_checkpoint=str(tmp_path / "nope.pt"))
    with pytest.raises(
        ConfigError, match=r"model.detector_checkpoint: '.*nope.pt' does not exist"
    ) as e:
        _rm().build_relation_model(opts)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="model.detector_checkpoint is empty"):
        _rm().build_relation_model(_options(roi_channels=0))
    # with the feature size given, the build succeeds and the detector loads lazily
    model = _rm().build_relation_model(_options(detector_checkpoint=str(tmp_path / "nope.pt")))
    with pytest.raises(ConfigError, match="does not exist"):
        model.prepare_training()
    images, targets = _batch()
    with pytest.raises(ConfigError, match="does not exist"):
        model.eval()(images, targets)


def test_detector_must_fit_the_model():
    class Other(FakeDetector):
        num_classes = 5

    with pytest.raises(ConfigError, match="the detector has 5 classes"):
        _model(detector=Other())
    with pytest.raises(ConfigError, match="roi_channels is 8"):
        _model(roi_channels=8)


def test_bad_options_and_targets_are_one_line_errors():
    with pytest.raises(ConfigError, match="model.mode: 'detect' is not one of"):
        _rm().RelationModel(_options(mode="detect"))
    with pytest.raises(ConfigError, match="model.num_predicates must be >= 1"):
        _rm().RelationModel(_options(num_predicates=0))
    images, targets = _batch()
    model = _model().train()
    bad = [dict(targets[0], labels=torch.tensor([0, 1, 3])), *targets[1:]]
    with pytest.raises(DataError, match="labels must be in 0..2"):
        model(images, bad)
    bad = [dict(targets[0], relations=torch.tensor([[0, 1, 3]])), *targets[1:]]
    with pytest.raises(DataError, match="predicates must be in 1..2"):
        model(images, bad)
    bad = [dict(targets[0], relations=torch.tensor([[0, 7, 1]])), *targets[1:]]
    with pytest.raises(DataError, match="outside the 3 boxes"):
        model(images, bad)
    with pytest.raises(DataError, match="needs targets"):
        model(images)
    with pytest.raises(DataError, match="float images are 0-1"):
        model.eval()([im.float() for im in images], targets)


def test_registration_and_options_from_dataset_facts():
    rm = _rm()  # registers on import
    entry = MODELS.entry("relation")
    assert entry.task == "scene_graph" and entry.options is rm.RelationOptions
    assert entry.builder is rm.build_relation_model
    facts = SimpleNamespace(get=lambda k, d=None: {"class_names": ["a", "b"]}.get(k, d))
    opts = _rm().resolve_relation_options(
        _rm().RelationOptions(predicate_names=["__background__", "on", "near", "has"]), facts
    )
    assert opts.object_names == ["a", "b"] and opts.num_object_classes == 2
    assert opts.predicate_names == ["on", "near", "has"] and opts.num_predicates == 3


def test_state_dict_round_trip_gives_identical_outputs():
    images, targets = _batch()
    a, b = _model(seed=0).eval(), _model(seed=1).eval()
    b.load_state_dict(a.state_dict())
    pa, pb = a(images, targets), b(images, targets)
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x["rel_scores"], y["rel_scores"], atol=1e-6, rtol=0)
        assert torch.equal(x["rel_pairs"], y["rel_pairs"])


# -- a real (tiny, untrained) percepta detector behind a checkpoint ---------------------------

_CENTERNET = [
    "model.name=centernet",
    "model.backbone=test_resnet",
    "model.input_size=64",
    f"model.num_classes={C}",
    "model.neck_channels=[32,16,8]",
    "model.head_conv=8",
    "model.top_k=6",
    "model.score_threshold=0.0",
]


def _save(state_cfg, model, task, path):
    import percepta
    from percepta import checkpoints, config

    state = {
        "format": checkpoints.FORMAT,
        "version": checkpoints.VERSION,
        "percepta_version": percepta.__version__,
        "task": task,
        "config": config.to_dict(state_cfg),
        "model": model.state_dict(),
        "ema": None,
    }
    return checkpoints.save_checkpoint(state, path)


@pytest.fixture(scope="module")
def centernet_checkpoint(tmp_path_factory):
    from percepta import build_model, config

    torch.manual_seed(0)
    cfg = config.load(None, _CENTERNET)
    return _save(cfg, build_model(cfg), "detection", tmp_path_factory.mktemp("det") / "det.pt")


def test_relation_model_on_a_centernet_checkpoint_round_trips(centernet_checkpoint, tmp_path):
    import percepta
    from percepta import config
    from percepta.components import model_options, with_model_options

    _rm()  # registers the relation model
    tiny = ["obj_dim=12", "pooling_dim=12", "hidden_dim=6", "embed_dim=5", "roi_size=3"]
    over = [
        "model.name=relation",
        "model.mode=sgdet",
        f"model.detector_checkpoint={centernet_checkpoint}",
        f"model.num_object_classes={C}",
        f"model.num_predicates={R}",
        "model.batch_size_per_image=16",
        *[f"model.{t}" for t in tiny],
    ]
    cfg = config.load(None, over)
    assert cfg.task == "scene_graph"
    opts = model_options(cfg)
    assert opts.roi_channels == 8  # read from the detector (CenterNet's neck) and recorded
    cfg = with_model_options(cfg, opts)
    torch.manual_seed(0)
    model = percepta.build_model(cfg)
    images, targets = _batch()
    det_params = [p.clone() for p in model.detector.model.parameters()]
    _train(model, images, targets, steps=2)
    assert all(torch.equal(a, b) for a, b in zip(det_params, model.detector.model.parameters()))
    assert not model.detector.model.training  # frozen: stays in eval mode
    model.eval()
    preds = run_model(model, images, None)
    for p in preds:
        n = len(p["boxes"])
        assert 0 < n <= 6 and p["rel_pairs"].shape == (n * (n - 1), 2)
        assert bool((p["boxes"][:, 2] <= 24).all() and (p["boxes"][:, 3] <= 24).all())
    path = _save(cfg, model, "scene_graph", tmp_path / "rel.pt")
    again = percepta.load(str(path))
    assert again.options.roi_channels == 8
    for x, y in zip(preds, again(images)):
        torch.testing.assert_close(x["rel_scores"], y["rel_scores"], atol=1e-6, rtol=0)
        assert torch.equal(x["rel_pairs"], y["rel_pairs"])
        assert torch.equal(x["labels"], y["labels"])


def test_freq_sgdet_uses_the_detector_labels_and_sgcls_needs_classify(tmp_path):
    images, targets = _batch()
    pd = _pred_dist(targets)
    det = FakeDetector(detections=_detections(targets))
    model = _rm().RelationModel(_options(mode="sgdet", predictor="freq"), detector=det)
    model.set_pred_dist(pd)
    preds = model.eval()(images)
    for pred, t in zip(preds, targets):
        # the fake detector is confident of the GT class of each (well separated) box
        assert torch.equal(pred["labels"], t["labels"])
        lab = t["labels"] + 1
        s, o = pred["rel_pairs"][:, 0], pred["rel_pairs"][:, 1]
        want = torch.softmax(torch.from_numpy(pd)[lab[s], lab[o]], 1)
        torch.testing.assert_close(pred["rel_scores"], want, atol=1e-6, rtol=1e-6)
    with pytest.raises(ConfigError, match="needs a detector that classifies given boxes"):
        _rm().RelationModel(_options(mode="sgcls", predictor="freq"), detector=FakeDetector())


def test_sgcls_without_a_detector_classifier_uses_a_uniform_prior():
    images, targets = _batch()
    model = _model(mode="sgcls", detector=FakeDetector())  # no classify()
    hist = _train(model, images, targets, steps=2)
    assert all(np.isfinite(list(h.values())).all() for h in hist)
    preds = model.eval()(images, [{"boxes": t["boxes"]} for t in targets])
    assert all(p["rel_pairs"].shape == (6, 2) for p in preds)
    with pytest.raises(DataError, match=r"sgcls needs \['boxes'\] at inference"):
        model(images, [{"labels": t["labels"]} for t in targets])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_moves_its_frozen_detector_and_matches_cpu(centernet_checkpoint):
    tiny = dict(obj_dim=12, pooling_dim=12, hidden_dim=6, embed_dim=5, roi_size=3)
    opts = _rm().RelationOptions(
        mode="predcls",
        detector_checkpoint=str(centernet_checkpoint),
        num_object_classes=C,
        num_predicates=R,
        batch_size_per_image=16,
        **tiny,
    )
    torch.manual_seed(0)
    model = _rm().build_relation_model(opts)
    images, targets = _batch()
    cpu = model.eval()(images, targets)
    model.to("cuda")
    gpu = model(images, [{k: v.cuda() for k, v in t.items()} for t in targets])
    assert next(model.detector.model.parameters()).is_cuda
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(a["rel_scores"], b["rel_scores"].cpu(), atol=1e-4, rtol=1e-4)
    _train(model, images, targets, steps=1)


@pytest.mark.parametrize("mode", ["predcls", "sgcls"])
def test_feature_cache_gives_the_uncached_losses_and_skips_the_detector(mode):
    images, targets = _batch(0)
    targets = [dict(t, image_id=i) for i, t in enumerate(targets)]
    cached_det, plain_det = FakeDetector(with_classify=True), FakeDetector(with_classify=True)
    cached = _model(cached_det, mode=mode)
    plain = _model(plain_det, mode=mode, feature_cache_mb=0)
    plain.load_state_dict(cached.state_dict())
    for step in range(3):
        torch.manual_seed(step)
        a = cached(images, targets)
        torch.manual_seed(step)
        b = plain(images, targets)
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    # the cache ran the detector once per image in the first step, never after
    assert cached_det.calls == len(images) and plain_det.calls == 3
    cache = cached.feature_cache
    assert (cache.hits, cache.misses, len(cache)) == (2 * len(images), len(images), len(images))


def test_feature_cache_recomputes_changed_pixels_and_keeps_its_budget():
    images, targets = _batch(0)
    targets = [dict(t, image_id=i) for i, t in enumerate(targets)]
    det = FakeDetector()
    model = _model(det)
    model(images, targets)
    flipped = [im.flip(-1) for im in images]  # an augmentation: same ids, other pixels
    model(flipped, targets)
    assert det.calls == 2 * len(images) and len(model.feature_cache) == len(images)
    # no id, no caching; a budget too small for one image keeps nothing
    model(images, [{k: v for k, v in t.items() if k != "image_id"} for t in targets])
    assert det.calls == 3 * len(images)
    tiny = _model(FakeDetector(), feature_cache_mb=1e-4)
    tiny(images, targets)
    assert len(tiny.feature_cache) == 0 and tiny.feature_cache.nbytes == 0
