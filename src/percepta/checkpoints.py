"""Checkpoints: atomic writes, validated ``weights_only`` loading, model rebuilding.

The public checkpoint API below the tasks (``cli -> engine -> tasks -> checkpoints``): tasks
read checkpoints and rebuild models through it; the engine adds RNG capture
(:mod:`percepta.engine.checkpoint`).

A checkpoint is a plain dict that ``torch.load(weights_only=True)`` can read (tensors, numbers,
strings, lists, dicts, ``None``; no pickled classes)::

    {"format": "percepta-checkpoint", "version": 1, "percepta_version": str, "task": str,
     "config": dict (config.to_dict), "model": state_dict, "optimizer", "scheduler", "scaler",
     "ema": state_dict | None, "iteration": int, "epoch": int, "rng": {...},
     "nonfinite_count": int, "best": {...}}

Writes go to a temporary file in the destination folder, are flushed and fsync'ed, then
``os.replace``'d over the target, so a crash or a full disk never leaves a half-written
``last.pt``: the previous file stays intact.
"""

from __future__ import annotations

import errno
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from percepta.atomic import atomic_write
from percepta.errors import CheckpointError

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
]

FORMAT = "percepta-checkpoint"
VERSION = 1
_REQUIRED = ("task", "config", "model")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (:func:`percepta.atomic.atomic_write`).

    Raises:
        CheckpointError: the write failed (disk full, permissions...); the message names the
            path, the previous file at ``path`` is unchanged and no temporary file is left.
    """
    path = Path(path)
    try:
        return atomic_write(path, lambda f: torch.save(state, f))
    except OSError as e:
        hint = " (disk full)" if e.errno == errno.ENOSPC else ""
        raise CheckpointError(
            f"cannot write checkpoint {path}{hint}: {e}; the previous "
            f"checkpoint there (if any) is unchanged"
        ) from e


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and validate a percepta checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: the file is missing, corrupt or truncated, not a percepta checkpoint,
            or of another format version; the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Unsupported global" in text:  # a pickled class: refused by weights_only loading
            name = text.split("Unsupported global:", 1)[1].strip().split(" was ")[0]
            raise CheckpointError(
                f"cannot read checkpoint {path}: it contains Python objects ({name}) that safe "
                f"(weights_only) loading refuses, so it is not a percepta checkpoint"
            ) from None
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupt or "
            f"truncated (unreadable pickle data)"
        ) from None
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        KeyError,
        IndexError,
        TypeError,
    ) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupt or "
            f"truncated ({type(e).__name__}: {first})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a percepta checkpoint (no 'format': {FORMAT!r} entry); percepta "
            f"writes its checkpoints with `percepta train`"
        )
    version = ckpt.get("version")
    if version != VERSION:
        import percepta

        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this percepta "
            f"({percepta.__version__}) reads version {VERSION}"
        )
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}; it is incomplete")
    return ckpt


def check_task(
    ckpt: dict[str, Any], expected_task: str, source: str | os.PathLike | None = None
) -> None:
    """Refuse a checkpoint trained for another task than ``expected_task``."""
    task = ckpt.get("task")
    if task != expected_task:
        where = f" {source}" if source is not None else ""
        raise CheckpointError(
            f"checkpoint{where} was trained for task {task!r}, but this run is "
            f"a {expected_task!r} run; use a {expected_task} checkpoint"
        )


def model_state_from_checkpoint(ckpt: dict[str, Any], prefer_ema: bool = True) -> dict[str, Any]:
    """The model weights to use for inference: the EMA weights when present, else the raw ones.

    The ``ema`` entry is an ``AveragedModel`` state dict (``module.*`` plus ``n_averaged``).
    """
    ema = ckpt.get("ema")
    if prefer_ema and ema:
        return {k[len("module.") :]: v for k, v in ema.items() if k.startswith("module.")}
    return ckpt["model"]


def load_config(path: str | os.PathLike) -> Any:
    """The validated experiment config embedded in checkpoint ``path``."""
    from percepta.config import from_dict

    ckpt = load_checkpoint(path)
    return from_dict(ckpt["config"], source=f"config embedded in {path}")


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", eval_mode: bool = True
) -> nn.Module:
    """Rebuild the model of checkpoint ``path`` from its embedded config and load its weights.

    The EMA weights are used when the run kept an EMA. The config is attached to the model as
    ``model.percepta_config``.
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    return model_from_checkpoint(ckpt, path, device=device, eval_mode=eval_mode)


def model_from_checkpoint(
    ckpt: dict,
    source: str | os.PathLike,
    cfg: Any = None,
    device: str | torch.device = "cpu",
    eval_mode: bool = True,
) -> nn.Module:
    """Build the model of an already loaded checkpoint (``cfg``: its config, default embedded)."""
    from percepta.components import build_model
    from percepta.config import from_dict

    if cfg is None:
        cfg = from_dict(ckpt["config"], source=f"config embedded in {source}")
    model = build_model(cfg)
    state = model_state_from_checkpoint(ckpt)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = describe_mismatch(model.state_dict(), state) or str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {source}: weights do not fit the model its config builds: {detail}"
        ) from None
    model.percepta_config = cfg  # type: ignore[attr-defined]
    model.to(device)
    model.train(not eval_mode)
    return model


def _listed(keys: list[str], n: int) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def describe_mismatch(own: dict[str, Any], state: dict[str, Any], n: int = 3) -> str:
    """One line on how ``state`` differs from a model's ``own`` state dict ('' if it fits).

    Counts and the first ``n`` names of the missing keys (in the model, not in ``state``), the
    unexpected keys (in ``state`` only) and the shape mismatches, with both shapes.
    """
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} (checkpoint {list(getattr(state[k], 'shape', []))}, model {list(own[k].shape)})"
        for k in own
        if k in state and getattr(state[k], "shape", None) != own[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_listed(missing, n)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_listed(unexpected, n)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: {_listed(shapes, n)}")
    return "; ".join(parts)


def load_model_weights(model: nn.Module, path: str | os.PathLike, strict: bool = False) -> dict:
    """Initialise ``model`` from the (EMA if present) weights of a checkpoint (``init_weights``).

    Accepts a percepta checkpoint or a plain state dict (``weights_only``). With
    ``strict=False`` missing/unexpected keys are allowed but at least one tensor must match.

    Returns:
        ``{"missing": [...], "unexpected": [...], "loaded": n}``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"init_weights checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        raise CheckpointError(f"cannot read init_weights checkpoint {path}: {first}") from None
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        if raw.get("version") != VERSION or "model" not in raw:
            load_checkpoint(path)  # raises the precise error
        state = model_state_from_checkpoint(raw)
    elif isinstance(raw, dict) and all(isinstance(v, torch.Tensor) for v in raw.values()):
        state = raw
    else:
        raise CheckpointError(f"{path} is neither a percepta checkpoint nor a state dict")
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if strict and len(usable) != len(state):
        raise CheckpointError(
            f"{path}: weights do not fit the model: {describe_mismatch(own, state)}"
        )
    if not usable:
        raise CheckpointError(
            f"{path}: no weight matches the model (names or shapes differ): "
            f"{describe_mismatch(own, state)}"
        )
    result = model.load_state_dict(usable, strict=False)
    return {
        "missing": list(result.missing_keys),
        "unexpected": sorted(set(state) - set(usable)),
        "loaded": len(usable),
    }
