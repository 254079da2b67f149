"""JSON in and out: the one JSON-safe conversion (writing) and the one JSON file reader.

Writing (:func:`to_jsonable`, for metrics, logs, CLI ``--json`` output): tensors/arrays become
(nested) lists, numpy/torch scalars become Python numbers, non-finite floats become ``None``
(printed as ``null``), mapping keys become strings.

Reading (:func:`read_json`, for every JSON file a user hands us: COCO annotations and results,
score files, scene-graph results): a missing, unreadable, empty, non-UTF-8 or malformed file
raises one :class:`~percepta.errors.DataError` line that names the file, what it was expected to
be and, for malformed JSON, the line and column (also on the exception as ``lineno``/``colno``,
see :class:`InvalidJsonError`). Python's parser is used as is, so the ``NaN``/``Infinity``
tokens that ``json.dumps`` writes are accepted; the validators of each format decide whether a
non-finite number is allowed where it appears.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from percepta.errors import DataError

__all__ = ["to_jsonable", "read_json", "InvalidJsonError", "finite_or_none"]


class InvalidJsonError(DataError):
    """Malformed JSON; ``file``, ``lineno`` and ``colno`` locate the first syntax error."""

    def __init__(self, message: str, file: str, lineno: int, colno: int) -> None:
        super().__init__(message)
        self.file, self.lineno, self.colno = file, lineno, colno


def read_json(
    path: str | os.PathLike, what: str, *, text: str | bytes | None = None, empty_hint: str = ""
) -> Any:
    """Parse the JSON file ``path`` (a ``what`` file, e.g. ``"COCO annotation"``).

    Args:
        path: the file; named in every error.
        what: what the file should be, for the messages ("results", "score", ...).
        text: the file's content when the caller has already read it (then ``path`` only names
            it in errors).
        empty_hint: appended to the "file is empty" message (e.g. what an empty result is).

    Raises:
        DataError: missing file, a folder, unreadable, empty, not UTF-8;
            :class:`InvalidJsonError` (a DataError) for malformed JSON, with line and column.
    """
    p = Path(path)
    if text is None:
        if not p.exists():
            raise DataError(f"{p}: {what} file not found")
        if p.is_dir():
            raise DataError(f"{p}: expected a {what} JSON file, got a folder")
        try:
            text = p.read_bytes()
        except OSError as e:
            raise DataError(f"{p}: cannot read the {what} file ({e.strerror or e})") from None
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")  # RFC 8259: UTF-8; a leading BOM is tolerated
        except UnicodeDecodeError as e:
            raise DataError(
                f"{p}: the {what} file is not UTF-8 text ({e.reason} at byte {e.start})"
            ) from None
    if not text.strip():
        raise DataError(f"{p}: the {what} file is empty{empty_hint}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidJsonError(
            f"{p}: invalid JSON at line {e.lineno} col {e.colno} ({e.msg}); "
            f"is the {what} file truncated or not JSON?",
            str(p),
            e.lineno,
            e.colno,
        ) from None


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


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is missing, not a number or NaN (a metric a
    run could not compute), so that a metrics file stays valid JSON."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if f != f else f
