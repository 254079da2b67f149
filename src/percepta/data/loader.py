"""Samplers and DataLoader building for iteration-based, resumable, distributed training.

Why a custom batch sampler instead of ``torch.utils.data.DistributedSampler``: the trainer
counts iterations, not epochs, and must resume mid-epoch without replaying data. The sampler
below is a pure function of ``(seed, iteration)``:

- epoch ``e`` uses the permutation ``torch.randperm(N, generator=seeded(seed + e))``; the
  incomplete tail (``N mod B`` samples, ``B`` = global batch) is dropped, so an epoch has
  ``N // B`` batches and epochs advance when the permutation is exhausted;
- global batch ``i`` of the epoch is ``perm[i*B:(i+1)*B]``; rank ``r`` of ``W`` takes the
  positions ``r, r+W, r+2W, ...`` of it (strided, like ``DistributedSampler``), so the union of
  the ranks' ``i``-th batches is exactly the single-process ``i``-th batch;
- ``start_iter`` skips directly to global iteration ``start_iter`` (no data replayed on resume).

Evaluation uses :class:`ShardedSampler` (strided shards *without* the padding duplicates of
``DistributedSampler``, which would double-count images in the metrics; torchmetrics syncs the
unequal shards).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from percepta.errors import DataError
from percepta.structures import collate

__all__ = ["ResumableBatchSampler", "ShardedSampler", "build_train_loader", "build_eval_loader"]


def _dataset_name(dataset: Any) -> str:
    return getattr(dataset, "name", None) or type(dataset).__name__


class ResumableBatchSampler(Sampler[list[int]]):
    """An endless batch sampler over epochs; this rank's share of each global batch.

    Args:
        num_samples: dataset length ``N``.
        global_batch_size: ``B``, the batch over all processes (divisible by ``world_size``).
        seed: base seed; epoch ``e`` is shuffled with ``seed + e``.
        rank, world_size: this process and the number of processes.
        start_iter: the first global iteration to produce (resume point).
        shuffle: ``False`` walks the dataset in order every epoch.
    """

    def __init__(self, num_samples: int, global_batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, start_iter: int = 0, shuffle: bool = True) -> None:
        if global_batch_size <= 0:
            raise ValueError(f"global batch size must be positive, got {global_batch_size}")
        if global_batch_size % world_size != 0:
            raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                             f"number of processes {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.num_samples = int(num_samples)
        self.global_batch_size = int(global_batch_size)
        self.batch_size = self.global_batch_size // world_size
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.start_iter = int(start_iter)
        self.shuffle = shuffle
        self.batches_per_epoch = self.num_samples // self.global_batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"{self.num_samples} samples are fewer than one global batch "
                             f"({self.global_batch_size})")

    def permutation(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` (identical on every rank)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        return torch.randperm(self.num_samples, generator=g)

    def global_batch(self, iteration: int) -> list[int]:
        """The dataset indices of global batch ``iteration`` (all ranks together)."""
        epoch, i = divmod(int(iteration), self.batches_per_epoch)
        b = self.global_batch_size
        return self.permutation(epoch)[i * b:(i + 1) * b].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        epoch, i = divmod(self.start_iter, self.batches_per_epoch)
        b = self.global_batch_size
        while True:
            perm = self.permutation(epoch)
            for j in range(i, self.batches_per_epoch):
                yield perm[j * b + self.rank:(j + 1) * b:self.world_size].tolist()
            epoch, i = epoch + 1, 0

    def __len__(self) -> int:
        # Endless; ``len`` reports one epoch (DataLoader uses it only for its own ``len``).
        return self.batches_per_epoch


class ShardedSampler(Sampler[int]):
    """Indices ``rank, rank + W, rank + 2W, ...``: disjoint shards, no padding duplicates."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.num_samples = int(num_samples)
        self.rank = int(rank)
        self.world_size = int(world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))


def _length(dataset: Dataset) -> int:
    if not isinstance(dataset, Sized):
        raise DataError(f"dataset {_dataset_name(dataset)} has no length; the trainer needs a "
                        "map-style dataset (with __len__ and __getitem__)")
    return len(dataset)


def build_train_loader(dataset: Dataset, global_batch_size: int, *, seed: int = 0, rank: int = 0,
                       world_size: int = 1, start_iter: int = 0, num_workers: int = 0,
                       collate_fn: Callable[[list[Any]], Any] = collate, pin_memory: bool = False,
                       shuffle: bool = True) -> DataLoader:
    """An endless DataLoader yielding this rank's part of global batch ``start_iter``, ``+1``, ...

    The loader gets its own ``torch.Generator`` (seeded from ``seed``, ``rank`` and
    ``start_iter``) so creating it never draws from the global RNG, which the trainer restores
    exactly on resume. Worker processes are seeded from that generator; data augmentation in
    workers is therefore reproducible per run but not bit-identical across a resume (with
    ``num_workers=0`` augmentation uses the restored global RNG and resume is exact).

    Raises:
        DataError: the dataset is smaller than one global batch.
    """
    n = _length(dataset)
    if n < global_batch_size:
        raise DataError(f"training dataset {_dataset_name(dataset)} has {n} samples, fewer than "
                        f"one global batch (train.batch_size={global_batch_size})")
    sampler = ResumableBatchSampler(n, global_batch_size, seed=seed, rank=rank,
                                    world_size=world_size, start_iter=start_iter, shuffle=shuffle)
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(rank) * 7_919 + int(start_iter)) % (2**63))
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_fn, pin_memory=pin_memory, generator=g,
                      persistent_workers=False)


def build_eval_loader(dataset: Dataset, batch_size: int, *, rank: int = 0, world_size: int = 1,
                      num_workers: int = 0, collate_fn: Callable[[list[Any]], Any] = collate,
                      pin_memory: bool = False) -> DataLoader:
    """A DataLoader over this rank's strided shard of ``dataset`` (in order, no duplicates)."""
    n = _length(dataset)
    g = torch.Generator()
    g.manual_seed(int(rank))
    return DataLoader(dataset, batch_size=max(1, int(batch_size)),
                      sampler=ShardedSampler(n, rank, world_size), num_workers=num_workers,
                      collate_fn=collate_fn, pin_memory=pin_memory, generator=g, drop_last=False)
