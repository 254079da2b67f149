"""Engine side of checkpoints: RNG states as ``weights_only``-loadable values, plus the public
checkpoint API of :mod:`percepta.checkpoints` (re-exported for the engine's callers)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from percepta.checkpoints import (  # noqa: F401  (re-exported)
    FORMAT,
    VERSION,
    check_task,
    describe_mismatch,
    load_checkpoint,
    load_config,
    load_model,
    load_model_weights,
    model_from_checkpoint,
    model_state_from_checkpoint,
    save_checkpoint,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "check_task",
    "load_config",
    "load_model",
    "model_from_checkpoint",
    "model_state_from_checkpoint",
    "load_model_weights",
    "describe_mismatch",
    "capture_rng",
    "restore_rng",
]


# --------------------------------------------------------------------------------------------
# RNG states as weights_only-loadable values


def capture_rng() -> dict[str, Any]:
    """The python, numpy, torch CPU and CUDA RNG states as tensors/lists/ints."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Set the RNG states captured by :func:`capture_rng`."""
    py = rng["python"]
    random.setstate(
        (int(py["version"]), tuple(int(x) for x in py["state"].tolist()), py["gauss_next"])
    )
    n = rng["numpy"]
    np.random.set_state(
        (
            n["name"],
            n["keys"].cpu().numpy().astype(np.uint32),
            int(n["pos"]),
            int(n["has_gauss"]),
            float(n["cached_gaussian"]),
        )
    )
    torch.set_rng_state(rng["torch"].cpu())
    cuda = rng.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
