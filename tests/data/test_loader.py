"""The resumable distributed batch sampler and the loaders built on it."""

from __future__ import annotations

import itertools

import pytest
import torch

from percepta.data.loader import (
    ResumableBatchSampler,
    ShardedSampler,
    build_eval_loader,
    build_train_loader,
)
from percepta.errors import DataError


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


@pytest.mark.parametrize("world_size", [2, 3])
def test_union_of_rank_batches_is_the_single_process_batch(world_size):
    n, batch, iters = 23, 6, 12  # 3 batches per epoch, tail of 5 dropped, 4 epochs
    single = _take(ResumableBatchSampler(n, batch, seed=7), iters)
    ranks = [
        _take(ResumableBatchSampler(n, batch, seed=7, rank=r, world_size=world_size), iters)
        for r in range(world_size)
    ]
    for i in range(iters):
        parts = [ranks[r][i] for r in range(world_size)]
        assert all(len(p) == batch // world_size for p in parts)
        merged = [x for p in parts for x in p]
        assert len(set(merged)) == batch  # disjoint shards
        assert sorted(merged) == sorted(single[i])
        # strided: rank r holds positions r, r+W, ... of the global batch
        for r in range(world_size):
            assert parts[r] == single[i][r::world_size]


def test_epochs_are_permutations_that_drop_the_tail_and_advance():
    n, batch = 23, 6
    s = ResumableBatchSampler(n, batch, seed=3)
    batches = _take(s, 6)
    epoch0 = [x for b in batches[:3] for x in b]
    epoch1 = [x for b in batches[3:] for x in b]
    assert len(set(epoch0)) == 18 and len(set(epoch1)) == 18
    assert epoch0 == s.permutation(0)[:18].tolist()
    assert epoch1 == s.permutation(1)[:18].tolist()
    assert epoch0 != epoch1
    expected0 = torch.randperm(n, generator=torch.Generator().manual_seed(3))[:18].tolist()
    assert epoch0 == expected0  # (seed, epoch) -> torch.randperm, independent of the sampler
    assert _take(ResumableBatchSampler(n, batch, seed=4), 3) != batches[:3]
    assert s.batches_per_epoch == len(s) == 3


@pytest.mark.parametrize("start", [0, 1, 3, 5, 7])
def test_start_offset_resumes_without_replay(start):
    full = _take(ResumableBatchSampler(20, 4, seed=1, rank=1, world_size=2), 12)
    resumed = _take(
        ResumableBatchSampler(20, 4, seed=1, rank=1, world_size=2, start_iter=start), 12 - start
    )
    assert resumed == full[start:]


def test_sampler_argument_errors():
    with pytest.raises(ValueError, match="not divisible"):
        ResumableBatchSampler(20, 5, world_size=2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableBatchSampler(3, 4)


def test_sharded_sampler_splits_without_padding():
    shards = [list(ShardedSampler(11, r, 3)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 3]
    assert sorted(x for s in shards for x in s) == list(range(11))
    assert [len(ShardedSampler(11, r, 3)) for r in range(3)] == [4, 4, 3]


class Items(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.full((3, 2, 2), float(i)), {"image_id": i}


def test_train_loader_yields_global_batches_and_leaves_global_rng_alone():
    ds = Items(10)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    loader = build_train_loader(ds, 4, seed=5, rank=0, world_size=2, start_iter=2)
    got = list(itertools.islice(iter(loader), 3))
    assert torch.equal(torch.get_rng_state(), before)
    ref = ResumableBatchSampler(10, 4, seed=5)
    for k, (images, targets) in enumerate(got):
        expected = ref.global_batch(2 + k)[0::2]
        assert [t["image_id"] for t in targets] == expected
        assert [int(im[0, 0, 0]) for im in images] == expected
    with pytest.raises(DataError, match="has 3 samples, fewer than one global batch"):
        build_train_loader(Items(3), 4)


def test_eval_loader_covers_each_shard_once_in_order():
    ds = Items(7)
    ids = []
    for r in range(2):
        for _, targets in build_eval_loader(ds, 2, rank=r, world_size=2):
            ids.append((r, [t["image_id"] for t in targets]))
    assert ids == [(0, [0, 2]), (0, [4, 6]), (1, [1, 3]), (1, [5])]


class RandomItems(Items):
    """``Items`` whose "augmentation" draws from torch, numpy and Python's ``random``.

    The draws are integers, so batches compare exactly.
    """

    def __getitem__(self, i):
        import random

        import numpy as np

        draws = [
            int(torch.randint(0, 2**31 - 1, ())),
            int(np.random.randint(0, 2**31 - 1)),
            random.randrange(2**31 - 1),
        ]
        return torch.tensor([i, *draws]), {"image_id": i}


def _draws(loader, n_batches):
    return [torch.stack(images).tolist() for images, _ in itertools.islice(iter(loader), n_batches)]


def test_augmentation_is_the_same_with_0_or_2_workers_and_after_a_resume():
    ds = RandomItems(10)  # batch 4: 2 batches per epoch, 8 batches = 4 epochs
    torch.manual_seed(0)
    before = torch.get_rng_state()
    ref = _draws(build_train_loader(ds, 4, seed=5, num_workers=0), 8)
    assert torch.equal(torch.get_rng_state(), before)  # augmentation kept off the global RNG
    assert _draws(build_train_loader(ds, 4, seed=5, num_workers=2), 8) == ref
    assert _draws(build_train_loader(ds, 4, seed=5, num_workers=2, start_iter=3), 5) == ref[3:]
    assert _draws(build_train_loader(ds, 4, seed=5, num_workers=0, start_iter=3), 5) == ref[3:]
    # the draws vary with the sample and the epoch (not one seed for everything)
    rows = [row for batch in ref for row in batch]
    by_index: dict[int, list] = {}
    for row in rows:
        by_index.setdefault(row[0], []).append(tuple(row[1:]))
    assert len({tuple(r[1:]) for r in rows}) == len(rows)
    assert any(len(v) > 1 for v in by_index.values())
    assert _draws(build_train_loader(ds, 4, seed=6, num_workers=0), 1) != ref[:1]
