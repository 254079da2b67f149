"""Build models, datasets and evaluators from a validated experiment config.

The config's dynamic sections (``model``, ``data.train``, ``data.val``, ``evaluator``) name a
registered component; its options dataclass instance is passed to the registered builder.
Dataset-derived facts a model needs (number of classes, class names) are filled in here when
the model section leaves them at their "from the data" defaults (``num_classes: 0``,
``class_names: []``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig

from percepta.config import section_object
from percepta.errors import PerceptaError
from percepta.registry import DATASETS, EVALUATORS, MODELS, import_all

__all__ = ["build_model", "build_dataset", "build_evaluator", "model_options"]


def model_options(cfg: DictConfig, dataset: Any | None = None) -> Any:
    """The model's options dataclass, with class facts taken from ``dataset`` when unset."""
    import_all()
    section = cfg.model if "model" in cfg else cfg
    opts = section_object(section)
    if dataset is not None and dataclasses.is_dataclass(opts):
        updates: dict[str, Any] = {}
        names = list(getattr(dataset, "class_names", []) or [])
        if hasattr(opts, "num_classes") and not opts.num_classes and names:
            updates["num_classes"] = len(names)
        if hasattr(opts, "class_names") and not opts.class_names and names:
            updates["class_names"] = names
        if updates:
            opts = dataclasses.replace(opts, **updates)
    if (dataclasses.is_dataclass(opts) and getattr(opts, "num_classes", None) == 0
            and getattr(opts, "class_names", None)):
        opts = dataclasses.replace(opts, num_classes=len(opts.class_names))
    return opts


def build_model(cfg: DictConfig, dataset: Any | None = None) -> Any:
    """Build the model of ``cfg`` (a full experiment config or just its ``model`` section)."""
    import_all()
    opts = model_options(cfg, dataset)
    name = opts.name if not isinstance(opts, dict) else opts["name"]
    return MODELS.get(name)(opts)


def build_dataset(cfg: DictConfig, split: str = "train") -> Any:
    """Build ``cfg.data.<split>`` (``None`` when that split is not configured)."""
    import_all()
    section = cfg.data.get(split)
    if section is None:
        return None
    opts = section_object(section)
    return DATASETS.get(section.name)(opts, root=str(cfg.data.root), train=(split == "train"))


def build_evaluator(cfg: DictConfig, dataset: Any) -> Any:
    """Build the evaluator for ``dataset`` (``None`` when there is no evaluator or dataset)."""
    import_all()
    if cfg.get("evaluator") is None or dataset is None:
        return None
    opts = section_object(cfg.evaluator)
    try:
        return EVALUATORS.get(cfg.evaluator.name)(opts, dataset)
    except AttributeError as e:
        raise PerceptaError(
            f"evaluator {cfg.evaluator.name!r} cannot evaluate dataset {type(dataset).__name__}: {e}"
        ) from None
