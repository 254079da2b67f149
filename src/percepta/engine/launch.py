"""``percepta train`` and ``percepta eval``: config -> components -> Trainer.

Works the same under ``torchrun`` (``distributed.init_from_env`` picks up the process group);
only rank 0 prints the final table and writes files. Nothing here knows a task: the datasets'
facts complete the model options (:mod:`percepta.data.facts`), a model that needs set-up before
training (loading frozen teachers, say) does it in its optional ``prepare_training()``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from percepta import config as config_lib
from percepta.engine import distributed
from percepta.engine.build import (
    DataFacts,
    build_dataset,
    build_evaluator,
    build_model_from_options,
    model_options,
    with_model_options,
)
from percepta.errors import ConfigError, PerceptaError
from percepta.jsonable import to_jsonable

__all__ = ["prepare", "train", "evaluate_checkpoint", "cli_train", "cli_eval"]


def _check_val_classes(cfg: DictConfig, val_ds: Any) -> None:
    """Model labels index the validation set's classes: refuse a silent misalignment."""
    model_names = list(cfg.model.get("class_names") or []) if "model" in cfg else []
    val_names = list(
        (getattr(val_ds, "meta", None) or {}).get("class_names")
        or getattr(val_ds, "class_names", None)
        or []
    )
    if model_names and val_names and model_names != val_names:
        raise PerceptaError(
            f"the model's classes {model_names} differ from data.val's classes "
            f"{val_names} (names and order must match for evaluation)"
        )


def _check_run_folder(cfg: DictConfig) -> None:
    """A fresh run must not silently replace a trained run's checkpoints."""
    last = Path(cfg.output_dir) / cfg.name / "checkpoints" / "last.pt"
    if last.is_file() and not cfg.resume and not cfg.overwrite:
        raise PerceptaError(
            f"run {cfg.name!r} already has a checkpoint ({last}); add resume=true to continue "
            "it, choose another name=..., or overwrite=true to start it again from scratch"
        )


def prepare(cfg: DictConfig, for_training: bool = True) -> tuple[DictConfig, Any, Any, Any, Any]:
    """Build ``(cfg, model, train_dataset, val_dataset, evaluator)`` from a config.

    The returned config holds the completed model options (class names, category ids...), so
    the checkpoints that embed it rebuild the model without the data.
    """
    train_ds = build_dataset(cfg, "train") if for_training else None
    val_ds = build_dataset(cfg, "val")
    opts = model_options(cfg, DataFacts.of(train_ds, val_ds))
    cfg = with_model_options(cfg, opts)
    _check_val_classes(cfg, val_ds)
    model = build_model_from_options(opts)
    if cfg.init_weights:
        from percepta.engine.checkpoint import load_model_weights

        load_model_weights(model, cfg.init_weights, strict=False)
    if for_training and callable(getattr(model, "prepare_training", None)):
        model.prepare_training()
    evaluator = build_evaluator(cfg, val_ds)
    return cfg, model, train_ds, val_ds, evaluator


def train(cfg: DictConfig, hooks: list | None = None, **trainer_kwargs: Any) -> dict:
    """Train as configured; returns the final evaluation metrics ({} without evaluator)."""
    from percepta.engine.trainer import Trainer

    info = distributed.init_from_env(device=str(cfg.train.device))
    try:
        if cfg.data.get("train") is None:
            raise ConfigError(
                "the config has no data.train section: nothing to train on "
                "(give one of the yaml configs in configs/<task>/, or "
                "data.train.* overrides)"
            )
        _check_run_folder(cfg)
        torch.manual_seed(int(cfg.seed))
        cfg, model, train_ds, val_ds, evaluator = prepare(cfg)
        trainer = Trainer(
            cfg,
            model,
            train_ds,
            val_dataset=val_ds,
            evaluator=evaluator,
            hooks=hooks,
            **trainer_kwargs,
        )
        metrics = trainer.fit()
        if info.is_main:
            print(
                f"[percepta] run {cfg.name!r} finished: {trainer.run_dir} "
                f"(config.yaml, metrics.jsonl, checkpoints/last.pt"
                f"{', checkpoints/best.pt' if (trainer.checkpoint_dir / 'best.pt').is_file() else ''})",
                flush=True,
            )
        return metrics
    finally:
        distributed.cleanup()


def evaluate_checkpoint(path: str, overrides: list[str] | None = None) -> tuple[dict, Any]:
    """Evaluate a checkpoint on its config's validation split (with optional overrides)."""
    from percepta.engine.checkpoint import check_task, load_checkpoint, model_from_checkpoint
    from percepta.engine.trainer import Trainer

    ckpt = load_checkpoint(path)
    cfg = config_lib.from_dict(
        ckpt["config"], source=f"config embedded in {path}", overrides=overrides
    )
    check_task(ckpt, str(cfg.task), path)
    val_ds = build_dataset(cfg, "val")
    if val_ds is None:
        raise PerceptaError(
            f"the config of {path} has no data.val section; set data.val.* overrides"
        )
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
    if not path and cfg.data.get("train") is None:
        raise ConfigError(
            "no config given: `percepta train CONFIG.yaml [key=value ...]` "
            "(the shipped configs are in configs/<task>/<model>_<data>.yaml)"
        )
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
