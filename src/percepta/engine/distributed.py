"""Process and device set-up: torchrun process groups, devices, seeding, moving batches.

``torchrun --nproc_per_node N -m percepta train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` for every process; :func:`init_from_env`
reads them and opens the default process group (``nccl`` on CUDA, ``gloo`` on CPU). Everything
else here is a thin, safe-when-not-distributed wrapper around ``torch.distributed`` so that the
trainer can call the same code in single- and multi-process runs.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "init_from_env",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "get_local_rank",
    "is_main_process",
    "barrier",
    "all_reduce_mean",
    "all_reduce_sum",
    "all_reduce_min",
    "all_gather_object",
    "broadcast_object",
    "cleanup",
    "resolve_device",
    "move_to_device",
    "set_seed",
]


@dataclass(frozen=True)
class DistInfo:
    """This process: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        from percepta.errors import PerceptaError

        raise PerceptaError(f"environment variable {name}={value!r} is not an integer") from None


def init_from_env(
    backend: str | None = None, device: str | None = None, timeout_s: float = 1800.0
) -> DistInfo:
    """Open the default process group from torchrun's environment variables.

    A no-op (returning rank 0 of 1) when ``WORLD_SIZE`` is absent or 1, or when a process group
    is already open. ``backend`` defaults to ``nccl`` when CUDA is available (and ``device``,
    e.g. ``cfg.train.device``, does not say ``cpu``) and ``gloo`` otherwise; with ``nccl`` the
    process is pinned to ``cuda:LOCAL_RANK`` first.

    Args:
        backend: force ``"gloo"`` or ``"nccl"``.
        device: the training device setting (``auto``, ``cpu``, ``cuda``...), if known.
        timeout_s: collective timeout.

    Returns:
        The :class:`DistInfo` of this process.
    """
    if dist.is_available() and dist.is_initialized():
        return info()
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo()
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if backend is None:
        wants_cpu = device is not None and str(device).strip().lower().startswith("cpu")
        backend = "nccl" if torch.cuda.is_available() and not wants_cpu else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        kwargs["device_id"] = torch.device("cuda", local_rank)
    dist.init_process_group(
        backend=backend,
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
        **kwargs,
    )
    return info()


def is_distributed() -> bool:
    """True inside an open process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_local_rank() -> int:
    return _env_int("LOCAL_RANK", 0) if is_distributed() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def info() -> DistInfo:
    """The :class:`DistInfo` of this process (rank 0 of 1 when not distributed)."""
    if not is_distributed():
        return DistInfo()
    return DistInfo(get_rank(), get_world_size(), get_local_rank(), str(dist.get_backend()))


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over all processes (a copy; ``t`` itself when not distributed)."""
    if not is_distributed():
        return t
    out = (
        t.detach()
        .to(
            _collective_device(), dtype=torch.float64 if t.dtype == torch.float64 else torch.float32
        )
        .clone()
    )
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return (out / get_world_size()).to(t.device)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over all processes (float64 for float input; ``t`` when not distributed)."""
    if not is_distributed():
        return t
    dtype = torch.float64 if t.is_floating_point() else torch.int64
    out = t.detach().to(_collective_device(), dtype=dtype).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(t.device)


def all_reduce_min(value: int) -> int:
    """Minimum of an integer over all processes (e.g. an "all ranks are fine" flag)."""
    if not is_distributed():
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup() -> None:
    """Close the default process group if one is open."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(spec: str, local_rank: int | None = None) -> torch.device:
    """``train.device`` to a device: ``auto`` -> ``cuda:<local rank>`` when CUDA is available,
    else ``cpu``; ``cuda`` -> ``cuda:<local rank>``; ``cpu`` and ``cuda:N`` as given."""
    from percepta.errors import ConfigError

    local_rank = get_local_rank() if local_rank is None else local_rank
    spec = str(spec).strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device={spec!r} but CUDA is not available; use train.device=cpu (or auto)"
        )
    if spec == "cuda":
        return torch.device("cuda", local_rank)
    try:
        return torch.device(spec)
    except RuntimeError:
        raise ConfigError(
            f"train.device={spec!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None


def set_seed(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def move_to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move tensors (in dicts, lists and tuples too) to ``device``; tv_tensors keep their type."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return type(obj)((k, move_to_device(v, device, non_blocking)) for k, v in obj.items())
    if isinstance(obj, list):
        return [move_to_device(v, device, non_blocking) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(move_to_device(v, device, non_blocking) for v in obj)
    return obj
