"""Dataset facts -> model options (percepta.data.facts): the one documented route."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from percepta.data.facts import DataFacts, dataset_meta, fill_options


@dataclass
class Inner:
    name: str = "inner"
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)


@dataclass
class Outer:
    name: str = "outer"
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    predicate_names: list[str] = field(default_factory=lambda: ["given"])
    detector: Any = field(default=None, metadata={"component": "models"})


class _Data:
    def __init__(self, meta):
        self.meta = meta


def test_unset_fields_are_filled_train_first_and_set_ones_are_kept():
    facts = DataFacts.of(
        _Data({"class_names": ("a", "b"), "category_ids": [7, 9]}),
        _Data({"class_names": ["x"], "predicate_names": ["on"]}),
    )
    out = fill_options(Outer(), facts)
    assert out.class_names == ["a", "b"] and out.num_classes == 2  # train wins; count follows
    assert out.category_ids == [7, 9]
    assert out.predicate_names == ["given"]  # set in the options: kept
    assert facts.train_labelled and facts.has_train


def test_validation_facts_fill_what_training_data_lacks_and_nested_sections_too():
    facts = DataFacts.of(_Data({"labelled": False}), _Data({"class_names": ["x", "y", "z"]}))
    out = fill_options(Outer(detector=Inner()), facts)
    assert out.class_names == ["x", "y", "z"] and out.num_classes == 3
    assert out.detector.class_names == ["x", "y", "z"] and out.detector.num_classes == 3
    assert not facts.train_labelled


def test_datasets_without_meta_publish_nothing():
    assert dataset_meta(object()) == {} and dataset_meta(None) == {}
    opts = Outer()
    assert fill_options(opts, DataFacts.of(object(), None)) == opts
    assert not DataFacts.of(None, None).has_train
