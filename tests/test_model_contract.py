"""The model contract, checked for EVERY registered model (as timm and torchvision test theirs).

Parametrised over :data:`percepta.registry.MODELS` after ``import_all()`` plus the test-only
plug-in models of ``tests/plugins`` (:mod:`plugins.toy_components`). Each model is built the way
the engine builds it: ``config.load(None, ["model.name=<name>", *tiny overrides])`` then
:func:`percepta.engine.build.build_model`, so its options go through the config validation
(nested sections included). For each model:

* train mode: ``model(images, targets)`` returns a dict with at least one ``loss*`` term, each a
  finite scalar; their sum back-propagates finite gradients, non-zero for some parameter;
* eval mode, through :func:`percepta.inference.run_model` (so a model that declares
  ``inference_inputs`` gets them): one prediction dict per image with the keys and shapes of
  ``../shared/DESIGN.md`` for its task (detection: ``boxes [K,4]`` inside the ORIGINAL image of
  each size, ``scores [K]`` in [0, 1], ``labels [K]`` int64 in 0..C-1; given boxes: the given
  boxes back with a label each; quality-like: ``score []``);
* images without objects (models whose task has objects): the losses stay finite, the terms
  that regress boxes are exactly 0 (torchvision's negative-sample tests assert the same of
  their box losses: no object, nothing to regress), backward works, and prediction runs;
* state-dict round trip: ``torch.save`` -> ``torch.load`` into a model built with another seed
  (its weights differ, checked) gives identical eval outputs (tolerance 1e-6);
* determinism: the same seed builds the same model and gives the same losses and outputs
  (tolerance 1e-6).

A new model must come with an entry in :data:`FACTORIES` (tiny option overrides and a sample
batch); without one its tests fail with a message saying so. The whole file runs in well
under 40 s on 2 cores (CenterNet uses timm's 0.4M-parameter ``test_resnet`` at 64 px).
"""

from __future__ import annotations

import atexit
import io
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))

from percepta import config  # noqa: E402
from percepta.engine.build import build_model  # noqa: E402
from percepta.inference import run_model  # noqa: E402
from percepta.registry import MODELS, import_all  # noqa: E402
from percepta.structures import make_target  # noqa: E402
from plugins import toy_components as toy  # noqa: E402  (defines; registers nothing)

import_all()
NAMES = sorted(set(MODELS.names()) | set(toy.MODEL_NAMES))
TOL = 1e-6

Batch = tuple[list[torch.Tensor], list[dict[str, Any]]]


@dataclass
class Case:
    """What one model's contract tests need."""

    overrides: list[str]  # key=value completing the option defaults with tiny sizes
    batch: Callable[[], Batch]  # a small training / evaluation batch
    empty: Callable[[], Batch] | None = None  # images without objects (None: no objects)
    zero_terms: tuple[str, ...] = ()  # loss terms exactly 0 on ``empty``


# -- sample batches ----------------------------------------------------------------------------


def _images(*sizes: tuple[int, int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]


def _detection_batch() -> Batch:
    """Two images of different sizes (letterboxing maps predictions back to each)."""
    images = _images((64, 64), (48, 80))
    targets = [
        make_target([[4, 6, 30, 40], [40, 10, 60, 60]], [0, 2], 0, (64, 64)),
        make_target([[10, 5, 70, 44]], [1], 1, (48, 80)),
    ]
    return images, targets


def _detection_empty() -> Batch:
    images = _images((64, 64), (48, 80), seed=1)
    return images, [make_target([], [], 0, (64, 64)), make_target([], [], 1, (48, 80))]


def _boxes_batch() -> Batch:
    ds = toy.ToyBoxesDataset(3, seed=3)
    images, targets = zip(*(ds[i] for i in range(3)))
    return list(images), list(targets)


def _boxes_empty() -> Batch:
    ds = toy.ToyBoxesDataset(2, seed=4, min_boxes=0, max_boxes=0)
    images, targets = zip(*(ds[i] for i in range(2)))
    return list(images), list(targets)


def _pairs_batch() -> Batch:
    ds = toy.ToyPairsDataset(3, seed=3)
    images, targets = zip(*(ds[i] for i in range(3)))
    return list(images), list(targets)


def _quality_fr_batch() -> Batch:
    """Distorted/reference pairs of two sizes (one below the 64 px crop) with 1-5 scores."""
    images = _images((64, 80), (48, 64))
    refs = _images((64, 80), (48, 64), seed=1)
    scores = (4.2, 1.7)
    return images, [{"reference": r, "score": torch.tensor(s)} for r, s in zip(refs, scores)]


def _quality_nr_batch() -> Batch:
    """No-reference images of three sizes (one padded TRIQ batch) with 1-5 scores."""
    images = _images((64, 96), (96, 64), (64, 64))
    return images, [{"score": torch.tensor(s)} for s in (4.2, 1.7, 3.0)]


_IQT_TINY = [
    "model.backbone=test_resnet",
    "model.crop_size=64",
    "model.d_model=16",
    "model.num_heads=2",
    "model.ffn_dim=32",
    "model.head_dim=8",
    "model.test_crops=2",
    "model.score_range=[1.0,5.0]",
]

FACTORIES: dict[str, Case] = {
    "iqt": Case(_IQT_TINY, _quality_fr_batch),
    "iqt_c": Case(_IQT_TINY, _quality_fr_batch),
    "triq": Case(
        ["model.backbone=test_resnet", "model.max_grid=[3,3]", "model.score_range=[1.0,5.0]"],
        _quality_nr_batch,
    ),
    "centernet": Case(
        [
            "model.backbone=test_resnet",
            "model.input_size=64",
            "model.num_classes=3",
            "model.neck_channels=[32,16,8]",
            "model.head_conv=8",
            "model.max_objs=8",
            "model.top_k=10",
            "model.score_threshold=0.0",
        ],
        _detection_batch,
        _detection_empty,
        zero_terms=("loss_wh", "loss_offset"),
    ),
    "faster_rcnn": Case(
        [
            "model.backbone=test_resnet",
            "model.num_classes=3",
            "model.min_size=64",
            "model.max_size=96",
            "model.fpn_channels=16",
            "model.representation_size=32",
            "model.anchor_sizes=[8,16,32,64,128]",
            "model.box_score_thresh=0.0",
            "model.box_detections_per_img=10",
        ],
        _detection_batch,
        _detection_empty,
        zero_terms=("loss_box_reg", "loss_rpn_box_reg"),
    ),
    "toy_boxes_model": Case(
        ["model.num_classes=3", "model.width=8"],
        _boxes_batch,
        _boxes_empty,
        zero_terms=("loss_cls",),
    ),
    "toy_pairs_model": Case(["model.score_range=[0.0,1.0]", "model.width=4"], _pairs_batch),
    "toy_pairs_wrapper": Case(
        [
            "model.inner.name=toy_pairs_model",
            "model.inner.score_range=[0.0,1.0]",
            "model.inner.width=4",
        ],
        _pairs_batch,
    ),
}


# -- the eval output contract per task ---------------------------------------------------------


def _check_detection(
    preds: list[dict], images: list[torch.Tensor], targets: list[dict], model: Any
) -> None:
    num_classes = int(getattr(model, "num_classes", 0)) or None
    for p, image in zip(preds, images):
        boxes, scores, labels = p["boxes"], p["scores"], p["labels"]
        k = len(scores)
        assert boxes.shape == (k, 4) and scores.shape == (k,) and labels.shape == (k,)
        assert boxes.is_floating_point() and scores.is_floating_point()
        assert labels.dtype == torch.int64
        assert torch.isfinite(boxes).all() and torch.isfinite(scores).all()
        assert ((scores >= 0) & (scores <= 1)).all()
        if num_classes is not None:
            assert ((labels >= 0) & (labels < num_classes)).all()
        h, w = image.shape[-2:]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()


def _check_given_boxes(
    preds: list[dict], images: list[torch.Tensor], targets: list[dict], model: Any
) -> None:
    _check_detection(preds, images, targets, model)
    for p, t in zip(preds, targets):  # PredCls: exactly the given boxes, in the given order
        given = torch.as_tensor(t["boxes"]).as_subclass(torch.Tensor).float().reshape(-1, 4)
        assert torch.equal(p["boxes"].float(), given)


def _check_score(
    preds: list[dict], images: list[torch.Tensor], targets: list[dict], model: Any
) -> None:
    for p in preds:
        assert p["score"].shape == () and p["score"].is_floating_point()
        assert torch.isfinite(p["score"])


OUTPUT_CHECKS: dict[str, Callable[..., None]] = {
    "detection": _check_detection,
    toy.TASK_BOXES: _check_given_boxes,
    toy.TASK_PAIRS: _check_score,
    "quality": _check_score,
}


# -- the relation model (scene graphs): a frozen tiny CenterNet checkpoint as its detector --


def _relation_detector_checkpoint() -> str:
    """A tiny untrained CenterNet checkpoint (the relation model's frozen detector)."""
    import percepta
    from percepta import checkpoints
    from percepta import config as _config
    from percepta.engine.build import build_model as _build

    folder = Path(tempfile.mkdtemp(prefix="percepta_rel_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "det.pt"
    cfg = _config.load(None, ["model.name=centernet", *FACTORIES["centernet"].overrides])
    torch.manual_seed(0)
    state = {
        "format": checkpoints.FORMAT,
        "version": checkpoints.VERSION,
        "percepta_version": percepta.__version__,
        "task": "detection",
        "config": _config.to_dict(cfg),
        "model": _build(cfg).state_dict(),
        "ema": None,
    }
    checkpoints.save_checkpoint(state, path)
    return str(path)


def _relation_batch() -> Batch:
    images = _images((64, 64), (48, 80))
    targets = [
        make_target(
            [[4, 4, 30, 30], [20, 10, 60, 50], [35, 30, 60, 60]],
            [0, 1, 2],
            0,
            (64, 64),
            relations=torch.tensor([[0, 1, 1], [1, 2, 2]]),
        ),
        make_target(
            [[2, 2, 40, 30], [30, 5, 70, 40]],
            [2, 0],
            1,
            (48, 80),
            relations=torch.tensor([[1, 0, 1]]),
        ),
    ]
    return images, targets


def _relation_empty() -> Batch:
    images = _images((64, 64), (48, 80), seed=1)
    return images, [
        make_target([], [], 0, (64, 64), relations=torch.zeros(0, 3, dtype=torch.int64)),
        make_target([], [], 1, (48, 80), relations=torch.zeros(0, 3, dtype=torch.int64)),
    ]


FACTORIES["relation"] = Case(
    [
        f"model.detector_checkpoint={_relation_detector_checkpoint()}",
        "model.num_object_classes=3",
        "model.num_predicates=2",
        "model.roi_size=3",
        "model.obj_dim=16",
        "model.pooling_dim=16",
        "model.hidden_dim=8",
        "model.embed_dim=8",
        "model.batch_size_per_image=16",
    ],
    _relation_batch,
    _relation_empty,
    zero_terms=("loss_rel", "loss_refine_obj"),
)


def _check_scene_graph(preds, images, targets, model):
    _check_given_boxes(preds, images, targets, model)  # PredCls: the given boxes
    for p in preds:
        n, r = len(p["boxes"]), len(p["rel_pairs"])
        assert p["rel_pairs"].shape == (r, 2) and p["rel_pairs"].dtype == torch.int64
        assert p["rel_scores"].shape == (r, model.num_predicates + 1)
        assert p["rel_labels"].shape == (r,)
        assert r == 0 or int(p["rel_pairs"].max()) < n
        torch.testing.assert_close(p["rel_scores"].sum(1), torch.ones(r), atol=1e-5, rtol=0)


OUTPUT_CHECKS["scene_graph"] = _check_scene_graph


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _plugin_models():
    """Register the plug-in's toy models for this module only."""
    toy.register()
    yield
    toy.unregister()


def case_for(name: str) -> Case:
    case = FACTORIES.get(name)
    if case is None:
        pytest.fail(
            f"model {name!r} is registered but tests/test_model_contract.py has no "
            f"factory for it: add FACTORIES[{name!r}] = Case([tiny option overrides], "
            "sample_batch, ...) so the model contract is checked"
        )
    return case


def build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = config.load(None, [f"model.name={name}", *case_for(name).overrides])
    return build_model(cfg)


def train_losses(model: torch.nn.Module, batch: Batch, seed: int = 0) -> dict[str, Any]:
    model.train()
    torch.manual_seed(seed)
    images, targets = batch
    out = model(images, targets)
    assert isinstance(out, dict), f"train mode must return a dict of losses, not {type(out)}"
    return out


def predict(model: torch.nn.Module, batch: Batch) -> list[dict[str, torch.Tensor]]:
    model.eval()
    images, targets = batch
    with torch.no_grad():
        preds = run_model(model, images, targets)
    assert isinstance(preds, list) and len(preds) == len(images)
    assert all(isinstance(p, dict) for p in preds)
    return preds


def loss_terms(losses: dict[str, Any]) -> dict[str, torch.Tensor]:
    terms = {k: v for k, v in losses.items() if str(k).startswith("loss")}
    assert terms, f"no 'loss*' term among {sorted(losses)}"
    for k, v in terms.items():
        assert isinstance(v, torch.Tensor) and v.numel() == 1, f"{k} is not a scalar tensor"
        assert torch.isfinite(v), f"{k} = {v} is not finite"
    return terms


def assert_outputs_close(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert p.keys() == q.keys()
        for k in p:
            if p[k].is_floating_point():
                torch.testing.assert_close(p[k], q[k], atol=TOL, rtol=0)
            else:
                assert torch.equal(p[k], q[k]), k


def check_outputs(name: str, model: torch.nn.Module, batch: Batch, preds: list[dict]) -> None:
    task = MODELS.entry(name).task
    check = OUTPUT_CHECKS.get(str(task))
    if check is None:
        pytest.fail(
            f"no eval-output check for task {task!r} (model {name!r}): add one to "
            "OUTPUT_CHECKS in tests/test_model_contract.py"
        )
    check(preds, batch[0], batch[1], model)


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_train_mode_returns_finite_losses_with_finite_gradients(name):
    model = build(name)
    terms = loss_terms(train_losses(model, case_for(name).batch()))
    sum(terms.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads), "every gradient is zero"


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_output_contract(name):
    model = build(name)
    batch = case_for(name).batch()
    check_outputs(name, model, batch, predict(model, batch))


@pytest.mark.parametrize(
    "name", [n for n in NAMES if n not in FACTORIES or FACTORIES[n].empty is not None]
)
def test_images_without_objects_train_and_predict(name):
    case = case_for(name)
    model = build(name)
    batch = case.empty()
    assert all(len(t["labels"]) == 0 for t in batch[1])
    terms = loss_terms(train_losses(model, batch))
    for k in case.zero_terms:
        value = float(terms[k].detach())
        assert value == 0.0, f"{k} = {value} on images without objects"
    sum(terms.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    check_outputs(name, model, batch, predict(model, batch))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_identical_outputs(name):
    batch = case_for(name).batch()
    source, fresh = build(name, seed=0), build(name, seed=1)
    state = source.state_dict()
    assert any(
        not torch.equal(v, fresh.state_dict()[k]) for k, v in state.items() if v.is_floating_point()
    ), "two seeds built identical weights: the test is void"
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert_outputs_close(predict(fresh, batch), predict(source, batch))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_model_and_outputs(name):
    batch = case_for(name).batch()
    a, b = build(name, seed=7), build(name, seed=7)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    la, lb = loss_terms(train_losses(a, batch, seed=3)), loss_terms(train_losses(b, batch, seed=3))
    for k in la:
        torch.testing.assert_close(la[k], lb[k], atol=TOL, rtol=0)
    assert_outputs_close(predict(a, batch), predict(b, batch))
