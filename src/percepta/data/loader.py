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

**Augmentation randomness is a function of the sample, not of the worker.** Before loading
sample ``index`` of epoch ``epoch``, the dataset wrapper seeds torch's CPU generator, numpy's
global RNG and Python's ``random`` from :func:`sample_seed` ``(seed, epoch, index)`` (a numpy
``SeedSequence`` hash); in the main process it restores their states afterwards. The
augmentation a sample gets therefore does not depend on which worker loads it, on how many
samples that worker loaded before, on the number of workers or ranks, nor on whether the run
was resumed: a run resumed at iteration ``k`` sees exactly the batches of an uninterrupted
run, with any ``num_workers``. The global RNGs of the main process (model init, dropout;
checkpointed by the trainer) are left untouched. Datasets must draw their randomness from
these global RNGs (as ``torchvision.transforms.v2`` does), not from generators of their own.

**Samples that cannot be loaded are skipped.** A dataset signals a bad sample (a corrupt or
missing image) by raising :class:`~percepta.errors.DataError`; the wrapper turns it into a
marker, the collate drops the markers and the batch carries which samples it dropped, and the
loader's iterator (main process, so counts are exact with any number of workers) warns once per
bad sample, naming it, and keeps totals. More than ``max_skip_fraction`` of the dataset's
samples bad stops the run with a DataError naming how many failed and the first files. A batch
whose every sample is bad is not yielded: the next batch is drawn instead (so from then on the
data of iteration ``i`` is sampler batch ``i + empty_batches``; the trainer may store
``empty_batches`` in its checkpoint to resume exactly even then). Under DDP each rank counts its
own share.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from percepta.errors import DataError
from percepta.structures import collate

__all__ = [
    "ResumableBatchSampler",
    "ShardedSampler",
    "SkippingDataLoader",
    "sample_seed",
    "build_train_loader",
    "build_eval_loader",
]

_LISTED_FILES = 3  # bad samples quoted in the error past max_skip_fraction


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

    def __init__(
        self,
        num_samples: int,
        global_batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
        shuffle: bool = True,
    ) -> None:
        if global_batch_size <= 0:
            raise ValueError(f"global batch size must be positive, got {global_batch_size}")
        if global_batch_size % world_size != 0:
            raise ValueError(
                f"global batch size {global_batch_size} is not divisible by the "
                f"number of processes {world_size}"
            )
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
            raise ValueError(
                f"{self.num_samples} samples are fewer than one global batch "
                f"({self.global_batch_size})"
            )

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
        return self.permutation(epoch)[i * b : (i + 1) * b].tolist()

    def epoch_batches(self) -> Iterator[tuple[int, list[int]]]:
        """``(epoch, this rank's indices)`` for global iteration ``start_iter``, ``+1``, ..."""
        epoch, i = divmod(self.start_iter, self.batches_per_epoch)
        b = self.global_batch_size
        while True:
            perm = self.permutation(epoch)
            for j in range(i, self.batches_per_epoch):
                yield epoch, perm[j * b + self.rank : (j + 1) * b : self.world_size].tolist()
            epoch, i = epoch + 1, 0

    def __iter__(self) -> Iterator[list[int]]:
        for _, indices in self.epoch_batches():
            yield indices

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


class _KeyedBatchSampler(ResumableBatchSampler):
    """:class:`ResumableBatchSampler` yielding ``(epoch, index)`` keys (for per-sample seeds)."""

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:  # type: ignore[override]
        for epoch, indices in self.epoch_batches():
            yield [(epoch, i) for i in indices]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The 64-bit seed of the augmentation of sample ``index`` in ``epoch`` of a run seeded
    ``seed``: a ``numpy.random.SeedSequence`` hash, so nearby keys give unrelated streams."""
    ss = np.random.SeedSequence([int(seed) % 2**64, int(epoch), int(index)])
    return int(ss.generate_state(1, np.uint64)[0])


def _seed_rngs(seed: int) -> None:
    # torch.default_generator, not torch.manual_seed: that would also reseed the CUDA generators
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextmanager
def _seeded_rngs(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator, numpy's and Python's global RNGs for one sample.

    In the main process (``num_workers=0``) their states are restored on exit, so the
    trainer's RNG stream does not depend on the data. A worker process has no other use for
    them and skips the restore (numpy's ``get_state`` + ``set_state`` alone cost ~0.3 ms).
    """
    if get_worker_info() is not None:
        _seed_rngs(seed)
        yield
        return
    torch_state = torch.default_generator.get_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    _seed_rngs(seed)
    try:
        yield
    finally:
        torch.default_generator.set_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


class _BadSample(NamedTuple):
    """Marker returned in place of a sample whose loading raised :class:`DataError`."""

    index: int
    message: str


class _Collated(NamedTuple):
    """A collated batch of the good samples (``None`` if none) and the ``(index, message)`` of
    the dropped ones. A NamedTuple so that ``pin_memory`` recurses into ``batch``."""

    batch: Any
    skipped: list[tuple[int, str]]


class _GuardedDataset(Dataset):
    """``dataset[index]`` under per-sample seeded RNGs, a DataError becoming a :class:`_BadSample`.

    Keys are ``(epoch, index)`` (training) or a plain ``index`` (evaluation: epoch 0).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        with _seeded_rngs(sample_seed(self.seed, epoch, index)):
            try:
                return self.dataset[index]
            except DataError as e:  # (one line: the message is quoted in warnings and errors)
                return _BadSample(int(index), " ".join(str(e).splitlines()))


class _SkippingCollate:
    """Drop :class:`_BadSample` markers, collate the rest with ``collate_fn`` (in the worker)."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, samples: list[Any]) -> _Collated:
        good = [s for s in samples if not isinstance(s, _BadSample)]
        bad = [(s.index, s.message) for s in samples if isinstance(s, _BadSample)]
        return _Collated(self.collate_fn(good) if good else None, bad)


class SkippingDataLoader(DataLoader):
    """A DataLoader that skips samples raising DataError and stops past ``max_skip_fraction``.

    Yields what ``collate_fn`` makes of the good samples of each batch (batches with no good
    sample are not yielded). Counters, kept across ``iter`` calls: ``skipped`` (bad draws),
    ``bad_samples`` (index -> the dataset's message, each warned about once) and
    ``empty_batches`` (batches dropped entirely).

    Args:
        dataset: the user's map-style dataset (wrapped; see the module docstring).
        seed: base of the per-sample augmentation seeds.
        collate_fn: the collate of the good samples.
        max_skip_fraction: the largest fraction of the dataset's samples that may be bad.
        setting: the option to name in the error (e.g. ``train.max_skip_fraction``).
        **kwargs: passed to :class:`torch.utils.data.DataLoader`.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        seed: int,
        collate_fn: Callable[[list[Any]], Any],
        max_skip_fraction: float,
        setting: str = "max_skip_fraction",
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= float(max_skip_fraction) <= 1.0:
            raise DataError(f"{setting}={max_skip_fraction} must be a fraction in [0, 1]")
        super().__init__(
            _GuardedDataset(dataset, seed), collate_fn=_SkippingCollate(collate_fn), **kwargs
        )
        self.source_name = _dataset_name(dataset)
        self.num_source_samples = len(self.dataset)  # type: ignore[arg-type]
        self.max_skip_fraction = float(max_skip_fraction)
        self.setting = setting
        self.skipped = 0
        self.empty_batches = 0
        self.bad_samples: dict[int, str] = {}

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        for item in super().__iter__():
            if item.skipped:
                self._record(item.skipped)
            if item.batch is None:
                self.empty_batches += 1
                continue
            yield item.batch

    def _record(self, skipped: list[tuple[int, str]]) -> None:
        n = self.num_source_samples
        for index, message in skipped:
            self.skipped += 1
            if index in self.bad_samples:
                continue
            self.bad_samples[index] = message
            limit = (
                f"; more than {self.setting}={self.max_skip_fraction:g} stops the run"
                if self.max_skip_fraction < 1.0
                else ""
            )
            warnings.warn(
                f"skipping a sample that cannot be loaded: {message} "
                f"({len(self.bad_samples)} of {n} samples bad so far{limit})",
                UserWarning,
                stacklevel=3,
            )
        if len(self.bad_samples) > self.max_skip_fraction * n:
            first = "; ".join(list(self.bad_samples.values())[:_LISTED_FILES])
            more = " ..." if len(self.bad_samples) > _LISTED_FILES else ""
            raise DataError(
                f"{len(self.bad_samples)} of {n} samples of dataset "
                f"{self.source_name} could not be loaded, more than "
                f"{self.setting}={self.max_skip_fraction:g} allows: {first}{more} "
                "(fix or remove them; `percepta data check` opens every image)"
            )


def _length(dataset: Dataset) -> int:
    if not isinstance(dataset, Sized):
        raise DataError(
            f"dataset {_dataset_name(dataset)} has no length; the trainer needs a "
            "map-style dataset (with __len__ and __getitem__)"
        )
    return len(dataset)


def build_train_loader(
    dataset: Dataset,
    global_batch_size: int,
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    start_iter: int = 0,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] = collate,
    pin_memory: bool = False,
    shuffle: bool = True,
    max_skip_fraction: float = 0.05,
) -> SkippingDataLoader:
    """An endless loader yielding this rank's part of global batch ``start_iter``, ``+1``, ...

    Sample ``i`` of epoch ``e`` is augmented under RNGs seeded from ``(seed, e, i)`` (see the
    module docstring), so the batches are the same with any ``num_workers`` and after a resume.
    The loader's own ``torch.Generator`` (seeded from ``seed``, ``rank`` and ``start_iter``;
    it only seeds the worker processes, whose RNGs are reseeded per sample anyway) means that
    creating and iterating the loader never draws from the global RNG, which the trainer
    restores exactly on resume.

    Samples whose loading raises DataError are skipped with one warning each; more than
    ``max_skip_fraction`` of the dataset's samples bad raises DataError.

    Raises:
        DataError: the dataset is smaller than one global batch; too many bad samples (while
            iterating).
    """
    n = _length(dataset)
    if n < global_batch_size:
        raise DataError(
            f"training dataset {_dataset_name(dataset)} has {n} samples, fewer than "
            f"one global batch (train.batch_size={global_batch_size})"
        )
    sampler = _KeyedBatchSampler(
        n,
        global_batch_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        start_iter=start_iter,
        shuffle=shuffle,
    )
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(rank) * 7_919 + int(start_iter)) % (2**63))
    return SkippingDataLoader(
        dataset,
        seed=seed,
        collate_fn=collate_fn,
        max_skip_fraction=max_skip_fraction,
        setting="train.max_skip_fraction",
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=g,
        persistent_workers=False,
    )


def build_eval_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] = collate,
    pin_memory: bool = False,
    max_skip_fraction: float = 1.0,
) -> SkippingDataLoader:
    """A loader over this rank's strided shard of ``dataset`` (in order, no duplicates).

    Samples whose loading raises DataError are skipped with one warning each (every other
    sample is still visited exactly once). The default ``max_skip_fraction=1.0`` never stops:
    an evaluation at the end of training should not lose the run over a few bad images; pass a
    smaller fraction to refuse metrics computed on too few of them.
    """
    n = _length(dataset)
    g = torch.Generator()
    g.manual_seed(int(rank))
    return SkippingDataLoader(
        dataset,
        seed=0,
        collate_fn=collate_fn,
        max_skip_fraction=max_skip_fraction,
        batch_size=max(1, int(batch_size)),
        sampler=ShardedSampler(n, rank, world_size),
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=g,
        drop_last=False,
    )
