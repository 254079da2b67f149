"""``percepta train`` and ``percepta eval``: config -> components -> Trainer.

Works the same under ``torchrun`` (``distributed.init_from_env`` picks up the process group);
only rank 0 prints the final table and writes files.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from percepta import config as config_lib
from percepta.engine import distributed
from percepta.engine.build import build_dataset, build_evaluator, build_model, model_options
from percepta.errors import PerceptaError
from percepta.jsonable import to_jsonable

__all__ = ["prepare", "train", "evaluate_checkpoint", "cli_train", "cli_eval"]


def _with_model_facts(cfg: DictConfig, dataset: Any) -> DictConfig:
    """Write dataset-derived model options (class count, names) into the config itself, so the
    config embedded in checkpoints rebuilds the model without the data."""
    opts = model_options(cfg, dataset)
    updates = {k: getattr(opts, k) for k in ("num_classes", "class_names") if hasattr(opts, k)}
    if not updates:
        return cfg
    merged = OmegaConf.merge(cfg, {"model": updates})
    OmegaConf.set_readonly(merged, True)
    return merged


def _load_teachers(cfg: DictConfig, train_ds: Any, val_ds: Any) -> tuple[DictConfig, list]:
    """Load the ``distill`` teachers (before the model: a label-free student takes its class
    names from the validation data, else from the teachers) and check that the training data
    fits the distillation mode."""
    if not cfg.distill.teachers:
        return cfg, []
    from percepta.detection.distill import describe, load_teachers, student_class_names

    if cfg.task != "detection":
        raise PerceptaError(f"distill.teachers is for detection runs; this is a {cfg.task!r} run")
    teachers = load_teachers(config_lib.section_object(cfg.distill))
    labelled = train_ds is None or bool(getattr(train_ds, "class_names", None))
    if not labelled and not cfg.distill.without_labels:
        raise PerceptaError(f"data.train ({cfg.data.train.name}) has no labels: set "
                            "distill.without_labels=true to train on the teachers' outputs alone")
    if not labelled and not cfg.model.get("class_names"):
        names = list(getattr(val_ds, "class_names", None) or student_class_names(teachers))
        merged = OmegaConf.merge(cfg, {"model": {"class_names": names, "num_classes": len(names)}})
        OmegaConf.set_readonly(merged, True)
        cfg = merged
    if distributed.info().is_main:
        print(describe(teachers), flush=True)
    return cfg, teachers


def _check_val_classes(cfg: DictConfig, val_ds: Any) -> None:
    """Model labels index the validation set's classes: refuse a silent misalignment."""
    model_names = list(cfg.model.get("class_names") or []) if "model" in cfg else []
    val_names = list(getattr(val_ds, "class_names", None) or [])
    if model_names and val_names and model_names != val_names:
        raise PerceptaError(f"the model's classes {model_names} differ from data.val's classes "
                            f"{val_names} (names and order must match for evaluation)")


def prepare(cfg: DictConfig) -> tuple[DictConfig, Any, Any, Any, Any]:
    """Build ``(cfg, model, train_dataset, val_dataset, evaluator)`` from a config; with
    ``distill.teachers`` the teachers are loaded and attached to the model."""
    train_ds = build_dataset(cfg, "train")
    val_ds = build_dataset(cfg, "val")
    cfg, teachers = _load_teachers(cfg, train_ds, val_ds)
    cfg = _with_model_facts(cfg, train_ds if train_ds is not None else val_ds)
    _check_val_classes(cfg, val_ds)
    model = build_model(cfg)
    if cfg.init_weights:
        from percepta.engine.checkpoint import load_model_weights

        load_model_weights(model, cfg.init_weights, strict=False)
    if teachers:
        from percepta.detection.distill import attach_distiller

        attach_distiller(model, teachers, bool(cfg.distill.without_labels))
    evaluator = build_evaluator(cfg, val_ds)
    return cfg, model, train_ds, val_ds, evaluator


def train(cfg: DictConfig, hooks: list | None = None, **trainer_kwargs: Any) -> dict:
    """Train as configured; returns the final evaluation metrics ({} without evaluator)."""
    from percepta.engine.trainer import Trainer

    distributed.init_from_env(device=str(cfg.train.device))
    try:
        torch.manual_seed(int(cfg.seed))
        cfg, model, train_ds, val_ds, evaluator = prepare(cfg)
        if train_ds is None:
            raise PerceptaError("config has no data.train section: nothing to train on")
        trainer = Trainer(cfg, model, train_ds, val_dataset=val_ds, evaluator=evaluator,
                          hooks=hooks, **trainer_kwargs)
        return trainer.fit()
    finally:
        distributed.cleanup()


def evaluate_checkpoint(path: str, overrides: list[str] | None = None) -> tuple[dict, Any]:
    """Evaluate a checkpoint on its config's validation split (with optional overrides)."""
    from percepta.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from percepta.engine.trainer import Trainer

    ckpt = load_checkpoint(path)
    raw = OmegaConf.create(ckpt["config"])
    if overrides:
        raw = OmegaConf.merge(raw, OmegaConf.from_dotlist(list(overrides)))
    cfg = config_lib.from_dict(OmegaConf.to_container(raw), source=f"config embedded in {path}")
    val_ds = build_dataset(cfg, "val")
    if val_ds is None:
        raise PerceptaError(f"the config of {path} has no data.val section; set data.val.* overrides")
    model = model_from_checkpoint(ckpt, path, cfg)
    evaluator = build_evaluator(cfg, val_ds)
    if evaluator is None:
        raise PerceptaError("the config has no evaluator section")
    trainer = Trainer(cfg, model, None, val_dataset=val_ds, evaluator=evaluator)
    return trainer.evaluate(), evaluator


def cli_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    path = args.config
    if path and "=" in path and not path.endswith((".yaml", ".yml")):
        overrides.insert(0, path)  # `percepta train key=value ...` without a yaml
        path = None
    cfg = config_lib.load(path, overrides)
    train(cfg)
    return 0


def cli_eval(args: argparse.Namespace) -> int:
    metrics, evaluator = evaluate_checkpoint(args.checkpoint, args.overrides)
    if args.json:
        print(json.dumps(to_jsonable(metrics)))
    elif hasattr(evaluator, "format_table"):
        print(evaluator.format_table(metrics))
    else:
        print(json.dumps(to_jsonable(metrics), indent=2))
    return 0
