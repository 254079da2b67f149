"""The task-agnostic training loop: AMP, clipping, EMA, DDP, evaluation, checkpoints, logging.

Iteration-based (``train.max_iters``). Each iteration draws this rank's part of one global batch
(:mod:`percepta.data.loader`), runs ``model(images, targets) -> {loss terms}`` under
``torch.autocast`` (bf16 on CPU; fp16 with ``torch.amp.GradScaler`` or bf16 on CUDA), sums
the ``loss*`` terms (or calls ``loss_transform``), and steps the optimizer and the per-iteration
``LambdaLR`` schedule. A non-finite loss skips the update (still an iteration, so the schedule
and the data order stay aligned with the iteration count) and stops the run with
:class:`TrainingError` after ``train.max_nonfinite`` such iterations in a row; the last
checkpoint is left untouched. Under DDP the finite/non-finite decision is agreed by all ranks.

Hooks are plain objects with any of ``before_train(trainer)``, ``after_step(trainer)``,
``after_eval(trainer, metrics)``, ``after_train(trainer)``. Only rank 0 writes files.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from percepta import config as pconfig
from percepta.data.loader import build_eval_loader, build_train_loader
from percepta.engine import checkpoint as ckpt_io
from percepta.engine import distributed as pdist
from percepta.engine.distributed import move_to_device, resolve_device, set_seed
from percepta.engine.logging import LossWindow, MetricsLogger, console, scalar_items, truncate_jsonl
from percepta.engine.optim import build_optimizer, build_scheduler
from percepta.errors import CheckpointError, DataError, PerceptaError
from percepta.losses.balance import FixedValueBalance
from percepta.structures import collate

__all__ = ["Trainer", "TrainingError", "set_seed", "resolve_device", "move_to_device",
           "sum_losses"]


class TrainingError(PerceptaError, RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the message says where and why."""


def sum_losses(loss_dict: dict[str, Any], trainer: Trainer | None = None) -> torch.Tensor:
    """The default ``loss_transform``: the sum of every term whose key starts with ``loss``."""
    terms = [v for k, v in loss_dict.items() if str(k).startswith("loss")]
    if not terms:
        raise TrainingError("in train mode the model must return a dict with at least one "
                            f"'loss*' term; it returned the keys {sorted(loss_dict)}")
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _amp_dtype(tc: Any, device: torch.device) -> torch.dtype | None:
    if not tc.amp:
        return None
    name = str(tc.amp_dtype).lower()
    if name == "auto":
        return torch.bfloat16 if device.type == "cpu" else torch.float16
    if name in ("bf16", "bfloat16"):
        return torch.bfloat16
    if name in ("fp16", "float16", "half"):
        if device.type == "cpu":
            raise pconfig.ConfigError("train.amp_dtype=fp16 is for CUDA; on CPU use bf16 (or auto)")
        return torch.float16
    raise pconfig.ConfigError(f"train.amp_dtype={tc.amp_dtype!r}: use auto, bf16 or fp16")


class Trainer:
    """Train ``model`` on ``train_dataset`` as ``cfg.train`` says; see the module docstring.

    Args:
        cfg: the full experiment config (:class:`percepta.config.ExperimentConfig`).
        model: train mode ``model(images, targets) -> dict[str, Tensor]``; eval mode
            ``model(images) -> list[dict]``.
        train_dataset, val_dataset: map-style datasets of ``(image, target)``.
        evaluator: torchmetrics-like ``update(preds, targets)``, ``compute()``, ``reset()``;
            optional ``primary_metric`` (higher is better; keeps ``best.pt``) and
            ``format_table(metrics) -> str``.
        run_dir: defaults to ``<cfg.output_dir>/<cfg.name>``.
        collate_fn: DataLoader collate (default :func:`percepta.structures.collate`).
        hooks: objects with optional ``before_train``/``after_step``/``after_eval``/``after_train``.
        loss_transform: ``(loss_dict, trainer) -> total loss``; default :func:`sum_losses`, or
            :class:`~percepta.losses.balance.FixedValueBalance` with ``train.loss_balance``.
            With a transform the logs keep the raw terms and their sum as ``total_loss`` and add
            the optimised total as ``optimized_loss``.
    """

    def __init__(self, cfg: DictConfig, model: nn.Module, train_dataset: Dataset,
                 val_dataset: Dataset | None = None, evaluator: Any | None = None,
                 run_dir: str | Path | None = None,
                 collate_fn: Callable[[list[Any]], Any] = collate, hooks: list | None = None,
                 loss_transform: Callable[[dict[str, Any], Trainer], torch.Tensor] | None = None
                 ) -> None:
        self.cfg = cfg
        tc = self.tc = cfg.train
        self.dist = pdist.info()
        self.rank, self.world_size = self.dist.rank, self.dist.world_size
        self.is_main = self.dist.is_main
        if int(tc.batch_size) <= 0 or int(tc.batch_size) % self.world_size != 0:
            raise pconfig.ConfigError(
                f"train.batch_size={tc.batch_size} is the global batch and must be a positive "
                f"multiple of the number of processes ({self.world_size})")
        self.batch_size = int(tc.batch_size)
        self.local_batch_size = self.batch_size // self.world_size
        self.max_iters = int(tc.max_iters)
        self.device = resolve_device(str(tc.device), self.dist.local_rank)
        self.run_dir = Path(run_dir) if run_dir is not None else Path(cfg.output_dir) / cfg.name
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.train_dataset, self.val_dataset, self.evaluator = train_dataset, val_dataset, evaluator
        self.collate_fn = collate_fn
        self.hooks = list(hooks or [])
        if loss_transform is None and tc.loss_balance.enabled:
            loss_transform = FixedValueBalance.from_config(tc.loss_balance)
        self.loss_transform = loss_transform or sum_losses
        self.batches_per_epoch = 1  # no training data: an evaluation-only trainer
        if train_dataset is not None:
            n = len(train_dataset)  # type: ignore[arg-type]
            if n < self.batch_size:
                raise DataError(f"training dataset {type(train_dataset).__name__} has {n} "
                                f"samples, fewer than one global batch "
                                f"(train.batch_size={self.batch_size})")
            self.batches_per_epoch = n // self.batch_size
        if tc.deterministic:  # (warn_only: ops without a deterministic kernel warn, not fail)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True

        self.model = model.to(self.device)
        self.optimizer = build_optimizer(self.model, tc.optimizer)
        self.scheduler = build_scheduler(self.optimizer, tc.scheduler, self.max_iters)
        self.amp_dtype = _amp_dtype(tc, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.ema: AveragedModel | None = None
        if tc.ema:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay),
                                     use_buffers=True)
        self.train_model: nn.Module = self.model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(
                self.model, device_ids=ids,
                find_unused_parameters=bool(tc.get("find_unused_parameters", False)))

        self.iteration = 0
        self.epoch = 0
        self.nonfinite_count = 0
        self.nonfinite_in_row = 0
        primary = getattr(evaluator, "primary_metric", None) if evaluator is not None else None
        self.best: dict[str, Any] = {"metric": primary, "value": None, "iteration": None}
        self.last_loss_dict: dict[str, Any] = {}
        self.step_lr = self.lr
        self.last_metrics: dict[str, Any] = {}
        self.logger: MetricsLogger | None = None
        self._started = False
        self._resumed = False
        self._t0 = time.perf_counter()
        self.window = LossWindow()

    # ---------------------------------------------------------------- properties
    @property
    def eval_model(self) -> nn.Module:
        """The model evaluation uses: the EMA model when enabled, else the trained one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ---------------------------------------------------------------- public API
    def fit(self) -> dict[str, Any]:
        """Train to ``train.max_iters`` and return the final evaluation metrics (``{}`` without)."""
        if self.train_dataset is None:
            raise TrainingError("no training dataset was given to the Trainer: nothing to train")
        self.resume_or_load()
        if self.is_main:
            pconfig.save(self.cfg, self.run_dir / "config.yaml")
            log = self.run_dir / "metrics.jsonl"
            if self._resumed:
                truncate_jsonl(log, self.iteration)
            elif log.is_file() and log.stat().st_size:  # a fresh run in an old run folder
                log.replace(log.with_name("metrics.prev.jsonl"))
                console(f"[percepta] note: {log} of an earlier run moved to metrics.prev.jsonl")
        self.logger = MetricsLogger(self.run_dir, enabled=self.is_main,
                                    tensorboard=bool(self.tc.tensorboard),
                                    purge_step=self.iteration if self._resumed else None)
        self._t0 = time.perf_counter()
        metrics: dict[str, Any] = {}
        try:
            self._call_hooks("before_train")
            self._train_loop()
            if self._can_evaluate():
                metrics = self._evaluate_and_track()
            self.save_checkpoint("last")
            self._call_hooks("after_train")
        finally:
            self.logger.close()
        return metrics

    def evaluate(self, model: nn.Module | None = None) -> dict[str, Any]:
        """Run the evaluator over this rank's shard of the validation set and return ``compute()``.

        Uses the EMA model when enabled (or ``model`` when given), in fp32, without gradients;
        logs the scalars (rank 0, during ``fit``) and calls the ``after_eval`` hooks.
        """
        if not self._can_evaluate():
            return {}
        model = model if model is not None else self.eval_model
        ev = self.evaluator
        if isinstance(ev, nn.Module):
            ev.to(self.device)
        ev.reset()
        loader = build_eval_loader(self.val_dataset, self.local_batch_size, rank=self.rank,
                                   world_size=self.world_size, num_workers=int(self.tc.num_workers),
                                   collate_fn=self.collate_fn,
                                   pin_memory=self.device.type == "cuda")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for images, targets in tqdm(loader, desc="eval", leave=False, dynamic_ncols=True,
                                            disable=not (self.tc.progress and self.is_main)):
                    images = move_to_device(images, self.device, non_blocking=True)
                    targets = move_to_device(targets, self.device, non_blocking=True)
                    ev.update(model(images), targets)
            metrics = ev.compute()
        finally:
            model.train(was_training)
        metrics = dict(metrics) if metrics is not None else {}
        self.last_metrics = metrics
        self._report_eval(metrics)
        self._call_hooks("after_eval", metrics)
        return metrics

    def resume_or_load(self) -> None:
        """Resume from ``<run_dir>/checkpoints/last.pt`` when ``cfg.resume``; else seed the RNGs.

        (``cfg.init_weights`` is applied by the launcher when it builds the model.)
        """
        if self._started:
            return
        self._started = True
        if self.cfg.resume:
            path = self.checkpoint_dir / "last.pt"
            if path.is_file():
                self.load_state(ckpt_io.load_checkpoint(path, map_location=self.device), path)
                self._resumed = True
                if self.is_main:
                    console(f"[percepta] resumed from {path} at iteration {self.iteration}")
                return
            if self.is_main:
                console(f"[percepta] resume=true but there is no checkpoint at {path}; "
                        "starting from scratch")
        set_seed(int(self.cfg.seed) + self.rank)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint content (collective under DDP: every rank must call it)."""
        import percepta

        rng = ckpt_io.capture_rng()
        per_rank = pdist.all_gather_object(rng) if self.world_size > 1 else None
        return {
            "format": ckpt_io.FORMAT, "version": ckpt_io.VERSION,
            "percepta_version": percepta.__version__, "task": str(self.cfg.task),
            "config": pconfig.to_dict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "iteration": self.iteration, "epoch": self.epoch,
            "rng": rng, "rng_per_rank": per_rank, "world_size": self.world_size,
            "sampler": {"seed": int(self.cfg.seed), "global_batch_size": self.batch_size,
                        "batches_per_epoch": self.batches_per_epoch},
            "nonfinite_count": self.nonfinite_count, "nonfinite_in_row": self.nonfinite_in_row,
            "best": dict(self.best),
        }

    def save_checkpoint(self, name: str = "last") -> Path:
        """Write ``checkpoints/<name>.pt`` atomically on rank 0 (all ranks must call it)."""
        state = self.state_dict()
        path = self.checkpoint_dir / f"{name}.pt"
        error: CheckpointError | None = None
        if self.is_main:
            try:
                ckpt_io.save_checkpoint(state, path)
            except CheckpointError as e:
                error = e
        if pdist.all_reduce_min(0 if error else 1) == 0:
            if error is not None:
                raise error
            raise TrainingError(f"rank 0 could not write checkpoint {path}; stopping")
        return path

    def load_state(self, ckpt: dict[str, Any], source: str | Path = "checkpoint") -> None:
        """Restore everything :meth:`state_dict` saved (exact resume)."""
        ckpt_io.check_task(ckpt, str(self.cfg.task), source)
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            if self.scaler.is_enabled() and ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            if self.ema is not None:
                if ckpt.get("ema"):
                    self.ema.load_state_dict(ckpt["ema"])
                elif self.is_main:
                    console(f"[percepta] {source} has no EMA weights; the EMA starts afresh")
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"cannot resume from {source}: it does not fit this model or "
                                  f"optimizer ({str(e).splitlines()[0]})") from None
        self.iteration = int(ckpt["iteration"])
        self.epoch = int(ckpt.get("epoch", self.iteration // self.batches_per_epoch))
        self.nonfinite_count = int(ckpt.get("nonfinite_count", 0))
        self.nonfinite_in_row = int(ckpt.get("nonfinite_in_row", 0))
        best = ckpt.get("best") or {}
        if best.get("metric") == self.best["metric"]:  # another primary metric: start afresh
            self.best.update(value=best.get("value"), iteration=best.get("iteration"))
        per_rank = ckpt.get("rng_per_rank")
        if per_rank and len(per_rank) == self.world_size:
            ckpt_io.restore_rng(per_rank[self.rank])
        elif self.rank == 0 and ckpt.get("rng"):
            ckpt_io.restore_rng(ckpt["rng"])
        else:
            set_seed(int(self.cfg.seed) + self.rank + 1_000_003 * self.iteration)
        sampler = ckpt.get("sampler") or {}
        if self.is_main and (sampler.get("global_batch_size") not in (None, self.batch_size)
                             or sampler.get("seed") not in (None, int(self.cfg.seed))):
            console(f"[percepta] note: batch size or seed differ from {source}; the data order "
                    "after resuming differs from an uninterrupted run")

    # ---------------------------------------------------------------- the loop
    def _train_loop(self) -> None:
        tc = self.tc
        loader = build_train_loader(
            self.train_dataset, self.batch_size, seed=int(self.cfg.seed), rank=self.rank,
            world_size=self.world_size, start_iter=self.iteration,
            num_workers=int(tc.num_workers), collate_fn=self.collate_fn,
            pin_memory=self.device.type == "cuda")
        self.train_model.train()
        bar = tqdm(total=self.max_iters, initial=self.iteration, desc=f"train {self.cfg.name}",
                   unit="it", dynamic_ncols=True, disable=not (tc.progress and self.is_main))
        self.window.reset()
        data_iter = iter(loader) if self.iteration < self.max_iters else None
        try:
            while self.iteration < self.max_iters:
                images, targets = next(data_iter)  # type: ignore[arg-type]
                total = self.run_step(images, targets)
                self.iteration += 1
                self.epoch = self.iteration // self.batches_per_epoch
                bar.update(1)
                if math.isfinite(total):
                    bar.set_postfix(loss=f"{total:.4f}", refresh=False)
                it = self.iteration
                if tc.log_period > 0 and (it % tc.log_period == 0 or it == self.max_iters):
                    scalars = self._log_window()
                    bar.set_postfix(loss=f"{scalars.get('total_loss', float('nan')):.4f}",
                                    img_s=f"{scalars['images_per_s']:.1f}", refresh=False)
                self._call_hooks("after_step")
                if tc.eval_period > 0 and it % tc.eval_period == 0 and it < self.max_iters \
                        and self._can_evaluate():
                    self._evaluate_and_track()
                    self.train_model.train()
                if tc.checkpoint_period > 0 and it % tc.checkpoint_period == 0 \
                        and it < self.max_iters:
                    self.save_checkpoint("last")
        finally:
            bar.close()
            del data_iter

    def run_step(self, images: Any, targets: Any) -> float:
        """One iteration: forward, (skip if non-finite) backward, clip, step, EMA, lr schedule.

        Returns the total loss as a float (``nan``/``inf`` for a skipped step).
        """
        tc = self.tc
        images = move_to_device(images, self.device, non_blocking=True)
        targets = move_to_device(targets, self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            loss_dict = self.train_model(images, targets)
            if not isinstance(loss_dict, dict):
                raise TrainingError("in train mode the model must return a dict of losses, "
                                    f"not {type(loss_dict).__name__}")
            total = self.loss_transform(loss_dict, self)
        if not isinstance(total, torch.Tensor) or total.numel() != 1:
            raise TrainingError("the total loss must be a scalar tensor; got "
                                f"{getattr(total, 'shape', type(total).__name__)} from "
                                f"{getattr(self.loss_transform, '__name__', 'loss_transform')}")
        self.last_loss_dict = loss_dict
        total_f = float(total.detach().float())
        finite = math.isfinite(total_f)
        if self.world_size > 1:
            finite = pdist.all_reduce_min(int(finite)) == 1
        grad_norm = None
        if finite:
            self.scaler.scale(total).backward()
            if tc.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                           float(tc.grad_clip))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.nonfinite_in_row = 0
            if self.loss_transform is not sum_losses:
                # log the raw terms and their sum (a term the transform left out for being
                # non-finite is not logged) plus the total that was optimised
                loss_dict = {k: v for k, v in loss_dict.items()
                             if not (isinstance(v, torch.Tensor) and v.is_floating_point()
                                     and not bool(torch.isfinite(v.detach()).all()))}
                loss_dict["optimized_loss"] = total.detach()
                total = sum_losses(loss_dict)
            self.window.add({**loss_dict, "total_loss": total,
                             **({"grad_norm": grad_norm} if grad_norm is not None else {})})
        else:
            self._handle_nonfinite(loss_dict, total)
        self.optimizer.zero_grad(set_to_none=True)
        self.step_lr = self.lr  # the lr this iteration used (logged), before the schedule moves
        with warnings.catch_warnings():  # a skipped first step makes LambdaLR warn; harmless
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*optimizer.step")
            self.scheduler.step()
        self.window.count(len(images))
        return total_f if finite else float("nan")

    def _handle_nonfinite(self, loss_dict: dict[str, Any], total: torch.Tensor) -> None:
        self.nonfinite_count += 1
        self.nonfinite_in_row += 1
        bad = [k for k, v in loss_dict.items()
               if isinstance(v, torch.Tensor) and v.is_floating_point()
               and not bool(torch.isfinite(v.detach()).all())]
        if not bad:
            bad = ["total"] if not bool(torch.isfinite(total.detach()).all()) else []
        if self.world_size > 1:
            bad = sorted({k for terms in pdist.all_gather_object(bad) for k in terms})
        it = self.iteration + 1
        terms = ", ".join(bad) or "(on another rank)"
        if self.logger is not None:
            self.logger.write({"iteration": it, "nonfinite": self.nonfinite_count,
                               "nonfinite_terms": bad, "skipped": True})
        limit = max(1, int(self.tc.max_nonfinite))
        if self.is_main:
            console(f"[percepta] iteration {it}: non-finite loss ({terms}); step skipped "
                    f"({self.nonfinite_in_row} in a row, limit {limit})")
        if self.nonfinite_in_row >= limit:
            last = self.checkpoint_dir / "last.pt"
            kept = (f"the last checkpoint {last} is unchanged" if last.is_file()
                    else "no checkpoint was written")
            raise TrainingError(
                f"training stopped at iteration {it}: the loss was not finite for "
                f"{self.nonfinite_in_row} iterations in a row (train.max_nonfinite={limit}); "
                f"non-finite terms: {terms}; {kept}. Lower train.optimizer.lr, set "
                "train.grad_clip, or check the data.")

    # ---------------------------------------------------------------- logging helpers
    def _log_window(self) -> dict[str, float]:
        w = self.window
        scalars = w.means()
        scalars.update(lr=self.step_lr, time=time.perf_counter() - self._t0,
                       iter_time=w.elapsed() / max(w.iters, 1),
                       images_per_s=w.images * self.world_size / w.elapsed())
        if self.scaler.is_enabled():
            scalars["amp_scale"] = float(self.scaler.get_scale())
        if self.logger is not None:
            self.logger.log_train(self.iteration, scalars, epoch=self.epoch,
                                  nonfinite=self.nonfinite_count)
        if self.is_main and not self.tc.progress:
            console(f"iter {self.iteration}/{self.max_iters}  loss "
                    f"{scalars.get('total_loss', float('nan')):.4f}  lr {self.step_lr:.3g}  "
                    f"{scalars['images_per_s']:.1f} img/s")
        w.reset()
        return scalars

    def _report_eval(self, metrics: dict[str, Any]) -> None:
        if self.logger is not None:
            self.logger.log_eval(self.iteration, metrics, epoch=self.epoch,
                                 time=time.perf_counter() - self._t0)
            self.logger.write_eval_file(self.iteration, metrics)
        if not self.is_main or self.logger is None:  # outside fit the caller prints
            return
        fmt = getattr(self.evaluator, "format_table", None)
        if callable(fmt):
            console(f"evaluation at iteration {self.iteration}:\n{fmt(metrics)}")
        else:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in list(scalar_items(metrics).items())[:12])
            console(f"evaluation at iteration {self.iteration}: {shown}")

    # ---------------------------------------------------------------- misc
    def _can_evaluate(self) -> bool:
        return self.evaluator is not None and self.val_dataset is not None

    def _evaluate_and_track(self) -> dict[str, Any]:
        """Evaluate; keep ``best.pt`` when the evaluator's ``primary_metric`` improved."""
        metrics = self.evaluate()
        name = self.best.get("metric")
        if not name:
            return metrics
        value = scalar_items(metrics).get(name)
        if value is None and self.is_main:
            console(f"[percepta] primary metric {name!r} missing from the evaluation; best.pt "
                    f"not updated (metrics: {sorted(scalar_items(metrics))})")
        improved = value is not None and math.isfinite(value) and (
            self.best["value"] is None or value > self.best["value"])
        # rank 0 decides, so that every rank enters the (collective) save together
        improved, value = pdist.broadcast_object((improved, value))
        if improved:
            self.best.update(value=float(value), iteration=self.iteration)
            self.save_checkpoint("best")
        return metrics

    def _call_hooks(self, name: str, *args: Any) -> None:
        for hook in self.hooks:
            fn = getattr(hook, name, None)
            if callable(fn):
                fn(self, *args)
