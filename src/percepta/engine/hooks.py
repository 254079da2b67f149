"""Everything around the training loop, as hooks (detectron2's ``HookBase``).

A hook may implement any of ``before_train(trainer)``, ``before_step(trainer)``,
``after_step(trainer)``, ``after_eval(trainer, metrics)``, ``after_train(trainer)``; plain
objects with some of these methods work too. A hook that keeps state across a resume implements
``state_dict()`` / ``load_state_dict(state)`` and a unique ``name``: the trainer stores it in the
checkpoint under ``hooks[name]``.

The trainer runs, in order: :class:`LoggingHook`, :class:`NonFiniteGuard`, :class:`EMAHook`,
the user's hooks, :class:`EvalHook`, :class:`PeriodicCheckpointer` (so a user hook sees an
iteration before it is evaluated or checkpointed). When the last iteration is done the trainer
evaluates (through :meth:`EvalHook.evaluate_and_track`), writes the final ``last.pt`` (which
then records the best metric) and only then calls every hook's ``after_train``. Only rank 0
writes files.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from percepta.engine import distributed as pdist
from percepta.engine.logging import MetricsLogger, console, scalar_items, truncate_jsonl
from percepta.errors import PerceptaError

if TYPE_CHECKING:
    from percepta.engine.trainer import Trainer

__all__ = [
    "HookBase",
    "LoggingHook",
    "NonFiniteGuard",
    "EMAHook",
    "EvalHook",
    "PeriodicCheckpointer",
    "TrainingError",
]


class TrainingError(PerceptaError, RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the message says where and why."""


class HookBase:
    """Base class of the trainer's hooks: every method is a no-op by default."""

    name: str = ""

    def before_train(self, trainer: Trainer) -> None: ...

    def before_step(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer) -> None: ...

    def after_eval(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...

    def after_train(self, trainer: Trainer) -> None: ...


def _every(period: int, it: int) -> bool:
    return period > 0 and it % period == 0


class LoggingHook(HookBase):
    """``metrics.jsonl`` + TensorBoard + console: the loss window every ``train.log_period``
    iterations and every evaluation (also written as ``eval/metrics_<iter>.json``). The trainer
    closes the files when ``fit`` ends, after every other hook's ``after_train``."""

    def before_train(self, trainer: Trainer) -> None:
        log = trainer.run_dir / "metrics.jsonl"
        if trainer.is_main:
            if trainer.resumed:
                truncate_jsonl(log, trainer.iteration)
            elif log.is_file() and log.stat().st_size:  # a fresh run in an old run folder
                log.replace(log.with_name("metrics.prev.jsonl"))
                console(f"[percepta] note: {log} of an earlier run moved to metrics.prev.jsonl")
        trainer.logger = MetricsLogger(
            trainer.run_dir,
            enabled=trainer.is_main,
            tensorboard=bool(trainer.tc.tensorboard),
            purge_step=trainer.iteration if trainer.resumed else None,
        )

    def after_step(self, trainer: Trainer) -> None:
        it = trainer.iteration
        if trainer.tc.log_period > 0 and (
            it % trainer.tc.log_period == 0 or it == trainer.max_iters
        ):
            self.log_window(trainer)

    @staticmethod
    def log_window(trainer: Trainer) -> dict[str, float]:
        """Average the trainer's loss window, log it (jsonl, TensorBoard, console), reset it."""
        w = trainer.window
        scalars = w.means()
        scalars.update(
            lr=trainer.step_lr,
            time=time.perf_counter() - trainer.t0,
            iter_time=w.elapsed() / max(w.iters, 1),
            images_per_s=w.images * trainer.world_size / w.elapsed(),
        )
        if trainer.scaler.is_enabled():
            scalars["amp_scale"] = float(trainer.scaler.get_scale())
        if trainer.logger is not None:
            trainer.logger.log_train(
                trainer.iteration, scalars, epoch=trainer.epoch, nonfinite=trainer.guard.count
            )
        if trainer.is_main and not trainer.tc.progress:
            console(
                f"iter {trainer.iteration}/{trainer.max_iters}  loss "
                f"{scalars.get('total_loss', float('nan')):.4f}  lr {trainer.step_lr:.3g}  "
                f"{scalars['images_per_s']:.1f} img/s"
            )
        w.reset()
        return scalars

    def after_eval(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        logger = trainer.logger
        if logger is None:  # evaluation outside fit: the caller prints
            return
        logger.log_eval(
            trainer.iteration, metrics, epoch=trainer.epoch, time=time.perf_counter() - trainer.t0
        )
        logger.write_eval_file(trainer.iteration, metrics)
        if not trainer.is_main:
            return
        fmt = getattr(trainer.evaluator, "format_table", None)
        if callable(fmt):
            console(f"evaluation at iteration {trainer.iteration}:\n{fmt(metrics)}")
        else:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in list(scalar_items(metrics).items())[:12])
            console(f"evaluation at iteration {trainer.iteration}: {shown}")

    @staticmethod
    def close(trainer: Trainer) -> None:
        if trainer.logger is not None:
            trainer.logger.close()
            trainer.logger = None


class NonFiniteGuard(HookBase):
    """Counts skipped (non-finite) steps and stops after ``train.max_nonfinite`` in a row.

    The trainer skips the update of a step whose loss is not finite (agreed by all ranks); this
    hook logs which terms were not finite and raises :class:`TrainingError` past the limit, with
    the last checkpoint left untouched.
    """

    name = "nonfinite"

    def __init__(self, max_in_row: int) -> None:
        self.limit = max(1, int(max_in_row))
        self.count = 0
        self.in_row = 0

    def state_dict(self) -> dict[str, int]:
        return {"count": self.count, "in_row": self.in_row}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.in_row = int(state.get("count", 0)), int(state.get("in_row", 0))

    def after_step(self, trainer: Trainer) -> None:
        if trainer.step_finite:
            self.in_row = 0
            return
        self.count += 1
        self.in_row += 1
        bad = list(trainer.nonfinite_terms)
        if trainer.world_size > 1:
            bad = sorted({k for terms in pdist.all_gather_object(bad) for k in terms})
        it = trainer.iteration
        terms = ", ".join(bad) or "(on another rank)"
        if trainer.logger is not None:
            trainer.logger.write(
                {"iteration": it, "nonfinite": self.count, "nonfinite_terms": bad, "skipped": True}
            )
        if trainer.is_main:
            console(
                f"[percepta] iteration {it}: non-finite loss ({terms}); step skipped "
                f"({self.in_row} in a row, limit {self.limit})"
            )
        if self.in_row >= self.limit:
            last = trainer.checkpoint_dir / "last.pt"
            kept = (
                f"the last checkpoint {last} is unchanged"
                if last.is_file()
                else "no checkpoint was written"
            )
            raise TrainingError(
                f"training stopped at iteration {it}: the loss was not finite for "
                f"{self.in_row} iterations in a row (train.max_nonfinite={self.limit}); "
                f"non-finite terms: {terms}; {kept}. Lower train.optimizer.lr, set "
                "train.grad_clip, or check the data."
            )


class EMAHook(HookBase):
    """An exponential moving average of the weights (``torch.optim.swa_utils``), updated only
    after steps whose optimizer update really happened: a non-finite step, or an fp16 step that
    the ``GradScaler`` skipped for inf/NaN gradients, leaves the average unchanged."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.ema = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True
        )

    def after_step(self, trainer: Trainer) -> None:
        if trainer.step_applied:
            self.ema.update_parameters(trainer.model)


class EvalHook(HookBase):
    """Evaluates every ``train.eval_period`` iterations and at the end; keeps ``best.pt`` when
    the evaluator's primary metric improves in its declared direction."""

    def after_step(self, trainer: Trainer) -> None:
        it = trainer.iteration
        if (
            _every(int(trainer.tc.eval_period), it)
            and it < trainer.max_iters
            and trainer.can_evaluate()
        ):
            self.evaluate_and_track(trainer)
            trainer.train_model.train()

    @staticmethod
    def evaluate_and_track(trainer: Trainer) -> dict[str, Any]:
        metrics = trainer.evaluate()
        best = trainer.best
        name = best.get("metric")
        if not name:
            return metrics
        value = scalar_items(metrics).get(name)
        if value is None and trainer.is_main:
            console(
                f"[percepta] primary metric {name!r} missing from the evaluation; best.pt "
                f"not updated (metrics: {sorted(scalar_items(metrics))})"
            )
        higher = best.get("higher_is_better", True)
        improved = (
            value is not None
            and math.isfinite(value)
            and (
                best["value"] is None
                or (value > best["value"] if higher else value < best["value"])
            )
        )
        # rank 0 decides, so that every rank enters the (collective) save together
        improved, value = pdist.broadcast_object((improved, value))
        if improved:
            best.update(value=float(value), iteration=trainer.iteration)
            trainer.save_checkpoint("best")
        return metrics


class PeriodicCheckpointer(HookBase):
    """Writes ``checkpoints/last.pt`` every ``train.checkpoint_period`` iterations (atomically;
    see :mod:`percepta.engine.checkpoint`). The trainer writes the final one itself."""

    def after_step(self, trainer: Trainer) -> None:
        it = trainer.iteration
        if _every(int(trainer.tc.checkpoint_period), it) and it < trainer.max_iters:
            trainer.save_checkpoint("last")
