"""QualityEvaluator under torch.distributed: 2 gloo processes on CPU, states gathered with "cat"."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from percepta.quality.evaluation import QualityEvaluator, quality_metrics

pytestmark = [pytest.mark.dist]

RNG = np.random.default_rng(1)
X = RNG.uniform(0, 1, 30)
Y = 1 + 4 / (1 + np.exp(-(X - 0.5) / 0.15)) + RNG.normal(0, 0.3, 30)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ev = QualityEvaluator(fit="logistic4")
        # uneven shards: rank 0 gets 20 images, rank 1 gets 10
        sl = slice(0, 20) if rank == 0 else slice(20, 30)
        ev.update(torch.tensor(X[sl]), [{"score": float(v)} for v in Y[sl]])
        res = ev.compute()
        torch.save(
            {k: res[k] for k in ("n", "srocc", "krocc", "plcc", "plcc_logistic4")},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")
def test_two_processes_agree_with_single_process(tmp_path):
    # fork: the children reuse the imported modules (spawn would re-import torch twice)
    mp.start_processes(
        _worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    ref = quality_metrics(X, Y, fit="logistic4")
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["n"] == 30
        for k in ("srocc", "krocc", "plcc"):
            assert got[k] == pytest.approx(ref[k], abs=1e-12), k
        # Gather order may differ from the single-process order; the fit does not depend on it
        # beyond round-off.
        assert got["plcc_logistic4"] == pytest.approx(ref["plcc_logistic4"], abs=1e-9)
