"""percepta.quality: IQT and TRIQ, IQA metrics, prediction and attention maps.

:func:`load` (``percepta.quality.load(checkpoint)(image[, reference]) -> score``) is imported
lazily, so ``import percepta.quality`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load"]


def __getattr__(name: str) -> Any:
    if name == "load":
        from percepta.quality.predict import load

        return load
    raise AttributeError(f"module 'percepta.quality' has no attribute {name!r}")
