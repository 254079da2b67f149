"""Image-quality (IQA) data: one meta-table schema, splits, checks and the dataset.

The readers of the standard datasets are in :mod:`percepta.data.iqa_readers`.

Every IQA dataset, built-in or a user's own, is described by **one csv meta table** (one row per
scored image; header required, column order free, unknown columns kept and ignored)::

    column         required  meaning
    image          yes       scored (distorted) image, path relative to the table's folder
    score          yes       quality after loading: HIGHER IS BETTER, on [score_min, score_max]
    reference      no        reference image (full-reference pairs); empty = no reference
    score_raw      no        the score as the dataset publishes it (default: score)
    raw_direction  no        "higher" or "lower": which raw values are better (default higher)
    raw_scale      no        what the raw score is, e.g. "1-5 MOS", "0-100 DMOS", "Elo"
    score_min      no        declared lower end of the score scale (default: the smallest score)
    score_max      no        declared upper end (default: the largest score)
    score_std      no        standard deviation of the ratings (same scale as score), if known
    distortion     no        distortion name ("gaussian_blur", "authentic", ...)
    level          no        distortion level, integer (0 = unknown / none)
    ref_id         no        content id used for splits (default: reference, else image)
    image_id       no        unique integer id (default: the row number, 0-based)
    split          no        an official split of the dataset (train / val / test), if any

Direction rule (the one conversion every reader applies): when the raw score is lower-is-better
(DMOS), ``score = score_min + score_max - score_raw``, i.e. the raw value mirrored inside the
declared scale, so the score keeps the raw scale's units and range and only its direction
flips (LIVE DMOS 10 on [-3, 112] -> 99; CSIQ DMOS 0.2 on [0, 1] -> 0.8). Higher-is-better raw
scores are copied unchanged. ``score_min`` / ``score_max`` are constant over a table.

Readers (``read_<name>(root) -> MetaTable``) take the dataset's folder as distributed
(layouts, scales and directions from ``../shared/notes/iqa.md`` section 4):

=============  ===============================================  =========================
reader         files read                                       raw score -> score
=============  ===============================================  =========================
kadid10k       ``dmos.csv`` (dist_img, ref_img, dmos, var),     "dmos" is a 1-5 **MOS**:
               ``images/IXX_YY_ZZ.png``                         higher, kept; std = sqrt(var)
koniq10k       ``koniq10k_scores_and_distributions.csv``        MOS 1-5, higher, kept
               (image_name, MOS, SD), ``1024x768/``; the
               official split from ``koniq10k_distributions_sets.csv`` (``set``) if present
live           ``dmos_realigned.mat`` (dmos_new, orgs) or       DMOS, lower: flipped on
               ``dmos.mat`` (dmos, orgs), ``refnames_all.mat``, [-3, 112] (realigned DMOS
               jp2k/ jpeg/ wn/ gblur/ fastfading/ imgN.bmp,      runs -2.6..111.8)
               ``refimgs/``; rows with orgs = 1 (reference copies) dropped
csiq           ``csiq.DMOS.csv`` (the official xlsx's columns    DMOS 0-1, lower: flipped
               image, dst_type, dst_lev, dmos[, dmos_std]) or     on [0, 1]
               ``csiq.DMOS.xlsx`` (needs openpyxl), ``src_imgs/``, ``dst_imgs/<type>/``
tid2013        ``mos_with_names.txt`` ("MOS name" lines),        MOS 0-9, higher, kept
               ``mos_std.txt``, ``distorted_images/``, ``reference_images/`` (case-insensitive)
pipal          ``Train_Label/*.txt`` ("name,elo" lines),         Elo, higher, kept; declared
               ``Train_Ref/``, ``Distortion_*/`` (or ``Train_Dis/``)  scale [900, 1900]
clive          ``scores.csv`` (image, mos, mos_std), ``images/``   MOS 0-100, higher, kept
biq2021        ``scores.csv`` (image_name, mos_0_1,              MOS 0-1, higher, kept
               upstream_split), ``images/`` (names with spaces)
=============  ===============================================  =========================

A reader needs only the label files; the images are checked when the table is checked
(:func:`check_table`, ``percepta data check TABLE.csv``) or loaded. :func:`write_table` writes
a reader's result as a csv in this schema (paths rewritten relative to the csv's folder).

Splits: :func:`split_folds` makes seeded k-fold splits **by content** (``ref_id``): every image
of one reference scene lands in the same fold, so no content leaks from train to test (for
no-reference data ``ref_id`` defaults to the image itself, i.e. a split by image).

The registered dataset ``iqa_table`` (:class:`IqaTableConfig`) reads a table (or, with
``reader: clive`` etc., the dataset folder as distributed: no conversion step needed) and yields
``(image uint8 [3,H,W], target)``, ``target = {"score": float32 [], "image_id": int,
"reference": uint8 [3,H,W]}`` (``reference`` only for full-reference tables), with ``meta =
{"score_range": [lo, hi], "full_reference": bool, "raw_direction", "raw_scale", ...}``.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from percepta.data.check import Problem
from percepta.errors import DataError
from percepta.registry import DATASETS

__all__ = [
    "COLUMNS",
    "IqaRecord",
    "MetaTable",
    "read_table",
    "write_table",
    "flip_score",
    "split_folds",
    "check_table",
    "cli_check_table",
    "IqaTableConfig",
    "IqaTableDataset",
    "load_table",
    "build_iqa_table",
]

COLUMNS = (
    "image",
    "reference",
    "score",
    "score_raw",
    "raw_direction",
    "raw_scale",
    "score_min",
    "score_max",
    "score_std",
    "distortion",
    "level",
    "ref_id",
    "image_id",
    "split",
)
DIRECTIONS = ("higher", "lower")


@dataclass
class IqaRecord:
    """One row of a meta table (paths relative to :attr:`MetaTable.root`)."""

    image: str
    score: float
    reference: str = ""
    score_raw: float = math.nan
    raw_direction: str = "higher"
    raw_scale: str = ""
    score_std: float = math.nan
    distortion: str = ""
    level: int = 0
    ref_id: str = ""
    image_id: int = -1
    split: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class MetaTable:
    """An IQA meta table: ``records`` whose paths are relative to ``root``.

    ``score_range`` is the declared ``(score_min, score_max)``; ``source`` names the file or
    dataset it came from (used in messages).
    """

    root: Path
    records: list[IqaRecord]
    score_range: tuple[float, float]
    source: str = ""

    def __len__(self) -> int:
        return len(self.records)

    @property
    def scores(self) -> np.ndarray:
        return np.array([r.score for r in self.records], dtype=np.float64)

    @property
    def full_reference(self) -> bool:
        """True when every row has a reference image."""
        return bool(self.records) and all(r.reference for r in self.records)

    @property
    def raw_direction(self) -> str:
        dirs = {r.raw_direction for r in self.records}
        return dirs.pop() if len(dirs) == 1 else "mixed"

    @property
    def raw_scale(self) -> str:
        scales = {r.raw_scale for r in self.records}
        return scales.pop() if len(scales) == 1 else "mixed"

    def groups(self) -> list[str]:
        """The content id of each row: ``ref_id``, else the reference, else the image."""
        return [r.ref_id or r.reference or r.image for r in self.records]


def flip_score(raw: float, lo: float, hi: float, direction: str) -> float:
    """The higher-is-better score of ``raw`` on the declared scale ``[lo, hi]`` (see module)."""
    if direction == "lower":
        return lo + hi - raw
    if direction == "higher":
        return raw
    raise DataError(f"raw_direction must be 'higher' or 'lower', not {direction!r}")


def _record(
    image: str,
    raw: float,
    lo: float,
    hi: float,
    direction: str,
    scale: str,
    **kw: Any,
) -> IqaRecord:
    raw = float(raw)
    return IqaRecord(
        image=image,
        score=flip_score(raw, lo, hi, direction),
        score_raw=raw,
        raw_direction=direction,
        raw_scale=scale,
        **kw,
    )


def _numbered(records: list[IqaRecord]) -> list[IqaRecord]:
    for i, r in enumerate(records):
        if r.image_id < 0:
            r.image_id = i
    return records


# ------------------------------------------------------------------------------------------
# csv in and out


def _float(text: str, path: Path, line: int, column: str, default: float = math.nan) -> float:
    text = (text or "").strip()
    if text == "":
        return default
    try:
        return float(text)
    except ValueError:
        raise DataError(
            f"{path}: line {line}: column {column!r} is not a number: {text!r}"
        ) from None


def _int(text: str, path: Path, line: int, column: str, default: int) -> int:
    value = _float(text, path, line, column, float(default))
    if not math.isfinite(value) or value != int(value):
        raise DataError(f"{path}: line {line}: column {column!r} is not an integer: {text!r}")
    return int(value)


def read_table(path: str | os.PathLike) -> MetaTable:
    """Read a meta-table csv (schema in the module docstring); paths stay relative to its folder.

    Raises:
        DataError: the file is missing or unreadable, lacks the ``image`` / ``score`` columns,
            or a cell is malformed (the message names the line and column).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except FileNotFoundError:
        raise DataError(f"meta table not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read the meta table ({e})") from None
    if not rows:
        raise DataError(f"{path}: the meta table has no rows (a header and one row per image)")
    missing = [c for c in ("image", "score") if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(header)}); "
            "see the meta-table schema in docs/data.md"
        )
    records, los, his = [], [], []
    for line, row in enumerate(rows, start=2):
        get = lambda c: (row.get(c) or "").strip()  # noqa: E731
        score = _float(get("score"), path, line, "score")
        if not math.isfinite(score):
            raise DataError(f"{path}: line {line}: 'score' is empty or not finite")
        direction = get("raw_direction") or "higher"
        if direction not in DIRECTIONS:
            raise DataError(
                f"{path}: line {line}: raw_direction must be 'higher' or 'lower', not {direction!r}"
            )
        los.append(_float(get("score_min"), path, line, "score_min"))
        his.append(_float(get("score_max"), path, line, "score_max"))
        records.append(
            IqaRecord(
                image=get("image"),
                score=score,
                reference=get("reference"),
                score_raw=_float(get("score_raw"), path, line, "score_raw", score),
                raw_direction=direction,
                raw_scale=get("raw_scale"),
                score_std=_float(get("score_std"), path, line, "score_std"),
                distortion=get("distortion"),
                level=_int(get("level"), path, line, "level", 0),
                ref_id=get("ref_id"),
                image_id=_int(get("image_id"), path, line, "image_id", line - 2),
                split=get("split"),
                extra={k: v for k, v in row.items() if k not in COLUMNS and k is not None},
            )
        )
    scores = [r.score for r in records]
    lo = _declared(los, min(scores), path, "score_min")
    hi = _declared(his, max(scores), path, "score_max")
    if not lo < hi:
        raise DataError(f"{path}: score_min ({lo}) must be below score_max ({hi})")
    return MetaTable(path.parent, records, (lo, hi), source=str(path))


def _declared(values: list[float], default: float, path: Path, column: str) -> float:
    given = {v for v in values if math.isfinite(v)}
    if len(given) > 1:
        raise DataError(
            f"{path}: column {column!r} must hold one value for the whole table "
            f"(found {', '.join(map(str, sorted(given)[:5]))})"
        )
    return given.pop() if given else float(default)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(round(value, 6))
    return str(value)


def write_table(table: MetaTable, path: str | os.PathLike) -> Path:
    """Write ``table`` as a meta-table csv at ``path``; image paths become relative to its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    root = Path(table.root).resolve()

    def rel(p: str) -> str:
        return Path(os.path.relpath(root / p, base)).as_posix() if p else ""

    extras = sorted({k for r in table.records for k in r.extra})
    lo, hi = table.score_range
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(COLUMNS) + extras)
        for r in _numbered(table.records):
            values = dataclasses.asdict(r)
            values.update(image=rel(r.image), reference=rel(r.reference))
            values.update(score_min=lo, score_max=hi)
            if math.isnan(r.score_raw):
                values["score_raw"] = r.score
            w.writerow([_cell(values[c]) for c in COLUMNS] + [r.extra.get(k, "") for k in extras])
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------
# splits


def split_folds(table: MetaTable, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded k-fold splits by content: ``[(train_idx, test_idx)] * k`` (row indices, sorted).

    The distinct content ids (:meth:`MetaTable.groups`) are shuffled with ``seed`` and dealt
    into ``k`` folds of near-equal numbers of ids; fold ``i`` is the test set of split ``i``.
    Every row appears in exactly one test set and no content id is on both sides of a split.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise DataError(f"num_folds must be an integer >= 2 (got {k!r})")
    groups = table.groups()
    unique = sorted(set(groups))
    if len(unique) < k:
        raise DataError(
            f"{table.source or 'meta table'}: {len(unique)} distinct ref_id(s) cannot fill "
            f"{k} folds (use num_folds <= {len(unique)})"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {}
    for fold, chunk in enumerate(np.array_split(order, k)):
        for j in chunk:
            fold_of[unique[int(j)]] = fold
    folds = np.array([fold_of[g] for g in groups], dtype=np.int64)
    rows = np.arange(len(groups), dtype=np.int64)
    return [(rows[folds != i], rows[folds == i]) for i in range(k)]


# ------------------------------------------------------------------------------------------
# validation


def check_table(path: str | os.PathLike, open_images: bool = True) -> list[Problem]:
    """Every defect of the meta table at ``path``, one :class:`Problem` per defect.

    Checks: the table parses (else one problem), image files present (and decodable with
    ``open_images``), reference files present, duplicate ``image_id`` s and duplicate rows,
    scores outside the declared ``[score_min, score_max]``, a table mixing rows with and without
    reference, references that are also scored images of another content id.
    """
    path = Path(path)
    try:
        table = read_table(path)
    except DataError as e:
        return [Problem("error", "table", str(path), "table", str(e).removeprefix(f"{path}: "))]
    out: list[Problem] = []

    def add(kind: str, line: int, msg: str) -> None:
        out.append(Problem("error", kind, str(path), f"line {line}", msg))

    lo, hi = table.score_range
    ids = Counter(r.image_id for r in table.records)
    pairs = Counter((r.image, r.reference) for r in table.records)
    has_ref = sum(1 for r in table.records if r.reference)
    opened: dict[str, str | None] = {}
    for line, r in enumerate(table.records, start=2):
        if not r.image:
            add("image", line, "empty 'image' cell")
        else:
            problem = _file_problem(table.root, r.image, open_images, opened)
            if problem:
                add("image", line, f"image {r.image!r} {problem}")
        if r.reference:
            problem = _file_problem(table.root, r.reference, open_images, opened)
            if problem:
                add("reference", line, f"reference {r.reference!r} {problem}")
        elif has_ref > 0:
            add("reference", line, "no reference, but other rows of this table have one")
        if ids[r.image_id] > 1:
            add("duplicate", line, f"image_id {r.image_id} appears {ids[r.image_id]} times")
        if pairs[(r.image, r.reference)] > 1:
            add(
                "duplicate",
                line,
                f"image {r.image!r} is listed {pairs[(r.image, r.reference)]} times",
            )
        if not lo <= r.score <= hi:
            add("range", line, f"score {r.score:g} outside the declared range [{lo:g}, {hi:g}]")
    return out


def _file_problem(
    root: Path, rel: str, open_images: bool, cache: dict[str, str | None]
) -> str | None:
    if rel in cache:
        return cache[rel]
    p = root / rel
    problem = None
    if not p.is_file():
        problem = f"not found ({p})"
    elif open_images:
        from PIL import Image

        try:
            with Image.open(p) as im:
                im.verify()
        except Exception as e:  # PIL raises many types for broken files
            problem = f"cannot be decoded ({p}: {type(e).__name__})"
    cache[rel] = problem
    return problem


def cli_check_table(args: Any) -> int:
    """``percepta data check TABLE.csv``: one line per defect, a summary; exit 1 on any defect."""
    path = Path(args.path)
    problems = check_table(path, open_images=not getattr(args, "no_images", False))
    limit = int(getattr(args, "max_report", 50) or 0)
    shown = problems if limit <= 0 else problems[:limit]
    for p in shown:
        print(p.line())
    if len(shown) < len(problems):
        print(f"... and {len(problems) - len(shown)} more (--max-report 0 lists all)")
    if problems:
        print(f"{path}: {len(problems)} defect(s)", file=sys.stderr if not shown else sys.stdout)
        return 1
    table = read_table(path)
    kind = "full-reference" if table.full_reference else "no-reference"
    lo, hi = table.score_range
    print(
        f"{path}: OK: {len(table)} images ({kind}), {len(set(table.groups()))} content ids, "
        f"scores in [{lo:g}, {hi:g}] (higher is better; raw {table.raw_direction}, "
        f"{table.raw_scale or 'scale not stated'})"
    )
    return 0


# ------------------------------------------------------------------------------------------
# the registered dataset


@dataclass
class IqaTableConfig:
    """Options of an IQA meta-table dataset (``data.train`` / ``data.val``: ``name: iqa_table``)."""

    name: str = "iqa_table"
    table: str = "???"  # meta-table csv (or, with reader, the dataset folder); data.root, then cwd
    reader: str = ""  # "" = table is a meta-table csv; else a reader name (clive, kadid10k, ...)
    # train | test | all (auto = train for data.train, test for data.val): the k-fold split; or
    # official:<name>, the rows whose official split column is <name> (KonIQ's, BIQ2021's)
    split: str = "auto"
    fold: int = 0  # which of the num_folds content-disjoint splits (0-based)
    num_folds: int = 5  # k of the k-fold split by ref_id (split_folds)
    seed: int = 0  # seed of the fold assignment
    image_size: int = 0  # 0 = native size; N = resize so the shorter side is N (pairs together)
    crop: int = 0  # 0 = none; N = N x N crop: random for training, centred otherwise
    hflip: bool = True  # random horizontal flip of the (pair of) image(s), training only


class IqaTableDataset:
    """Rows ``indices`` of a meta table as ``(image uint8 [3,H,W], target)``.

    ``target = {"score": float32 [], "image_id": int}`` plus ``"reference"`` (``uint8 [3,H,W]``,
    the same crop and flip as the image) for full-reference tables. A missing or undecodable
    image or reference raises :class:`DataError` naming the file (the training loader skips
    such a sample with a warning). Randomness (crops, flips) comes from torch's global RNG,
    which the loader seeds per sample.
    """

    def __init__(
        self,
        table: MetaTable,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        image_size: int = 0,
        crop: int = 0,
        train: bool = False,
        hflip: bool = True,
    ) -> None:
        self.table = table
        self.indices = [int(i) for i in (range(len(table)) if indices is None else indices)]
        self.image_size, self.crop = int(image_size), int(crop)
        self.train, self.hflip = bool(train), bool(hflip)
        if self.image_size < 0 or self.crop < 0:
            raise DataError(f"image_size and crop must be >= 0 (got {image_size}, {crop})")
        if any(r.reference for r in table.records) and not table.full_reference:
            raise DataError(
                f"{table.source}: some rows have a reference and some do not "
                f"(`percepta data check {table.source}` lists them)"
            )
        self.full_reference = table.full_reference
        rows = [table.records[i] for i in self.indices]
        self.image_ids = [r.image_id for r in rows]
        lo, hi = table.score_range
        self.meta: dict[str, Any] = {
            "score_range": [float(lo), float(hi)],
            "full_reference": self.full_reference,
            "raw_direction": table.raw_direction,
            "raw_scale": table.raw_scale,
            "num_images": len(rows),
        }

    def __len__(self) -> int:
        return len(self.indices)

    def record(self, index: int) -> IqaRecord:
        return self.table.records[self.indices[index]]

    def _load(self, rel: str, what: str, rec: IqaRecord) -> Any:
        from percepta.data.images import read_rgb

        path = Path(self.table.root) / rel
        where = f"{self.table.source}: image_id {rec.image_id}"
        if not path.is_file():
            raise DataError(f"{where}: {what} file not found: {path}")
        try:
            return read_rgb(path)
        except DataError as e:
            raise DataError(f"{where}: {what} file {e}") from None

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        import torch

        rec = self.record(index)
        images = [self._load(rec.image, "image", rec)]
        if self.full_reference:
            images.append(self._load(rec.reference, "reference", rec))
            if images[0].shape != images[1].shape:
                raise DataError(
                    f"{self.table.source}: image_id {rec.image_id}: image {rec.image} is "
                    f"{tuple(images[0].shape[1:])} but its reference {rec.reference} is "
                    f"{tuple(images[1].shape[1:])} (H, W); pairs must be the same size"
                )
        images = self._transform(images)
        target: dict[str, Any] = {
            "score": torch.tensor(rec.score, dtype=torch.float32),
            "image_id": int(rec.image_id),
        }
        if self.full_reference:
            target["reference"] = images[1]
        return images[0], target

    def _transform(self, images: list[Any]) -> list[Any]:
        """Resize, crop and flip every image of the pair identically."""
        import torch
        from torchvision.transforms.v2 import functional as F

        if self.image_size:
            images = [F.resize(im, [self.image_size], antialias=True) for im in images]
        if self.crop:
            h, w = int(images[0].shape[-2]), int(images[0].shape[-1])
            if h < self.crop or w < self.crop:  # too small: upscale the shorter side to the crop
                images = [F.resize(im, [self.crop], antialias=True) for im in images]
                h, w = int(images[0].shape[-2]), int(images[0].shape[-1])
            if self.train:
                top = int(torch.randint(0, h - self.crop + 1, ()).item())
                left = int(torch.randint(0, w - self.crop + 1, ()).item())
            else:
                top, left = (h - self.crop) // 2, (w - self.crop) // 2
            images = [F.crop(im, top, left, self.crop, self.crop) for im in images]
        if self.train and self.hflip and bool(torch.rand(()) < 0.5):
            images = [F.horizontal_flip(im) for im in images]
        return [im.contiguous() for im in images]

    def __repr__(self) -> str:
        kind = "FR" if self.full_reference else "NR"
        return f"IqaTableDataset({self.table.source}, images={len(self)}, {kind})"


def _split_indices(table: MetaTable, cfg: IqaTableConfig, train: bool) -> np.ndarray | None:
    split = cfg.split if cfg.split != "auto" else ("train" if train else "test")
    if split == "all":
        return None
    if split.startswith("official:"):
        return _official_rows(table, split.split(":", 1)[1])
    if split not in ("train", "test"):
        raise DataError(
            "dataset option 'split' must be train, test, all, auto or official:<name>, "
            f"not {split!r}"
        )
    folds = split_folds(table, int(cfg.num_folds), int(cfg.seed))
    if not 0 <= int(cfg.fold) < len(folds):
        raise DataError(f"dataset option 'fold' must be in 0..{len(folds) - 1} (got {cfg.fold})")
    train_idx, test_idx = folds[int(cfg.fold)]
    return train_idx if split == "train" else test_idx


def _official_rows(table: MetaTable, name: str) -> np.ndarray:
    """Row indices whose official ``split`` column is ``name``; an unknown name lists the known."""
    found = sorted({r.split for r in table.records if r.split})
    rows = np.array([i for i, r in enumerate(table.records) if r.split == name], dtype=np.int64)
    if not found:
        raise DataError(
            f"{table.source}: split 'official:{name}' asked for, but the table has no official "
            "split column (use the k-fold split: split train/test with fold and num_folds)"
        )
    if not len(rows):
        raise DataError(
            f"{table.source}: no row has official split {name!r} (the table has: "
            f"{', '.join(found)})"
        )
    return rows


def load_table(table: str, reader: str = "", root: str | os.PathLike = ".") -> MetaTable:
    """A meta-table csv, or (``reader`` set) a dataset folder as distributed, read by
    ``READERS[reader]`` (:mod:`percepta.data.iqa_readers`); relative paths try ``root``, then cwd."""
    from percepta.data.coco import resolve_path

    if table in ("", "???"):
        raise DataError(
            "dataset option 'table' is not set (an IQA meta-table csv, or with 'reader' the "
            "dataset folder)"
        )
    if not reader:
        return read_table(resolve_path(table, root, "meta table"))
    from percepta.data.iqa_readers import READERS

    if reader not in READERS:
        raise DataError(
            f"dataset option 'reader' must be one of {', '.join(sorted(READERS))} "
            f"(or empty for a meta-table csv), not {reader!r}"
        )
    return READERS[reader](resolve_path(table, root, f"{reader} dataset folder", want_dir=True))


@DATASETS.register("iqa_table", options=IqaTableConfig)
def build_iqa_table(cfg: IqaTableConfig, root: str = ".", train: bool = True) -> IqaTableDataset:
    """Image-quality meta table (csv): scored images, optionally with references; k-fold by content."""
    table = load_table(cfg.table, cfg.reader, root)
    is_train = (cfg.split if cfg.split != "auto" else ("train" if train else "test")) == "train"
    return IqaTableDataset(
        table,
        _split_indices(table, cfg, train),
        image_size=cfg.image_size,
        crop=cfg.crop,
        train=is_train and train,
        hflip=cfg.hflip,
    )
