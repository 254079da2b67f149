"""Checkpoints: atomic writes, validated ``weights_only`` loading, RNG capture, model rebuilding.

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
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from percepta.errors import CheckpointError

__all__ = [
    "FORMAT",
    "VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "check_task",
    "load_config",
    "load_model",
    "model_state_from_checkpoint",
    "load_model_weights",
    "capture_rng",
    "restore_rng",
]

FORMAT = "percepta-checkpoint"
VERSION = 1
_REQUIRED = ("task", "config", "model")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + flush + fsync + ``os.replace``).

    Raises:
        CheckpointError: the write failed (disk full, permissions...); the message names the
            path, the previous file at ``path`` is unchanged and no temporary file is left.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e}") from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            hint = " (disk full)" if e.errno == errno.ENOSPC else ""
            raise CheckpointError(f"cannot write checkpoint {path}{hint}: {e}; the previous "
                                  f"checkpoint there (if any) is unchanged") from e
        raise
    try:  # make the rename itself durable (POSIX); best effort
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


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
                f"(weights_only) loading refuses, so it is not a percepta checkpoint") from None
        raise CheckpointError(f"cannot read checkpoint {path}: the file is corrupt or "
                              f"truncated (unreadable pickle data)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            IndexError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: the file is corrupt or "
                              f"truncated ({type(e).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a percepta checkpoint (no 'format': {FORMAT!r} entry); percepta "
            f"writes its checkpoints with `percepta train`")
    version = ckpt.get("version")
    if version != VERSION:
        import percepta

        raise CheckpointError(f"checkpoint {path} has format version {version!r}; this percepta "
                              f"({percepta.__version__}) reads version {VERSION}")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}; it is incomplete")
    return ckpt


def check_task(ckpt: dict[str, Any], expected_task: str,
               source: str | os.PathLike | None = None) -> None:
    """Refuse a checkpoint trained for another task (detection, scene_graph, quality)."""
    task = ckpt.get("task")
    if task != expected_task:
        where = f" {source}" if source is not None else ""
        raise CheckpointError(f"checkpoint{where} was trained for task {task!r}, but this run is "
                              f"a {expected_task!r} run; use a {expected_task} checkpoint")


def model_state_from_checkpoint(ckpt: dict[str, Any], prefer_ema: bool = True) -> dict[str, Any]:
    """The model weights to use for inference: the EMA weights when present, else the raw ones.

    The ``ema`` entry is an ``AveragedModel`` state dict (``module.*`` plus ``n_averaged``).
    """
    ema = ckpt.get("ema")
    if prefer_ema and ema:
        return {k[len("module."):]: v for k, v in ema.items() if k.startswith("module.")}
    return ckpt["model"]


def load_config(path: str | os.PathLike) -> Any:
    """The validated experiment config embedded in checkpoint ``path``."""
    from percepta.config import from_dict

    ckpt = load_checkpoint(path)
    return from_dict(ckpt["config"], source=f"config embedded in {path}")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               eval_mode: bool = True) -> nn.Module:
    """Rebuild the model of checkpoint ``path`` from its embedded config and load its weights.

    The EMA weights are used when the run kept an EMA. The config is attached to the model as
    ``model.percepta_config``.
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    return model_from_checkpoint(ckpt, path, device=device, eval_mode=eval_mode)


def model_from_checkpoint(ckpt: dict, source: str | os.PathLike, cfg: Any = None,
                          device: str | torch.device = "cpu", eval_mode: bool = True) -> nn.Module:
    """Build the model of an already loaded checkpoint (``cfg``: its config, default embedded)."""
    from percepta.config import from_dict
    from percepta.engine.build import build_model

    if cfg is None:
        cfg = from_dict(ckpt["config"], source=f"config embedded in {source}")
    model = build_model(cfg)
    try:
        model.load_state_dict(model_state_from_checkpoint(ckpt))
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {source}: weights do not fit the model its config "
                              f"builds: {str(e).splitlines()[0]}") from None
    model.percepta_config = cfg  # type: ignore[attr-defined]
    model.to(device)
    model.train(not eval_mode)
    return model


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
        bad = sorted(set(state) - set(usable))[:5]
        raise CheckpointError(f"{path}: weights {bad} do not fit the model")
    if not usable:
        raise CheckpointError(f"{path}: no weight matches the model (names or shapes differ)")
    result = model.load_state_dict(usable, strict=False)
    return {"missing": list(result.missing_keys), "unexpected": sorted(set(state) - set(usable)),
            "loaded": len(usable)}


# --------------------------------------------------------------------------------------------
# RNG states as weights_only-loadable values


def capture_rng() -> dict[str, Any]:
    """The python, numpy, torch CPU and CUDA RNG states as tensors/lists/ints."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {"version": int(py_version),
                   "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": py_gauss},
        "numpy": {"name": str(np_name),
                  "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                  "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Set the RNG states captured by :func:`capture_rng`."""
    py = rng["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"].tolist()),
                     py["gauss_next"]))
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].cpu().numpy().astype(np.uint32), int(n["pos"]),
                         int(n["has_gauss"]), float(n["cached_gaussian"])))
    torch.set_rng_state(rng["torch"].cpu())
    cuda = rng.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
