"""Who owns an output folder: the built-in generators never mix their data with another's.

A folder a generator wrote holds ``synth_meta.json`` naming its task. Re-running the same task
may replace its files; another task's folder, or one holding files without that marker (a
user's own data), is refused with one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from percepta.errors import DataError

__all__ = ["META_NAME", "owned_by", "refuse_foreign_files"]

META_NAME = "synth_meta.json"


def owned_by(out: Path, task: str) -> bool:
    """True if ``out`` holds the built-in ``task`` dataset, False if it holds no built-in data;
    :class:`DataError` if it holds another task's (a marker without a task: detection, the
    first generator's format)."""
    meta = out / META_NAME
    if not meta.exists():
        return False
    try:
        found = json.loads(meta.read_text())["options"]["task"]
    except (OSError, ValueError, KeyError, TypeError):
        found = "detection"
    if found != task:
        raise DataError(
            f"{out} holds the built-in {found} dataset ({meta}); write the {task} dataset to "
            "another --out folder"
        )
    return True


def refuse_foreign_files(out: Path, subfolders: Iterable[str]) -> None:
    """:class:`DataError` if a ``subfolder`` of ``out`` (with no marker) already holds files."""
    for sub in subfolders:
        d = out / sub
        if d.is_dir() and any(d.iterdir()):
            raise DataError(
                f"{d} already holds files that percepta did not generate (no {META_NAME} "
                "beside it); choose an empty or new --out folder"
            )
