"""Dataset facts that a model needs (the one documented route from data to model options).

A dataset publishes what it knows about itself in a ``meta`` dict, e.g. a COCO dataset::

    {"class_names": [...], "num_classes": C, "category_ids": [...]}

and a scene-graph dataset would add ``predicate_names`` and frequency statistics, an unlabelled
image folder ``{"labelled": False}``. Before a model is built, the engine fills every field of
the model's options dataclass that has the same name as a fact and is still at its "from the
data" default (``0``, ``[]``, ``""``, ``None``), taking the training split's fact first and the
validation split's otherwise. The completed options are written back into the run's config, so
every checkpoint carries them and rebuilds the model (and names its outputs) without the data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DataFacts", "dataset_meta", "fill_options"]


def dataset_meta(dataset: Any) -> dict[str, Any]:
    """``dataset.meta`` (a dict), or ``{}`` for a dataset that publishes nothing."""
    meta = getattr(dataset, "meta", None) if dataset is not None else None
    return dict(meta) if isinstance(meta, dict) else {}


@dataclass
class DataFacts:
    """The facts of a run's training and validation datasets (``{}`` for an absent split)."""

    train: dict[str, Any] = field(default_factory=dict)
    val: dict[str, Any] = field(default_factory=dict)
    has_train: bool = False  # a training split is configured (False for eval / predict)

    @classmethod
    def of(cls, train_dataset: Any = None, val_dataset: Any = None) -> DataFacts:
        return cls(
            dataset_meta(train_dataset),
            dataset_meta(val_dataset),
            has_train=train_dataset is not None,
        )

    def get(self, key: str, default: Any = None) -> Any:
        """The training split's fact, else the validation split's, else ``default``."""
        for meta in (self.train, self.val):
            if _is_set(meta.get(key)):
                return meta[key]
        return default

    @property
    def train_labelled(self) -> bool:
        """Whether the training split has labels (an image folder has none)."""
        return bool(self.train.get("labelled", True))


def _is_set(value: Any) -> bool:
    return value not in (None, 0, "", [], (), {})


def fill_options(options: Any, facts: DataFacts) -> Any:
    """``options`` with every unset field that names a fact filled from ``facts``.

    ``num_classes`` left at 0 becomes ``len(class_names)`` once the names are known. Nested
    component sections (fields declared with ``metadata={"component": ...}``) are filled too.
    """
    if not dataclasses.is_dataclass(options) or isinstance(options, type):
        return options
    updates: dict[str, Any] = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if f.metadata.get("component") and dataclasses.is_dataclass(value):
            filled = fill_options(value, facts)  # a nested component section (e.g. a detector)
            if filled is not value:
                updates[f.name] = filled
            continue
        if not _is_set(value):
            value = facts.get(f.name)
            if _is_set(value):
                updates[f.name] = list(value) if isinstance(value, tuple) else value
    if updates:
        options = dataclasses.replace(options, **updates)
    names = getattr(options, "class_names", None)
    if getattr(options, "num_classes", None) == 0 and names:
        options = dataclasses.replace(options, num_classes=len(names))
    return options
