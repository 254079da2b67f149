"""Two test-only tasks that prove the engine's task-neutral contract (issue 10, section 1).

Neither task is shipped; both are built only from the public plug-in surface
(:mod:`percepta.registry`, :mod:`percepta.evaluator`, :mod:`percepta.data.facts`,
:mod:`percepta.inference`), so if they train, evaluate, checkpoint, resume and run under DDP
through the unchanged engine, the engine knows no task.

``toy_given_boxes`` (PredCls-like): 16x16 ``uint8`` images with 1-3 filled boxes in distinct
columns; a box's class is the colour channel it is bright in. The model declares
``inference_inputs = ("boxes", "labels")`` and predicts a label and score per GIVEN box
(``torchvision.ops.roi_align`` features, a 2-layer MLP); the evaluator's primary metric is
``accuracy`` (higher is better).

``toy_pairs`` (full-reference quality): the image is a distorted copy of a pristine
``reference`` (uniform noise of amplitude ``60 * d``), the target's ``score`` is ``1 - d``. The
model declares ``inference_inputs = ("reference",)`` and predicts ``score []`` from statistics of
``image - reference``; the evaluator's primary metric is ``rmse`` with
``higher_is_better = False``.

Dataset facts: the boxes data publish ``class_names``/``num_classes`` (filling the boxes model's
options), the pairs data ``score_range`` (filling the pairs model's ``score_range``, which maps
its sigmoid output). ``toy_pairs_wrapper`` holds another model's section in
``inner: field(default=None, metadata={"component": "models"})`` (validated like a top-level
section) and completes it from the data facts in its registered ``resolve`` hook.

Importing this module registers nothing; :func:`register` / :func:`unregister` do (the plug-in
module :mod:`plugins.toy_tasks` calls :func:`register` on import).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchvision.ops import roi_align

from percepta.data.facts import dataset_meta, fill_options
from percepta.errors import ConfigError, DataError, PerceptaError
from percepta.evaluator import Evaluator
from percepta.registry import DATASETS, EVALUATORS, MODELS
from percepta.structures import make_target

TASK_BOXES = "toy_given_boxes"
TASK_PAIRS = "toy_pairs"
SIZE = 16  # images are [3, SIZE, SIZE] uint8
CLASS_NAMES = ["red", "green", "blue"]
SCORE_RANGE = [0.0, 1.0]

MODEL_NAMES = ("toy_boxes_model", "toy_pairs_model", "toy_pairs_wrapper")
DATASET_NAMES = ("toy_boxes_data", "toy_pairs_data")
EVALUATOR_NAMES = ("toy_accuracy", "toy_rmse")


def _pixels(image: torch.Tensor) -> torch.Tensor:
    """torchvision's image convention (uint8 0-255 or float 0-1) -> float32 in 0-1."""
    return image.float() / 255.0 if not image.is_floating_point() else image.float()


# ------------------------------------------------------------------------------ given boxes
@dataclass
class ToyBoxesDataOptions:
    """``data.*`` section of the given-boxes data (``name: toy_boxes_data``)."""

    name: str = "toy_boxes_data"
    num_images: int = 24
    seed: int = -1  # -1: 0 for the training split, 1 for the validation split
    max_boxes: int = 3  # boxes per image: 1..max_boxes (0 allowed: images without objects)
    min_boxes: int = 1


class ToyBoxesDataset(Dataset):
    """``(image uint8 [3,16,16], target)`` with ``boxes``/``labels`` (the class = the box's
    bright channel) on dim noise; boxes sit in distinct 5-pixel columns, so none overlap."""

    def __init__(
        self, num_images: int = 24, seed: int = 0, min_boxes: int = 1, max_boxes: int = 3
    ) -> None:
        g = torch.Generator().manual_seed(1000 + seed)
        self.images, self.targets = [], []
        for i in range(num_images):
            img = torch.randint(0, 60, (3, SIZE, SIZE), generator=g, dtype=torch.uint8)
            k = int(torch.randint(min_boxes, max_boxes + 1, (1,), generator=g))
            columns = torch.randperm(3, generator=g)[:k].tolist()
            boxes, labels = [], []
            for col in columns:
                x0 = 5 * col + int(torch.randint(0, 2, (1,), generator=g))
                y0 = int(torch.randint(0, SIZE - 5, (1,), generator=g))
                w, h = 4, int(torch.randint(4, SIZE - y0 + 1, (1,), generator=g))
                label = int(torch.randint(0, len(CLASS_NAMES), (1,), generator=g))
                img[:, y0 : y0 + h, x0 : x0 + w] = 30
                img[label, y0 : y0 + h, x0 : x0 + w] = 220
                boxes.append([x0, y0, x0 + w, y0 + h])
                labels.append(label)
            self.images.append(img)
            self.targets.append(make_target(boxes, labels, image_id=i, orig_size=(SIZE, SIZE)))
        self.meta = {"class_names": list(CLASS_NAMES), "num_classes": len(CLASS_NAMES)}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.images[i].clone(), dict(self.targets[i])


def build_toy_boxes_data(
    opts: ToyBoxesDataOptions, root: str = ".", train: bool = True
) -> ToyBoxesDataset:
    """Given-boxes toy data (test only)."""
    seed = opts.seed if opts.seed >= 0 else (0 if train else 1)
    return ToyBoxesDataset(opts.num_images, seed, opts.min_boxes, opts.max_boxes)


@dataclass
class ToyBoxesModelOptions:
    """``model`` section of the given-boxes classifier (``name: toy_boxes_model``)."""

    name: str = "toy_boxes_model"
    num_classes: int = 0  # 0 = from the dataset's meta
    class_names: list[str] = field(default_factory=list)  # [] = from the dataset's meta
    width: int = 16
    dropout: float = 0.1


class ToyBoxesModel(nn.Module):
    """Classifies GIVEN boxes: ``roi_align`` (2x2) colour features + normalised box geometry
    -> MLP -> logits over C classes.

    Train mode: ``model(images, targets)`` -> ``{"loss_cls"}``, the mean over images of each
    image's mean box cross-entropy (so a global batch split over DDP ranks averages the same).
    Eval mode: ``model(images, inputs)`` with ``inputs[i]`` holding ``boxes``/``labels`` ->
    per image ``boxes [K,4]`` (the given ones), ``labels [K]`` int64, ``scores [K]``.
    """

    inference_inputs = ("boxes", "labels")

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] = (),
        width: int = 16,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_classes, self.class_names = int(num_classes), list(class_names)
        self.mlp = nn.Sequential(
            nn.Linear(3 * 4 + 4, width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, num_classes),
        )

    def box_logits(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Logits ``[K, C]`` for the XYXY ``boxes [K,4]`` of one ``[3,H,W]`` image."""
        boxes = torch.as_tensor(boxes).as_subclass(torch.Tensor).float().reshape(-1, 4)
        x = _pixels(image).unsqueeze(0)
        feats = roi_align(
            x, [boxes], output_size=2, spatial_scale=1.0, sampling_ratio=2, aligned=True
        ).flatten(1)
        h, w = image.shape[-2:]
        geometry = boxes / torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        return self.mlp(torch.cat([feats, geometry], dim=1))

    def forward(
        self, images: Sequence[torch.Tensor], targets: Sequence[Mapping[str, Any]] | None = None
    ) -> Any:
        if targets is None or any("boxes" not in t for t in targets):
            raise DataError(
                "ToyBoxesModel classifies given boxes: call it as model(images, "
                "inputs) with inputs[i]['boxes'] (it has no detector)"
            )
        if self.training:
            per_image = []
            for image, t in zip(images, targets):
                logits = self.box_logits(image, t["boxes"])
                labels = torch.as_tensor(t["labels"]).as_subclass(torch.Tensor).long()
                # an image without boxes contributes 0 (and keeps the graph: empty sum)
                per_image.append(
                    F.cross_entropy(logits, labels, reduction="sum") / max(len(labels), 1)
                )
            return {"loss_cls": torch.stack(per_image).mean()}
        out = []
        for image, t in zip(images, targets):
            boxes = torch.as_tensor(t["boxes"]).as_subclass(torch.Tensor).float().reshape(-1, 4)
            probs = self.box_logits(image, boxes).softmax(dim=1)
            scores, labels = probs.max(dim=1)
            out.append({"boxes": boxes, "scores": scores, "labels": labels.to(torch.int64)})
        return out


def build_toy_boxes_model(opts: ToyBoxesModelOptions) -> ToyBoxesModel:
    """Given-boxes classifier (PredCls-like, test only)."""
    if opts.num_classes < 1:
        raise PerceptaError(
            f"model.num_classes must be >= 1 (got {opts.num_classes}); it is "
            "filled from the dataset's meta when built with a dataset"
        )
    return ToyBoxesModel(opts.num_classes, opts.class_names, opts.width, opts.dropout)


class ToyAccuracy(Evaluator):
    """Share of given boxes whose predicted label is the target's (summed states: DDP-safe)."""

    primary_metric = "accuracy"
    higher_is_better = True

    def __init__(self, class_names: Sequence[str] = ()) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.add_state("correct", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(
        self, preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]
    ) -> None:  # type: ignore[override]
        for p, t in zip(preds, targets, strict=True):
            want = torch.as_tensor(t["labels"]).reshape(-1).to(self.correct.device)
            got = torch.as_tensor(p["labels"]).reshape(-1).to(self.correct.device)
            if got.shape != want.shape:
                raise DataError(
                    f"image {t.get('image_id')}: {len(got)} predicted labels for "
                    f"{len(want)} given boxes"
                )
            self.correct += (got == want).sum()
            self.total += len(want)

    def compute(self) -> dict[str, Any]:
        total = int(self.total)
        return {
            "accuracy": int(self.correct) / total if total else float("nan"),
            "num_boxes": total,
        }

    def format_table(self, metrics: Mapping[str, Any]) -> str:
        return (
            f"| accuracy | {float(metrics['accuracy']):.4f} |\n"
            f"| boxes    | {int(metrics['num_boxes'])} |"
        )


def build_toy_accuracy(options: Any, dataset: Any) -> ToyAccuracy:
    """Accuracy over given boxes (test only)."""
    return ToyAccuracy(dataset_meta(dataset).get("class_names", []))


# ------------------------------------------------------------------------------ image pairs
@dataclass
class ToyPairsDataOptions:
    """``data.*`` section of the image-pair data (``name: toy_pairs_data``)."""

    name: str = "toy_pairs_data"
    num_images: int = 24
    seed: int = -1  # -1: 0 for the training split, 1 for the validation split
    with_reference: bool = True  # false: targets lack ``reference`` (a no-reference table)


class ToyPairsDataset(Dataset):
    """``(distorted uint8 image, target)``; the target has ``reference`` (pristine, uint8) and
    ``score = 1 - d`` (float32 ``[]``) for a distortion level ``d ~ U(0, 1)``."""

    def __init__(self, num_images: int = 24, seed: int = 0, with_reference: bool = True) -> None:
        g = torch.Generator().manual_seed(2000 + seed)
        self.items = []
        for i in range(num_images):
            ref = torch.randint(40, 216, (3, SIZE, SIZE), generator=g).float()
            d = float(torch.rand((), generator=g))
            noise = (torch.rand((3, SIZE, SIZE), generator=g) * 2 - 1) * 60 * d
            img = (ref + noise).round().clamp(0, 255).to(torch.uint8)
            target: dict[str, Any] = {
                "image_id": i,
                "orig_size": (SIZE, SIZE),
                "score": torch.tensor(1.0 - d, dtype=torch.float32),
            }
            if with_reference:
                target["reference"] = ref.to(torch.uint8)
            self.items.append((img, target))
        self.meta = {"score_range": list(SCORE_RANGE)}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        img, target = self.items[i]
        return img.clone(), dict(target)


def build_toy_pairs_data(
    opts: ToyPairsDataOptions, root: str = ".", train: bool = True
) -> ToyPairsDataset:
    """Reference/distorted image pairs with a score (test only)."""
    seed = opts.seed if opts.seed >= 0 else (0 if train else 1)
    return ToyPairsDataset(opts.num_images, seed, opts.with_reference)


@dataclass
class ToyPairsModelOptions:
    """``model`` section of the full-reference scorer (``name: toy_pairs_model``)."""

    name: str = "toy_pairs_model"
    score_range: list[float] = field(default_factory=list)  # [] = from the dataset's meta
    width: int = 8
    dropout: float = 0.1


def _references(targets: Sequence[Mapping[str, Any]] | None, who: str) -> list[torch.Tensor]:
    if targets is None or any("reference" not in t for t in targets):
        raise DataError(
            f"{who} is a full-reference model: call it as model(images, inputs) "
            "with inputs[i]['reference'] (the pristine image)"
        )
    return [t["reference"] for t in targets]


class ToyPairsModel(nn.Module):
    """Scores a distorted image against its reference: per-channel mean |diff| and std of the
    difference -> MLP -> sigmoid mapped into ``score_range``.

    Train mode: ``model(images, targets)`` -> ``{"loss_mse"}`` (mean over images). Eval mode:
    ``model(images, inputs)`` with ``inputs[i]["reference"]`` -> per image ``{"score": []}``.
    """

    inference_inputs = ("reference",)

    def __init__(self, score_range: Sequence[float], width: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.low, self.high = float(score_range[0]), float(score_range[1])
        self.mlp = nn.Sequential(
            nn.Linear(6, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, 1)
        )

    def predict_scores(
        self, images: Sequence[torch.Tensor], references: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Scores ``[B]`` (differentiable) of ``images`` against ``references``."""
        feats = []
        for image, ref in zip(images, references, strict=True):
            diff = (_pixels(image) - _pixels(ref)).flatten(1)
            feats.append(torch.cat([diff.abs().mean(1) * 10, diff.std(1) * 10]))
        s = torch.sigmoid(self.mlp(torch.stack(feats)).squeeze(1))
        return self.low + (self.high - self.low) * s

    def forward(
        self, images: Sequence[torch.Tensor], targets: Sequence[Mapping[str, Any]] | None = None
    ) -> Any:
        scores = self.predict_scores(images, _references(targets, type(self).__name__))
        if self.training:
            y = torch.stack([torch.as_tensor(t["score"]).float() for t in targets])
            return {"loss_mse": F.mse_loss(scores, y.to(scores.device))}
        return [{"score": s} for s in scores]


def build_toy_pairs_model(opts: ToyPairsModelOptions) -> ToyPairsModel:
    """Full-reference image-pair scorer (test only)."""
    if len(opts.score_range) != 2:
        raise PerceptaError(
            f"model.score_range must be [low, high] (got {opts.score_range}); "
            "it is filled from the dataset's meta when built with a dataset"
        )
    return ToyPairsModel(opts.score_range, opts.width, opts.dropout)


@dataclass
class ToyPairsWrapperOptions:
    """``model`` section of a calibrated wrapper around another pairs model
    (``name: toy_pairs_wrapper``); ``inner`` is that model's own, validated section."""

    name: str = "toy_pairs_wrapper"
    inner: Any = field(default=None, metadata={"component": "models"})
    init_scale: float = 1.0


class ToyPairsWrapper(nn.Module):
    """``a * inner_score + b`` with learnable ``a, b`` (a nested component, test only)."""

    inference_inputs = ("reference",)

    def __init__(self, inner: ToyPairsModel, init_scale: float = 1.0) -> None:
        super().__init__()
        self.inner = inner
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(
        self, images: Sequence[torch.Tensor], targets: Sequence[Mapping[str, Any]] | None = None
    ) -> Any:
        refs = _references(targets, type(self).__name__)
        scores = self.scale * self.inner.predict_scores(images, refs) + self.bias
        if self.training:
            y = torch.stack([torch.as_tensor(t["score"]).float() for t in targets])
            return {"loss_mse": F.mse_loss(scores, y.to(scores.device))}
        return [{"score": s} for s in scores]


def resolve_wrapper(opts: ToyPairsWrapperOptions, facts: Any) -> ToyPairsWrapperOptions:
    """Complete the inner section from the data facts too (``fill_options`` fills only the
    top level); refuse a missing inner section or an inner model of another task."""
    if opts.inner is None:
        raise ConfigError(
            "model.inner: give the wrapped model's section, e.g. model.inner.name=toy_pairs_model"
        )
    task = MODELS.entry(opts.inner.name).task
    if task != TASK_PAIRS:
        raise ConfigError(
            f"model.inner.name={opts.inner.name!r} is a {task!r} model; "
            f"toy_pairs_wrapper wraps a {TASK_PAIRS} model"
        )
    return dataclasses.replace(opts, inner=fill_options(opts.inner, facts))


def build_toy_pairs_wrapper(opts: ToyPairsWrapperOptions) -> ToyPairsWrapper:
    """Calibrated wrapper around another toy_pairs model (nested section, test only)."""
    if opts.inner is None:
        raise ConfigError(
            "model.inner: give the wrapped model's section, e.g. model.inner.name=toy_pairs_model"
        )
    inner = MODELS.get(opts.inner.name)(opts.inner)
    return ToyPairsWrapper(inner, opts.init_scale)


class ToyRMSE(Evaluator):
    """Root mean squared error of ``score`` (lower is better; summed states: DDP-safe)."""

    primary_metric = "rmse"
    higher_is_better = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("sq", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("abs", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(
        self, preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]
    ) -> None:  # type: ignore[override]
        for p, t in zip(preds, targets, strict=True):
            err = torch.as_tensor(p["score"]).double().to(self.sq.device) - torch.as_tensor(
                t["score"]
            ).double().to(self.sq.device)
            self.sq += err * err
            self.abs += err.abs()
            self.n += 1

    def compute(self) -> dict[str, Any]:
        n = int(self.n)
        if not n:
            return {"rmse": float("nan"), "mae": float("nan"), "count": 0}
        return {"rmse": math.sqrt(float(self.sq) / n), "mae": float(self.abs) / n, "count": n}

    def format_table(self, metrics: Mapping[str, Any]) -> str:
        return f"| rmse | {float(metrics['rmse']):.4f} |\n| mae  | {float(metrics['mae']):.4f} |"


def build_toy_rmse(options: Any, dataset: Any) -> ToyRMSE:
    """RMSE of predicted scores (test only)."""
    return ToyRMSE()


# ------------------------------------------------------------------------------ registration
def register() -> None:
    """Register the toy tasks' components (idempotent: the same objects are a no-op)."""
    DATASETS.add("toy_boxes_data", build_toy_boxes_data, options=ToyBoxesDataOptions)
    DATASETS.add("toy_pairs_data", build_toy_pairs_data, options=ToyPairsDataOptions)
    MODELS.add(
        "toy_boxes_model", build_toy_boxes_model, options=ToyBoxesModelOptions, task=TASK_BOXES
    )
    MODELS.add(
        "toy_pairs_model", build_toy_pairs_model, options=ToyPairsModelOptions, task=TASK_PAIRS
    )
    MODELS.add(
        "toy_pairs_wrapper",
        build_toy_pairs_wrapper,
        options=ToyPairsWrapperOptions,
        task=TASK_PAIRS,
        resolve=resolve_wrapper,
    )
    EVALUATORS.add("toy_accuracy", build_toy_accuracy)
    EVALUATORS.add("toy_rmse", build_toy_rmse)


def unregister() -> None:
    """Remove everything :func:`register` added (so other tests see the shipped registry)."""
    for registry, names in (
        (DATASETS, DATASET_NAMES),
        (MODELS, MODEL_NAMES),
        (EVALUATORS, EVALUATOR_NAMES),
    ):
        for name in names:
            registry.remove(name)
