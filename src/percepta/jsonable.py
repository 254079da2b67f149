"""JSON-safe conversion of nested results (metrics, logs, CLI ``--json`` output).

One rule everywhere: tensors/arrays become (nested) lists, numpy/torch scalars become Python
numbers, non-finite floats become ``None`` (printed as ``null``), mapping keys become strings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """Return a structure ``json.dumps(..., allow_nan=False)`` accepts (see module docstring)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu()
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
