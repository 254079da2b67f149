"""Toy model, dataset, evaluator and config for the engine tests (tiny, CPU, deterministic).

Also a script: ``python tests/engine/toy.py '<json spec>'`` trains the toy in a fresh process
(used by the kill/resume test and, launched twice with RANK/WORLD_SIZE set, by the DDP test).
Spec keys: ``overrides`` (list of key=value), ``run_dir`` (may contain ``{rank}``),
``dropout``, ``kill_at`` (``os._exit(17)`` in ``after_step`` at that iteration),
``metrics_out`` (json file for rank 0's final metrics), ``n_train``, ``n_val``,
``evaluator`` (``plain`` or ``metric``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset
from torchvision import tv_tensors

from percepta.config import ExperimentConfig
from percepta.structures import make_target

SIZE = 4  # images are [3, SIZE, SIZE]
IN_FEATURES = 3 * SIZE * SIZE

TEST_TRAIN = {
    "max_iters": 8,
    "batch_size": 4,
    "device": "cpu",
    "progress": False,
    "tensorboard": False,
    "log_period": 2,
    "eval_period": 0,
    "checkpoint_period": 0,
    "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
    "scheduler": {"name": "constant", "warmup_iters": 0},
}


def make_cfg(output_dir: str | os.PathLike, overrides: list[str] | None = None) -> DictConfig:
    """A read-only experiment config for the toy (the structured schema, model ``toy``)."""
    base = OmegaConf.structured(ExperimentConfig)
    node = OmegaConf.create(
        {
            "name": "toy",
            "task": "detection",
            "output_dir": str(output_dir),
            "model": {"name": "toy"},
            "data": {"train": None},
            "train": TEST_TRAIN,
        }
    )
    cfg = OmegaConf.merge(base, node, OmegaConf.from_dotlist(list(overrides or [])))
    OmegaConf.set_readonly(cfg, True)
    return cfg


class ToyDataset(Dataset):
    """``n`` random images with a regression target ``y = W x`` (+ a box, to test tv_tensors)."""

    def __init__(self, n: int = 24, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = (torch.rand(n, 3, SIZE, SIZE, generator=g) * 255).round()
        w = torch.randn(IN_FEATURES, 2, generator=torch.Generator().manual_seed(123))
        self.y = (self.images.flatten(1) / 255 - 0.5) @ w / 4

    def __len__(self) -> int:
        return len(self.images)

    bad: frozenset[int] = frozenset()  # indices that fail like unreadable images

    def __getitem__(self, i: int):
        if i in self.bad:
            from percepta.errors import DataError

            raise DataError(f"toy image {i}: unreadable (a test's corrupt sample)")
        target = make_target([[0, 0, 2, 2]], [0], image_id=i, orig_size=(SIZE, SIZE), y=self.y[i])
        return self.images[i], target


class ToyModel(nn.Module):
    """Linear -> LayerNorm -> ReLU -> Dropout -> Linear; mean squared error in train mode.

    ``poison``: 1-based training forward calls whose ``loss_mse`` is made NaN.
    ``norm="batch"`` uses BatchNorm1d instead of LayerNorm (DDP / sync_bn tests).
    """

    def __init__(self, dropout: float = 0.1, hidden: int = 16, norm: str = "layer") -> None:
        super().__init__()
        self.fc1 = nn.Linear(IN_FEATURES, hidden)
        self.norm = nn.BatchNorm1d(hidden) if norm == "batch" else nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, 2)
        self.calls = 0
        self.poison: set[int] = set()
        self.seen_devices: set[str] = set()

    def forward(self, images, targets=None):
        x = torch.stack(list(images)).float().flatten(1) / 255 - 0.5
        h = self.fc1(x)
        self.hidden_dtype = h.dtype  # bf16 under CPU autocast
        out = self.fc2(self.drop(torch.relu(self.norm(h))))
        if not self.training:
            return [{"score": o.float()} for o in out]
        self.calls += 1
        for t in targets:
            assert isinstance(t["boxes"], tv_tensors.BoundingBoxes), type(t["boxes"])
            assert t["boxes"].device == x.device and t["y"].device == x.device
        y = torch.stack([t["y"] for t in targets])
        loss = F.mse_loss(out.float(), y)
        if self.calls in self.poison:
            loss = loss * float("nan")
        return {
            "loss_mse": loss,
            "loss_aux": 0.1 * (out.float() - y).abs().mean(),
            "mae": (out.float() - y).abs().mean().detach(),
        }


class ToyEvaluator:
    """Negative MSE of the predicted scores (higher is better); plain Python, not synced."""

    primary_metric = "neg_mse"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sq = torch.zeros(2, dtype=torch.float64)
        self.n = torch.tensor(0, dtype=torch.int64)

    def update(self, preds, targets) -> None:
        p = torch.stack([q["score"] for q in preds]).double().cpu()
        y = torch.stack([t["y"] for t in targets]).double().cpu()
        self.sq = self.sq + ((p - y) ** 2).sum(0)
        self.n = self.n + len(preds)

    def compute(self):
        mse = self.sq.sum() / (2 * self.n)
        return {
            "neg_mse": -mse,
            "count": self.n,
            "nested": {"mse": mse},
            "per_dim": self.sq / self.n,
            "per_dim_list": (self.sq / self.n).tolist(),
        }

    def format_table(self, metrics) -> str:
        return f"| neg_mse | {float(metrics['neg_mse']):.6f} |"


def metric_evaluator():
    """The same evaluator as a ``torchmetrics.Metric`` (synced across DDP ranks).

    torchmetrics is imported here, not at module level: it costs the subprocess tests ~2 s.
    """
    import torchmetrics

    class ToyMetric(torchmetrics.Metric):
        primary_metric = "neg_mse"
        full_state_update = False

        def __init__(self) -> None:
            super().__init__()
            self.add_state("sq", default=torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("n", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

        def update(self, preds, targets) -> None:
            p = torch.stack([q["score"] for q in preds]).double()
            y = torch.stack([t["y"] for t in targets]).double()
            self.sq += ((p - y) ** 2).sum(0)
            self.n += len(preds)

        compute = ToyEvaluator.compute
        format_table = ToyEvaluator.format_table

    return ToyMetric()


def build(
    cfg: DictConfig,
    dropout: float = 0.1,
    n_train: int = 24,
    n_val: int = 10,
    evaluator: str = "plain",
    norm: str = "layer",
):
    """``(model, train_ds, val_ds, evaluator)`` built the same way in every process;
    ``evaluator="metric"`` gives the torchmetrics version."""
    torch.manual_seed(int(cfg.seed))
    ev = metric_evaluator() if evaluator == "metric" else ToyEvaluator()
    return ToyModel(dropout, norm=norm), ToyDataset(n_train, seed=0), ToyDataset(n_val, seed=1), ev


class KillAt:
    """Hook: die like a killed process (no cleanup) right after iteration ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_step(self, trainer) -> None:
        if trainer.iteration == self.at:
            sys.stdout.flush()
            os._exit(17)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a gloo rendezvous)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(spec: dict, world_size: int = 2, timeout: float = 150.0) -> list[tuple[int, str]]:
    """Run this script as ``world_size`` gloo processes on CPU (torchrun's environment);
    returns ``(exit code, stderr tail)`` per rank, killing all of them on a time-out."""
    import subprocess

    port = free_port()
    procs = []
    for rank in range(world_size):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world_size),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            CUDA_VISIBLE_DEVICES="",
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, json.dumps(spec)],
                env=env,
                cwd=Path(__file__).resolve().parents[2],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, err[-3000:]))
    return results


def main(spec: dict) -> int:
    torch.set_num_threads(1)
    from percepta.engine import distributed
    from percepta.engine.trainer import Trainer

    info = distributed.init_from_env()
    if info.rank in spec.get("bad_on_ranks", []):  # every sample unreadable on these ranks
        ToyDataset.bad = frozenset(range(spec.get("n_train", 24)))
    cfg = make_cfg(spec.get("output_dir", "runs"), spec.get("overrides", []))
    model, train_ds, val_ds, evaluator = build(
        cfg,
        spec.get("dropout", 0.1),
        spec.get("n_train", 24),
        spec.get("n_val", 10),
        spec.get("evaluator", "plain"),
        spec.get("norm", "layer"),
    )
    hooks = [KillAt(int(spec["kill_at"]))] if spec.get("kill_at") else []
    run_dir = spec.get("run_dir")
    if run_dir:
        run_dir = run_dir.format(rank=info.rank)
    trainer = Trainer(
        cfg, model, train_ds, val_dataset=val_ds, evaluator=evaluator, run_dir=run_dir, hooks=hooks
    )
    metrics = trainer.fit()
    if info.rank == 0 and spec.get("metrics_out"):
        Path(spec["metrics_out"]).write_text(
            json.dumps({"neg_mse": float(metrics["neg_mse"]), "count": int(metrics["count"])})
        )
    distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
