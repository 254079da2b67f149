"""The task-agnostic training loop: the step, its state, and the hooks around it.

Iteration-based (``train.max_iters``). Each iteration draws this rank's part of one global batch
(:mod:`percepta.data.loader`), runs ``model(images, targets) -> {loss terms}`` under
``torch.autocast`` (bf16 on CPU; fp16 with ``torch.amp.GradScaler`` or bf16 on CUDA), sums the
``loss*`` terms (or calls ``loss_transform``), and steps the optimizer and the per-iteration
``LambdaLR`` schedule. A non-finite loss skips the update (still an iteration, so the schedule
and the data order stay aligned with the iteration count); under DDP all ranks agree on it.

Everything else is a hook (:mod:`percepta.engine.hooks`): logging, the non-finite guard, EMA,
evaluation with ``best.pt``, periodic checkpoints. SIGINT/SIGTERM stop the loop after the
current step, write ``last.pt`` atomically and say how to resume. The trainer knows no task:
evaluation hands a model what it declares it needs at inference
(:func:`percepta.inference.run_model`).
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
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from percepta import config as pconfig
from percepta.data.loader import build_eval_loader, build_train_loader
from percepta.engine import checkpoint as ckpt_io
from percepta.engine import distributed as pdist
from percepta.engine.distributed import move_to_device, resolve_device, set_seed
from percepta.engine.hooks import (
    EMAHook,
    EvalHook,
    LoggingHook,
    NonFiniteGuard,
    PeriodicCheckpointer,
    TrainingError,
)
from percepta.engine.interrupts import StopOnSignals, TrainingInterrupted
from percepta.engine.logging import LossWindow, console
from percepta.engine.optim import amp_dtype, build_optimizer, build_scheduler
from percepta.engine.sync_bn import convert_sync_batchnorm
from percepta.errors import CheckpointError, ConfigError, DataError
from percepta.evaluator import primary_of
from percepta.inference import run_model
from percepta.losses.balance import FixedValueBalance
from percepta.structures import collate

__all__ = [
    "Trainer",
    "TrainingError",
    "TrainingInterrupted",
    "set_seed",
    "resolve_device",
    "move_to_device",
    "sum_losses",
]


def sum_losses(loss_dict: dict[str, Any], trainer: Trainer | None = None) -> torch.Tensor:
    """The default ``loss_transform``: the sum of every term whose key starts with ``loss``."""
    terms = [v for k, v in loss_dict.items() if str(k).startswith("loss")]
    if not terms:
        raise TrainingError(
            "in train mode the model must return a dict with at least one "
            f"'loss*' term; it returned the keys {sorted(loss_dict)}"
        )
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _nonfinite_keys(loss_dict: dict[str, Any]) -> list[str]:
    return [
        k
        for k, v in loss_dict.items()
        if isinstance(v, torch.Tensor)
        and v.is_floating_point()
        and not bool(torch.isfinite(v.detach()).all())
    ]


class Trainer:
    """Train ``model`` on ``train_dataset`` as ``cfg.train`` says; see the module docstring.

    Args:
        cfg: the full experiment config (:class:`percepta.config.ExperimentConfig`).
        model: train mode ``model(images, targets) -> dict[str, Tensor]``; eval mode
            ``model(images[, inputs]) -> list[dict]`` (:func:`percepta.inference.run_model`).
        train_dataset, val_dataset: map-style datasets of ``(image, target)``.
        evaluator: a :class:`percepta.evaluator.Evaluator` (its ``primary_metric`` and
            ``higher_is_better`` keep ``best.pt``).
        run_dir: defaults to ``<cfg.output_dir>/<cfg.name>``.
        collate_fn: DataLoader collate (default :func:`percepta.structures.collate`).
        hooks: extra hooks (:class:`percepta.engine.hooks.HookBase` or duck-typed objects), run
            after the built-in logging/guard/EMA hooks and before evaluation and checkpointing.
        loss_transform: ``(loss_dict, trainer) -> total loss``; default :func:`sum_losses`, or
            :class:`~percepta.losses.balance.FixedValueBalance` with ``train.loss_balance``
            (computed from the loss values averaged over all ranks, so 2 processes equal 1).
            With a transform the logs keep the raw terms and their sum as ``total_loss`` and
            add the optimised total as ``optimized_loss``.
    """

    def __init__(
        self,
        cfg: DictConfig,
        model: nn.Module,
        train_dataset: Dataset | None,
        val_dataset: Dataset | None = None,
        evaluator: Any | None = None,
        run_dir: str | Path | None = None,
        collate_fn: Callable[[list[Any]], Any] = collate,
        hooks: list | None = None,
        loss_transform: Callable[[dict[str, Any], Trainer], torch.Tensor] | None = None,
    ) -> None:
        self.cfg = cfg
        tc = self.tc = cfg.train
        self.dist = pdist.info()
        self.rank, self.world_size = self.dist.rank, self.dist.world_size
        self.is_main = self.dist.is_main
        if int(tc.batch_size) <= 0 or int(tc.batch_size) % self.world_size != 0:
            raise ConfigError(
                f"train.batch_size={tc.batch_size} is the global batch and must be a positive "
                f"multiple of the number of processes ({self.world_size})"
            )
        self.batch_size = int(tc.batch_size)
        self.local_batch_size = self.batch_size // self.world_size
        self.max_iters = int(tc.max_iters)
        self.device = resolve_device(str(tc.device), self.dist.local_rank)
        self.run_dir = Path(run_dir) if run_dir is not None else Path(cfg.output_dir) / cfg.name
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.train_dataset, self.val_dataset, self.evaluator = train_dataset, val_dataset, evaluator
        self.collate_fn = collate_fn
        if loss_transform is None and tc.loss_balance.enabled:
            loss_transform = FixedValueBalance.from_config(
                tc.loss_balance, reduce=pdist.all_reduce_mean if self.world_size > 1 else None
            )
        self.loss_transform = loss_transform or sum_losses
        self.batches_per_epoch = 1  # no training data: an evaluation-only trainer
        if train_dataset is not None:
            n = len(train_dataset)  # type: ignore[arg-type]
            if n < self.batch_size:
                raise DataError(
                    f"training dataset {type(train_dataset).__name__} has {n} "
                    f"samples, fewer than one global batch "
                    f"(train.batch_size={self.batch_size})"
                )
            self.batches_per_epoch = n // self.batch_size
        if tc.deterministic:  # (warn_only: ops without a deterministic kernel warn, not fail)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True

        self.model = model.to(self.device)
        if self.world_size > 1 and bool(tc.get("sync_bn", False)):
            self.model = convert_sync_batchnorm(self.model)
        self.optimizer = build_optimizer(self.model, tc.optimizer)
        self.scheduler = build_scheduler(self.optimizer, tc.scheduler, self.max_iters)
        self.amp_dtype = amp_dtype(tc, self.device)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.train_model: nn.Module = self.model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(
                self.model,
                device_ids=ids,
                find_unused_parameters=bool(tc.get("find_unused_parameters", False)),
            )

        # loop state (checkpointed)
        self.iteration = 0
        self.epoch = 0
        primary, higher = primary_of(evaluator) if evaluator is not None else (None, True)
        self.best: dict[str, Any] = {
            "metric": primary,
            "higher_is_better": higher,
            "value": None,
            "iteration": None,
        }
        # per-step state the hooks read
        self.step_finite = True
        self.step_applied = False
        self.nonfinite_terms: list[str] = []
        self.last_loss_dict: dict[str, Any] = {}
        self.step_lr = self.lr
        self.last_metrics: dict[str, Any] = {}
        self.final_metrics: dict[str, Any] = {}
        self.logger = None
        self.window = LossWindow()
        self.t0 = time.perf_counter()
        self.resumed = False
        self.data_offset = 0  # sampler batches dropped whole (all samples unreadable) before
        self._loader: Any = None
        self._started = False
        self.signals = StopOnSignals(announce=self.is_main)

        self.guard = NonFiniteGuard(int(tc.max_nonfinite))
        self.ema_hook = EMAHook(self.model, tc.ema_decay) if tc.ema else None
        self.hooks: list[Any] = [
            LoggingHook(),
            self.guard,
            *([self.ema_hook] if self.ema_hook else []),
            *(hooks or []),
            EvalHook(),
            PeriodicCheckpointer(),
        ]

    # ---------------------------------------------------------------- properties
    @property
    def ema(self) -> Any:
        return self.ema_hook.ema if self.ema_hook is not None else None

    @property
    def eval_model(self) -> nn.Module:
        """The model evaluation uses: the EMA model when enabled, else the trained one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def nonfinite_count(self) -> int:
        return self.guard.count

    @property
    def nonfinite_in_row(self) -> int:
        return self.guard.in_row

    def can_evaluate(self) -> bool:
        return self.evaluator is not None and self.val_dataset is not None

    # ---------------------------------------------------------------- public API
    def fit(self) -> dict[str, Any]:
        """Train to ``train.max_iters``; returns the final evaluation metrics (``{}`` without)."""
        if self.train_dataset is None:
            raise TrainingError("no training dataset was given to the Trainer: nothing to train")
        self.resume_or_load()
        if self.is_main:
            pconfig.save(self.cfg, self.run_dir / "config.yaml")
        self.t0 = time.perf_counter()
        with self.signals:
            try:
                self._call_hooks("before_train")
                self._train_loop()
                if self.signals.signum is None:
                    if self.can_evaluate():
                        self.final_metrics = EvalHook.evaluate_and_track(self)
                    self.save_checkpoint("last")
                    self._call_hooks("after_train")
            finally:
                LoggingHook.close(self)
        if self.signals.signum is not None:
            path = self.save_checkpoint("last")
            raise self.signals.error(
                self.iteration, self.max_iters, path, str(self.cfg.name), str(self.cfg.output_dir)
            )
        return self.final_metrics

    def evaluate(self, model: nn.Module | None = None) -> dict[str, Any]:
        """Run the evaluator over this rank's shard of the validation set; return ``compute()``.

        Uses the EMA model when enabled (or ``model`` when given), without gradients, handing it
        what it declares it needs at inference; calls the ``after_eval`` hooks.
        """
        if not self.can_evaluate():
            return {}
        model = model if model is not None else self.eval_model
        ev = self.evaluator
        if isinstance(ev, nn.Module):
            ev.to(self.device)
        ev.reset()
        loader = build_eval_loader(
            self.val_dataset,
            self.local_batch_size,
            rank=self.rank,
            world_size=self.world_size,
            num_workers=int(self.tc.num_workers),
            collate_fn=self.collate_fn,
            pin_memory=self.device.type == "cuda",
        )
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for images, targets in tqdm(
                    loader,
                    desc="eval",
                    leave=False,
                    dynamic_ncols=True,
                    disable=not (self.tc.progress and self.is_main),
                ):
                    images = move_to_device(images, self.device, non_blocking=True)
                    targets = move_to_device(targets, self.device, non_blocking=True)
                    ev.update(run_model(model, images, targets), targets)
            metrics = ev.compute()
        finally:
            model.train(was_training)
        metrics = dict(metrics) if metrics is not None else {}
        self.last_metrics = metrics
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
                self.resumed = True
                if self.is_main:
                    console(f"[percepta] resumed from {path} at iteration {self.iteration}")
                return
            if self.is_main:
                console(
                    f"[percepta] resume=true but there is no checkpoint at {path}; "
                    "starting from scratch"
                )
        set_seed(int(self.cfg.seed) + self.rank)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint content (collective under DDP: every rank must call it)."""
        import percepta

        rng = ckpt_io.capture_rng()
        per_rank = pdist.all_gather_object(rng) if self.world_size > 1 else None
        hooks = {
            h.name: h.state_dict()
            for h in self.hooks
            if getattr(h, "name", "") and callable(getattr(h, "state_dict", None))
        }
        offset = self.data_offset + int(getattr(self._loader, "empty_batches", 0))
        offsets = pdist.all_gather_object(offset) if self.world_size > 1 else [offset]
        return {
            "format": ckpt_io.FORMAT,
            "version": ckpt_io.VERSION,
            "percepta_version": percepta.__version__,
            "task": str(self.cfg.task),
            "config": pconfig.to_dict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "iteration": self.iteration,
            "epoch": self.epoch,
            "rng": rng,
            "rng_per_rank": per_rank,
            "world_size": self.world_size,
            "sampler": {
                "seed": int(self.cfg.seed),
                "global_batch_size": self.batch_size,
                "batches_per_epoch": self.batches_per_epoch,
            },
            "nonfinite_count": self.guard.count,
            "nonfinite_in_row": self.guard.in_row,
            "best": dict(self.best),
            "hooks": hooks,
            "data_offset_per_rank": offsets,
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
            detail = "; ".join(str(e).strip().splitlines()[:4])
            raise CheckpointError(
                f"cannot resume from {source}: it does not fit this model or optimizer ({detail})"
            ) from None
        self.iteration = int(ckpt["iteration"])
        self.epoch = int(ckpt.get("epoch", self.iteration // self.batches_per_epoch))
        offsets = ckpt.get("data_offset_per_rank") or []
        self.data_offset = int(offsets[self.rank]) if len(offsets) == self.world_size else 0
        hook_states = dict(ckpt.get("hooks") or {})
        hook_states.setdefault(
            "nonfinite",
            {"count": ckpt.get("nonfinite_count", 0), "in_row": ckpt.get("nonfinite_in_row", 0)},
        )
        for h in self.hooks:
            name = getattr(h, "name", "")
            if name in hook_states and callable(getattr(h, "load_state_dict", None)):
                h.load_state_dict(hook_states[name])
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
        if self.is_main and (
            sampler.get("global_batch_size") not in (None, self.batch_size)
            or sampler.get("seed") not in (None, int(self.cfg.seed))
        ):
            console(
                f"[percepta] note: batch size or seed differ from {source}; the data order "
                "after resuming differs from an uninterrupted run"
            )

    # ---------------------------------------------------------------- the loop
    def _train_loader(self) -> Any:
        tc = self.tc
        kwargs = {"max_skip_fraction": float(tc.max_skip_fraction)}
        # a batch whose every sample was unreadable is dropped whole: the data of iteration i is
        # then sampler batch i + data_offset, which the checkpoint records for exact resume
        self._loader = build_train_loader(
            self.train_dataset,
            self.batch_size,
            seed=int(self.cfg.seed),
            rank=self.rank,
            world_size=self.world_size,
            start_iter=self.iteration + self.data_offset,
            num_workers=int(tc.num_workers),
            collate_fn=self.collate_fn,
            pin_memory=self.device.type == "cuda",
            **kwargs,
        )
        return self._loader

    def _train_loop(self) -> None:
        tc = self.tc
        self.train_model.train()
        bar = tqdm(
            total=self.max_iters,
            initial=self.iteration,
            desc=f"train {self.cfg.name}",
            unit="it",
            dynamic_ncols=True,
            disable=not (tc.progress and self.is_main),
        )
        self.window.reset()
        data_iter = iter(self._train_loader()) if self.iteration < self.max_iters else None
        try:
            while self.iteration < self.max_iters:
                images, targets = self._next_batch(data_iter)
                self._call_hooks("before_step")
                total = self.run_step(images, targets)
                self.iteration += 1
                self.epoch = self.iteration // self.batches_per_epoch
                bar.update(1)
                if math.isfinite(total):
                    bar.set_postfix(loss=f"{total:.4f}", refresh=False)
                self._call_hooks("after_step")
                if self.signals.requested(self.world_size):
                    break
        finally:
            bar.close()
            del data_iter

    def _next_batch(self, data_iter: Any) -> Any:
        """The next batch; under DDP a data error on one rank (too many unreadable images)
        stops every rank with it, instead of leaving the others waiting in a collective."""
        error: DataError | None = None
        try:
            batch = next(data_iter)
        except DataError as e:
            error, batch = e, None
        if self.world_size > 1 and pdist.all_reduce_min(0 if error else 1) == 0:
            raise error or DataError(
                "training stopped: another process hit a data error (its message is in its log)"
            )
        if error is not None:
            raise error
        return batch

    def run_step(self, images: Any, targets: Any) -> float:
        """One iteration: forward, (skip if non-finite) backward, clip, step, lr schedule.

        Sets ``step_finite`` / ``step_applied`` / ``nonfinite_terms`` for the hooks; returns
        the total loss as a float (``nan`` for a skipped step).
        """
        images = move_to_device(images, self.device, non_blocking=True)
        targets = move_to_device(targets, self.device, non_blocking=True)
        with torch.autocast(
            device_type=self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            loss_dict = self.train_model(images, targets)
            if not isinstance(loss_dict, dict):
                raise TrainingError(
                    "in train mode the model must return a dict of losses, "
                    f"not {type(loss_dict).__name__}"
                )
            total = self.loss_transform(loss_dict, self)
        if not isinstance(total, torch.Tensor) or total.numel() != 1:
            raise TrainingError(
                "the total loss must be a scalar tensor; got "
                f"{getattr(total, 'shape', type(total).__name__)} from "
                f"{getattr(self.loss_transform, '__name__', 'loss_transform')}"
            )
        self.last_loss_dict = loss_dict
        total_f = float(total.detach().float())
        finite = math.isfinite(total_f)
        if self.world_size > 1:
            finite = pdist.all_reduce_min(int(finite)) == 1
        self.step_finite, self.step_applied = finite, False
        self.nonfinite_terms = (
            []
            if finite
            else (_nonfinite_keys(loss_dict) or (["total"] if not math.isfinite(total_f) else []))
        )
        if finite:
            self.step_applied = self._backward_and_step(total)
            self._record_step(loss_dict, total)
        self.optimizer.zero_grad(set_to_none=True)
        self.step_lr = self.lr  # the lr this iteration used (logged), before the schedule moves
        with warnings.catch_warnings():  # a skipped first step makes LambdaLR warn; harmless
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*optimizer.step")
            self.scheduler.step()
        self.window.count(len(images))
        return total_f if finite else float("nan")

    def _backward_and_step(self, total: torch.Tensor) -> bool:
        """Backward, clip, optimizer step; ``False`` when the ``GradScaler`` skipped the step
        (inf/NaN gradients in fp16): then the EMA must not move either."""
        self.scaler.scale(total).backward()
        self.grad_norm = None
        if self.tc.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            self.grad_norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), float(self.tc.grad_clip)
            )
        scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # GradScaler lowers its scale exactly when it found inf/NaN and skipped the step
        return scale_before is None or self.scaler.get_scale() >= scale_before

    def _record_step(self, loss_dict: dict[str, Any], total: torch.Tensor) -> None:
        if self.loss_transform is not sum_losses:
            # log the raw terms and their sum (a term the transform left out for being
            # non-finite is not logged) plus the total that was optimised
            loss_dict = {k: v for k, v in loss_dict.items() if k not in _nonfinite_keys(loss_dict)}
            loss_dict["optimized_loss"] = total.detach()
            total = sum_losses(loss_dict)
        extra = {"grad_norm": self.grad_norm} if self.grad_norm is not None else {}
        self.window.add({**loss_dict, "total_loss": total, **extra})

    def _call_hooks(self, name: str, *args: Any) -> None:
        for hook in self.hooks:
            fn = getattr(hook, name, None)
            if callable(fn):
                fn(self, *args)
