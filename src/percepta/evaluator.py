"""The one evaluator protocol every task's evaluator follows (detectron2's ``DatasetEvaluator``
and mmengine's ``BaseMetric`` in torchmetrics form).

An evaluator is a :class:`torchmetrics.Metric`, so the same object runs in a notebook, in the
trainer and under DDP (torchmetrics syncs its states):

* ``update(preds, targets)``: one batch, ``preds`` as the model returns them in eval mode and
  ``targets`` as the dataset yields them (lists of dicts, :mod:`percepta.structures`);
* ``compute() -> dict``: flat or nested metrics, scalars as Python floats;
* ``primary_metric`` (class or instance attribute): the key of ``compute()`` that keeps
  ``best.pt``, with ``higher_is_better`` its direction (torchmetrics' own attribute);
* ``format_table(metrics) -> str``: a readable table of a ``compute()`` result.

Every evaluator builder registered in :data:`percepta.registry.EVALUATORS` has the signature
``builder(options, dataset) -> Evaluator``: ``options`` is the instance of the options dataclass
it registered (or ``None`` for the defaults), ``dataset`` the dataset it will evaluate (``None``
when it scores files instead); it reads what it needs from ``dataset.meta``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torchmetrics import Metric

__all__ = ["Evaluator", "primary_of"]


class Evaluator(Metric):
    """Base class of percepta's evaluators; see the module docstring for the protocol."""

    primary_metric: ClassVar[str | None] = None
    higher_is_better: ClassVar[bool | None] = True
    full_state_update: ClassVar[bool] = False

    def format_table(self, metrics: Mapping[str, Any]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement format_table(metrics)")


def primary_of(evaluator: Any) -> tuple[str | None, bool]:
    """``(primary metric key, higher is better)`` declared by ``evaluator``."""
    name = getattr(evaluator, "primary_metric", None)
    higher = getattr(evaluator, "higher_is_better", True)
    return (str(name) if name else None), (True if higher is None else bool(higher))
