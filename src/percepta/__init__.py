"""percepta: detection, scene graphs and image quality with one engine, config and evaluation.

Public API (kept small):

- :func:`load` — rebuild a trained model from a checkpoint (the config is embedded in it).
- :func:`build_model` — build a model from a config (``percepta.config.load``) or its ``model``
  section.
- :data:`__version__`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load", "build_model"]


def build_model(cfg: Any) -> Any:
    """Build the model named by ``cfg.model.name`` (or by ``cfg.name`` for a model section)."""
    from percepta.components import build_model as _build

    return _build(cfg)


def load(checkpoint: str, device: str = "cpu", eval_mode: bool = True) -> Any:
    """Rebuild the model stored in ``checkpoint`` (weights and embedded config), on ``device``."""
    from percepta.checkpoints import load_model

    return load_model(checkpoint, device=device, eval_mode=eval_mode)
