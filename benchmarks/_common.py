"""What every benchmark script shares: the machine description and the JSON-line printer.

Each ``bench_*.py`` imports this module from its own folder, whatever the current directory
(``python /abs/path/benchmarks/bench_x.py`` and ``percepta bench`` outside the checkout work):

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/ itself
    from _common import emit, machine

The leading underscore keeps it out of the ``bench_*.py`` glob that ``make bench`` and
``percepta bench`` run. Output convention (``benchmarks/README.md``): one JSON object per line
with ``bench``, ``ours`` and ``baseline`` (seconds) and ``ratio = baseline / ours`` (above 1:
ours is faster), then any details.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from typing import Any

__all__ = ["machine", "emit"]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        module = sys.modules.get(package.replace("-", "_"))
        return str(getattr(module, "__version__", "?"))


def machine(*packages: str, **extra: Any) -> dict[str, Any]:
    """Where the numbers come from: platform, CPU count, load, Python, the versions of
    ``packages`` (distribution names, e.g. ``"torch"``, ``"faster-coco-eval"``), torch's thread
    count when torch is in use, then ``extra`` (e.g. ``threads=4``)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
    }
    info.update({p: _version(p) for p in packages})
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    info.update(extra)
    return info


def emit(
    bench: str, ours: float, baseline: float, ratio: float | None = None, **details: Any
) -> dict[str, Any]:
    """Print one JSON line ``{"bench", "ours", "baseline", "ratio", **details}`` (flushed) and
    return it; ``ratio`` defaults to ``baseline / ours`` (``None`` when ``ours`` is 0)."""
    if ratio is None:
        ratio = baseline / ours if ours > 0 else None
    row = {"bench": bench, "ours": ours, "baseline": baseline, "ratio": ratio, **details}
    print(json.dumps(row), flush=True)
    return row
