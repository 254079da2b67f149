"""Build registered models, datasets and evaluators from a validated experiment config.

Below the tasks and the engine alike (checkpoints rebuild models through it).

The config's dynamic sections (``model``, ``data.train``, ``data.val``, ``evaluator``) name a
registered component; its options dataclass instance is passed to the registered builder:
``model_builder(options)``, ``dataset_builder(options, root=, train=)``,
``evaluator_builder(options, dataset)``.

Dataset-derived facts a model needs reach it through one route
(:mod:`percepta.data.facts`): the datasets' ``meta`` fill the model options that are still at
their "from the data" defaults, then the model's registered ``resolve`` hook may complete them;
:func:`with_model_options` writes the result back into the config that checkpoints embed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf

from percepta.config import section_object
from percepta.data.facts import DataFacts, fill_options
from percepta.errors import PerceptaError
from percepta.registry import DATASETS, EVALUATORS, MODELS, import_all

__all__ = [
    "build_model",
    "build_model_from_options",
    "build_dataset",
    "build_evaluator",
    "model_options",
    "with_model_options",
    "DataFacts",
]


def model_options(cfg: DictConfig, facts: DataFacts | None = None) -> Any:
    """The model's options dataclass, completed from the data ``facts`` and the model's
    ``resolve`` hook (``cfg``: a full experiment config or just its ``model`` section)."""
    import_all()
    section = cfg.model if "model" in cfg else cfg
    opts = section_object(section)
    facts = facts or DataFacts()
    opts = fill_options(opts, facts)
    name = opts["name"] if isinstance(opts, dict) else opts.name
    resolve = MODELS.entry(str(name)).resolve
    if resolve is not None:
        opts = resolve(opts, facts)
    return opts


def with_model_options(cfg: DictConfig, options: Any) -> DictConfig:
    """``cfg`` with its ``model`` section replaced by the completed ``options`` (read-only)."""
    values = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options)
    merged = OmegaConf.merge(cfg, {"model": values})
    OmegaConf.set_readonly(merged, True)
    return merged


def build_model_from_options(options: Any) -> Any:
    """Build the registered model that ``options.name`` names."""
    import_all()
    name = options["name"] if isinstance(options, dict) else options.name
    return MODELS.get(str(name))(options)


def build_model(cfg: DictConfig, facts: DataFacts | None = None) -> Any:
    """Build the model of ``cfg`` (a full experiment config or just its ``model`` section)."""
    return build_model_from_options(model_options(cfg, facts))


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
    except (AttributeError, KeyError) as e:
        raise PerceptaError(
            f"evaluator {cfg.evaluator.name!r} cannot evaluate dataset {type(dataset).__name__}: {e}"
        ) from None
