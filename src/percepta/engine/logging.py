"""Run logging: ``metrics.jsonl``, TensorBoard scalars and console lines (rank 0 only).

``metrics.jsonl`` holds one JSON object per line: a training line per log step
(``iteration``, ``epoch``, ``lr``, every loss term, ``total_loss``, ``time`` (seconds since the
start of ``fit``), ``iter_time``, ``images_per_s``, ``nonfinite``), a line per skipped
non-finite step (``"nonfinite_terms": [...]``) and a line per evaluation carrying
``"eval": {...}`` with the evaluator's scalar metrics (nested dicts flattened with ``/``;
lists and non-scalar tensors are left out here and kept in ``eval/metrics_<iter>.json``).
TensorBoard (``torch.utils.tensorboard.SummaryWriter`` in ``tb/``) gets the same scalars under
``train/`` and ``eval/``.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from percepta.atomic import atomic_write_text
from percepta.jsonable import to_jsonable

__all__ = [
    "MetricsLogger",
    "LossWindow",
    "scalar_items",
    "to_jsonable",
    "console",
    "truncate_jsonl",
]


def console(msg: str) -> None:
    """Print a line without breaking an active tqdm bar."""
    tqdm.write(msg)


def _as_scalar(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().float().cpu().item())
    try:  # numpy scalars / 0-d arrays
        import numpy as np

        if isinstance(value, np.ndarray) and value.size == 1:
            return float(value.reshape(()).item())
        if isinstance(value, np.generic):
            return float(value.item())
    except ImportError:  # pragma: no cover
        pass
    return None


def scalar_items(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The scalar entries of a (possibly nested) metrics dict, nested keys joined with ``/``."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalar_items(value, prefix=f"{name}/"))
            continue
        s = _as_scalar(value)
        if s is not None:
            out[name] = s
    return out


class MetricsLogger:
    """Writes ``metrics.jsonl`` and TensorBoard scalars under ``run_dir`` when ``enabled``.

    Args:
        run_dir: the run folder.
        enabled: ``False`` on every rank but 0: all methods become no-ops.
        tensorboard: also write TensorBoard event files to ``run_dir/tb``.
        purge_step: on resume, the iteration resumed from: TensorBoard hides the events a
            killed run wrote after it.
    """

    def __init__(
        self,
        run_dir: str | Path,
        enabled: bool = True,
        tensorboard: bool = True,
        purge_step: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self._writer = None
        self._file = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        """Append one JSON line (values made JSON-safe)."""
        if self._file is None:
            return
        self._file.write(json.dumps(to_jsonable(record), allow_nan=False) + "\n")
        self._file.flush()

    def log_train(self, iteration: int, scalars: dict[str, float], **extra: Any) -> None:
        """One training line: ``{"iteration", **extra, **scalars}`` and ``train/*`` scalars."""
        if not self.enabled:
            return
        self.write({"iteration": int(iteration), **extra, **scalars})
        if self._writer is not None:
            for k, v in scalars.items():
                if v is not None and math.isfinite(v):
                    self._writer.add_scalar(f"train/{k}", v, int(iteration))

    def log_eval(self, iteration: int, metrics: dict[str, Any], **extra: Any) -> dict[str, float]:
        """One line ``{"iteration", **extra, "eval": {scalars}}``; returns the scalars."""
        scalars = scalar_items(metrics)
        if not self.enabled:
            return scalars
        self.write({"iteration": int(iteration), **extra, "eval": scalars})
        if self._writer is not None:
            for k, v in scalars.items():
                if math.isfinite(v):
                    self._writer.add_scalar(f"eval/{k}", v, int(iteration))
            self._writer.flush()
        return scalars

    def write_eval_file(self, iteration: int, metrics: dict[str, Any]) -> Path | None:
        """The full metrics (lists and nested values too) as ``eval/metrics_<iter>.json``."""
        if not self.enabled:
            return None
        path = self.run_dir / "eval" / f"metrics_{int(iteration)}.json"
        atomic_write_text(path, json.dumps(to_jsonable(metrics), indent=2, allow_nan=False))
        return path

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class LossWindow:
    """Loss terms averaged over the iterations since the last log step, plus throughput.

    Sums stay on the device (no host sync per step). :meth:`means` averages each term over the
    steps that produced it and, in a distributed run, over all ranks (sum and count are
    all-reduced over the union of the ranks' keys, so a term that only some ranks produce,
    e.g. a loss for images that have relations, neither hangs nor skews the mean).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.iters = 0  # all iterations, skipped ones too (throughput)
        self.images = 0
        self.t0 = time.perf_counter()

    def add(self, values: dict[str, Any]) -> None:
        """Add one finite step's scalar terms (1-element tensors or numbers; others ignored)."""
        for k, v in values.items():
            scalar = (isinstance(v, torch.Tensor) and v.numel() == 1) or isinstance(v, (int, float))
            if isinstance(v, bool) or not scalar:
                continue
            v = torch.as_tensor(v).detach().double().reshape(())
            self.sums[k] = self.sums[k] + v.to(self.sums[k].device) if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def count(self, images: int) -> None:
        """Count one iteration of ``images`` images (finite or skipped)."""
        self.iters += 1
        self.images += int(images)

    def means(self) -> dict[str, float]:
        """``{term: mean}`` over the window (and over the ranks; a collective when distributed)."""
        from percepta.engine import distributed as pdist

        keys = sorted(self.sums)
        if pdist.is_distributed():
            keys = sorted({k for ks in pdist.all_gather_object(keys) for k in ks})
        if not keys:
            return {}
        zero = torch.zeros((), dtype=torch.float64)
        sums = torch.stack([self.sums[k].cpu() if k in self.sums else zero for k in keys])
        counts = torch.tensor([float(self.counts.get(k, 0)) for k in keys], dtype=torch.float64)
        both = pdist.all_reduce_sum(torch.stack([sums, counts]))
        return {
            k: float(s / c) for k, s, c in zip(keys, both[0].tolist(), both[1].tolist()) if c > 0
        }

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.t0, 1e-9)


def truncate_jsonl(path: str | Path, max_iteration: int) -> None:
    """Drop the lines of ``path`` whose ``iteration`` exceeds ``max_iteration`` (resume after a
    kill: the killed run's lines past the checkpoint are superseded). The file is rewritten
    atomically, so an interrupt here never loses the lines that are kept."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("iteration", 0)) <= max_iteration:
                kept.append(line)
        except (ValueError, AttributeError, TypeError):
            continue
    atomic_write_text(path, "".join(k + "\n" for k in kept))
