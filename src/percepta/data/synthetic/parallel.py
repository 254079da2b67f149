"""One worker mechanism for the built-in data generators: an ordered map over a process pool.

Each generator renders independent images from ``(seed, index, ...)`` tasks, so the output does
not depend on the number of workers; results come back in task order (``Pool.imap``), with a
progress bar. ``fork`` where the platform has it (the workers inherit the imported modules);
in a daemon process (which may not have children) or with one worker, a plain loop.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["ordered_map"]

T = TypeVar("T")


def ordered_map(
    fn: Callable[[Any], T],
    tasks: Sequence[Any],
    workers: int,
    progress: bool,
    desc: str,
    unit: str = "img",
    chunksize: int | None = None,
) -> list[T]:
    """``[fn(t) for t in tasks]``, over ``workers`` processes when more than one
    (``chunksize`` tasks per hand-out; default: about four hand-outs per worker, at most 32)."""
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress)
    results: list[T] = []
    try:
        if workers <= 1 or mp.current_process().daemon:  # daemons may not have children
            for t in tasks:
                results.append(fn(t))
                bar.update()
        else:
            method = "fork" if "fork" in mp.get_all_start_methods() else None
            chunk = chunksize or max(1, min(32, len(tasks) // (workers * 4)))
            with mp.get_context(method).Pool(workers) as pool:
                for r in pool.imap(fn, tasks, chunksize=chunk):
                    results.append(r)
                    bar.update()
    finally:
        bar.close()
    return results
