"""The engine's builders: re-exported from :mod:`percepta.components` (task-neutral)."""

from percepta.components import (  # noqa: F401  (re-exported)
    DataFacts,
    build_dataset,
    build_evaluator,
    build_model,
    build_model_from_options,
    model_options,
    with_model_options,
)

__all__ = [
    "build_model",
    "build_model_from_options",
    "build_dataset",
    "build_evaluator",
    "model_options",
    "with_model_options",
    "DataFacts",
]
