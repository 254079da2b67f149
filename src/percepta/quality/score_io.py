"""Read per-image score files (predictions and human MOS/DMOS) and pair them by image id.

Formats (chosen by the file suffix; any other suffix is sniffed: ``{``/``[`` first means JSON):

- **CSV** (``.csv``; ``.tsv`` is tab-separated), with a header row. Columns are matched by name,
  in any order, extra columns are ignored:

  - predictions: ``image,score``
  - human scores: ``image,mos`` and optionally ``mos_std`` (the layout of LIVE-Challenge's
    ``scores.csv``: ``image,mos,mos_std``)

- **JSON**: either a mapping ``{"<image>": <number>, ...}`` or a list of records
  ``[{"image": "<image>", "score": <number>}, ...]``; MOS records use the key ``mos`` (``score`` is
  accepted too, as in percepta's target dicts).

Image ids are compared as strings, exactly (``533.JPG`` and ``533.jpg`` differ). Every problem --
unreadable file, missing column or key, a value that is not a finite number, a duplicate image id,
ids present in one file and not in the other -- raises one :class:`percepta.errors.DataError` that
names the file and the row (CSV line number) or image.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from percepta.errors import DataError
from percepta.jsonable import read_json

__all__ = ["ScoreFile", "read_scores", "align_scores"]

Kind = Literal["pred", "mos"]
_VALUE_COLUMN = {"pred": "score", "mos": "mos"}
_WHAT = {"pred": "predictions", "mos": "human scores"}
_MAX_LISTED = 10


@dataclass
class ScoreFile:
    """Scores read from one file: ``scores[image] = value`` in file order (+ optional ``std``)."""

    path: str
    kind: str
    scores: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)


def _number(raw: Any, path: str, where: str, column: str) -> float:
    """A finite float from a CSV cell or JSON value, or a DataError naming the place."""
    if isinstance(raw, bool) or raw is None or isinstance(raw, (list, dict)):
        raise DataError(f"{path}: {where}: {column!r} must be a number, got {json.dumps(raw)}")
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            raise DataError(f"{path}: {where}: {column!r} is empty")
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"{path}: {where}: {column!r} is not a number: {raw!r}") from None
    else:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise DataError(f"{path}: {where}: {column!r} is not a number: {raw!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: {where}: {column!r} is {raw!r}; scores must be finite numbers")
    return value


def _add(out: ScoreFile, image: str, value: float, where: str, seen: dict[str, str]) -> None:
    if image in out.scores:
        raise DataError(
            f"{out.path}: {where}: duplicate image id {image!r} (first at {seen[image]})"
        )
    out.scores[image] = value
    seen[image] = where


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CSV or JSON score file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read file: {e.strerror or e}") from None


def _read_csv(path: str, text: str, kind: Kind, delimiter: str) -> ScoreFile:
    out = ScoreFile(path, kind)
    col = _VALUE_COLUMN[kind]
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    seen: dict[str, str] = {}
    try:
        for row in reader:
            line_no = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue  # blank line
            if header is None:
                header = [c.strip() for c in row]
                missing = [c for c in ("image", col) if c not in header]
                if missing:
                    raise DataError(
                        f"{path}: line {line_no}: header has no column {' or '.join(map(repr, missing))}"
                        f" (found: {', '.join(header) or 'nothing'}); {_WHAT[kind]} CSV files need "
                        f"the columns image,{col}"
                    )
                i_img, i_val = header.index("image"), header.index(col)
                i_std = header.index("mos_std") if kind == "mos" and "mos_std" in header else None
                continue
            where = f"line {line_no}"
            if len(row) < len(header):
                raise DataError(
                    f"{path}: {where}: has {len(row)} fields, the header has {len(header)}"
                )
            image = row[i_img].strip()
            if not image:
                raise DataError(f"{path}: {where}: empty 'image' id")
            value = _number(row[i_val], path, f"{where} (image {image!r})", col)
            _add(out, image, value, where, seen)
            if i_std is not None and row[i_std].strip():
                out.std[image] = _number(row[i_std], path, f"{where} (image {image!r})", "mos_std")
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV: {e}") from None
    if header is None:
        raise DataError(f"{path}: empty file; expected a header with columns image,{col}")
    return out


def _read_json(path: str, text: str, kind: Kind) -> ScoreFile:
    data = read_json(path, "score", text=text)
    out = ScoreFile(path, kind)
    seen: dict[str, str] = {}
    col = _VALUE_COLUMN[kind]
    if isinstance(data, dict):
        for image, raw in data.items():
            _add(
                out,
                str(image),
                _number(raw, path, f"image {image!r}", "value"),
                f"key {image!r}",
                seen,
            )
    elif isinstance(data, list):
        keys = ("mos", "score") if kind == "mos" else ("score",)
        for i, rec in enumerate(data):
            where = f"record {i}"
            if not isinstance(rec, dict):
                raise DataError(
                    f"{path}: {where}: expected an object with keys 'image' and {col!r}, "
                    f"got {type(rec).__name__}"
                )
            if "image" not in rec:
                raise DataError(
                    f"{path}: {where}: missing key 'image' (keys: {', '.join(rec) or 'none'})"
                )
            key = next((k for k in keys if k in rec), None)
            image = str(rec["image"])
            if key is None:
                raise DataError(
                    f"{path}: {where} (image {image!r}): missing key {col!r} "
                    f"(keys: {', '.join(rec)})"
                )
            value = _number(rec[key], path, f"{where} (image {image!r})", key)
            _add(out, image, value, where, seen)
            if kind == "mos" and "mos_std" in rec and rec["mos_std"] is not None:
                out.std[image] = _number(
                    rec["mos_std"], path, f"{where} (image {image!r})", "mos_std"
                )
    else:
        raise DataError(
            f"{path}: expected a JSON object {{image: {col}}} or a list of records, "
            f"got {type(data).__name__}"
        )
    return out


def read_scores(path: str | os.PathLike, kind: Kind) -> ScoreFile:
    """Read a predictions (``kind="pred"``) or human-score (``kind="mos"``) file.

    Args:
        path: CSV or JSON file (see the module docstring for the layouts).
        kind: ``"pred"`` (value column/key ``score``) or ``"mos"`` (``mos``, optional ``mos_std``).

    Returns:
        A :class:`ScoreFile` with at least one image.

    Raises:
        DataError: unreadable file, wrong layout, missing column/key, non-finite or non-numeric
            value, duplicate image id, or no rows; the message names the file and row/image.
    """
    if kind not in _VALUE_COLUMN:
        raise ValueError(f"kind must be 'pred' or 'mos', got {kind!r}")
    path = os.fspath(path)
    text = _read_text(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".json" or (
        suffix not in (".csv", ".tsv", ".txt") and text.lstrip()[:1] in ("{", "[")
    ):
        out = _read_json(path, text, kind)
    else:
        out = _read_csv(path, text, kind, "\t" if suffix == ".tsv" else ",")
    if not out.scores:
        raise DataError(f"{path}: no scores found (the file has no data rows)")
    return out


def _listing(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_MAX_LISTED])
    more = f" and {len(ids) - _MAX_LISTED} more" if len(ids) > _MAX_LISTED else ""
    return f"{len(ids)} ({shown}{more})"


def align_scores(pred: ScoreFile, mos: ScoreFile) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pair predictions with human scores by image id (MOS file order).

    Raises:
        DataError: when the two files do not hold the same image ids; the message lists the ids
            missing from the predictions and those missing from the MOS file.
    """
    missing_pred = [i for i in mos.scores if i not in pred.scores]
    missing_mos = [i for i in pred.scores if i not in mos.scores]
    if missing_pred or missing_mos:
        parts = []
        if missing_pred:
            parts.append(f"missing from predictions {pred.path}: {_listing(missing_pred)}")
        if missing_mos:
            parts.append(f"missing from MOS file {mos.path}: {_listing(missing_mos)}")
        raise DataError("image ids do not match; " + "; ".join(parts))
    ids = list(mos.scores)
    x = np.array([pred.scores[i] for i in ids], dtype=np.float64)
    y = np.array([mos.scores[i] for i in ids], dtype=np.float64)
    return ids, x, y
