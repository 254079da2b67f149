"""Readers of the standard IQA datasets into the meta table of :mod:`percepta.data.iqa_table`.

One function per dataset, ``read_<name>(root) -> MetaTable``, with each dataset's real file
layout and score direction (higher is better after reading; the raw direction and scale are
recorded): KADID-10k (``dmos.csv``, a 1-5 MOS), KonIQ-10k, LIVE (DMOS), CSIQ (DMOS), TID2013,
PIPAL (Elo), LIVE In-the-Wild and BIQ2021. :data:`READERS` maps the names to them.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from percepta.data.iqa_table import (
    MetaTable,
    _float,
    _int,
    _numbered,
    _record,
)
from percepta.errors import DataError

__all__ = [
    "READERS",
    "read_kadid10k",
    "read_koniq10k",
    "read_live",
    "read_csiq",
    "read_tid2013",
    "read_pipal",
    "read_clive",
    "read_biq2021",
]


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise DataError(f"label file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    header = list(rows[0].keys()) if rows else []
    missing = [c for c in required if c not in header]
    if not rows or missing:
        raise DataError(
            f"{path}: expected columns {', '.join(required)}"
            + (f"; missing {', '.join(missing)} (found {', '.join(header)})" if rows else "; empty")
        )
    return rows


def _num(row: dict[str, str], column: str, path: Path, line: int) -> float:
    return _float(row.get(column, ""), path, line, column)


def _subdir(root: Path, *candidates: str) -> str:
    """The first existing sub-folder among ``candidates`` (``""`` = root itself)."""
    for c in candidates:
        if c and (root / c).is_dir():
            return c + "/"
    return ""


class _CaseIndex:
    """Case-insensitive file lookup under a folder (TID2013 mixes ``I01.BMP`` and ``i01.bmp``)."""

    def __init__(self, root: Path, sub: str) -> None:
        self.sub = sub.rstrip("/")
        folder = root / self.sub
        self.files: dict[str, str] = {}
        if folder.is_dir():
            for p in folder.rglob("*"):
                if p.is_file():
                    self.files.setdefault(p.name.lower(), p.relative_to(root).as_posix())

    def find(self, name: str, default: str) -> str:
        return self.files.get(name.lower(), f"{self.sub}/{default}" if self.sub else default)


KADID_DISTORTIONS = (
    "gaussian_blur", "lens_blur", "motion_blur", "color_diffusion", "color_shift",
    "color_quantization", "color_saturation_hsv", "color_saturation_lab", "jpeg2000", "jpeg",
    "white_noise", "white_noise_ycbcr", "impulse_noise", "multiplicative_noise", "denoise",
    "brighten", "darken", "mean_shift", "jitter", "non_eccentricity_patch", "pixelate",
    "quantization", "color_block", "high_sharpen", "contrast_change",
)  # fmt: skip
TID2013_DISTORTIONS = (
    "awgn", "noise_color_components", "spatially_correlated_noise", "masked_noise",
    "high_frequency_noise", "impulse_noise", "quantization_noise", "gaussian_blur", "denoising",
    "jpeg", "jpeg2000", "jpeg_transmission_errors", "jpeg2000_transmission_errors",
    "non_eccentricity_pattern_noise", "local_blockwise_distortions", "mean_shift",
    "contrast_change", "color_saturation_change", "multiplicative_gaussian_noise",
    "comfort_noise", "lossy_compression_of_noisy_images", "color_quantization_dither",
    "chromatic_aberrations", "sparse_sampling_and_reconstruction",
)  # fmt: skip


def _name_parts(name: str, n: int) -> list[str] | None:
    parts = Path(name).stem.split("_")
    return parts if len(parts) == n else None


def read_kadid10k(root: str | os.PathLike) -> MetaTable:
    """KADID-10k: ``dmos.csv`` (a 1-5 **MOS** despite its name, higher is better)."""
    root = Path(root)
    path = root / "dmos.csv"
    rows = _read_csv(path, ("dist_img", "ref_img", "dmos"))
    sub = _subdir(root, "images")
    records = []
    for line, row in enumerate(rows, start=2):
        dist, ref = row["dist_img"].strip(), row["ref_img"].strip()
        parts = _name_parts(dist, 3)
        dtype = int(parts[1]) if parts and parts[1].isdigit() else 0
        var = _num(row, "var", path, line) if "var" in row else math.nan
        records.append(
            _record(
                sub + dist, _num(row, "dmos", path, line), 1.0, 5.0, "higher", "1-5 MOS",
                reference=sub + ref,
                score_std=math.sqrt(var) if var >= 0 else math.nan,
                distortion=KADID_DISTORTIONS[dtype - 1] if 1 <= dtype <= 25 else "",
                level=int(parts[2]) if parts and parts[2].isdigit() else 0,
                ref_id=Path(ref).stem,
            )
        )  # fmt: skip
    return MetaTable(root, _numbered(records), (1.0, 5.0), source=str(path))


def read_koniq10k(root: str | os.PathLike) -> MetaTable:
    """KonIQ-10k: ``koniq10k_scores_and_distributions.csv`` MOS 1-5 (higher is better)."""
    root = Path(root)
    path = root / "koniq10k_scores_and_distributions.csv"
    rows = _read_csv(path, ("image_name", "MOS"))
    sets: dict[str, str] = {}
    split_file = root / "koniq10k_distributions_sets.csv"
    if split_file.is_file():
        for row in _read_csv(split_file, ("image_name", "set")):
            sets[row["image_name"].strip()] = _SPLIT_NAMES.get(row["set"].strip(), row["set"])
    sub = _subdir(root, "1024x768", "512x384", "images")
    records = []
    for line, row in enumerate(rows, start=2):
        name = row["image_name"].strip()
        records.append(
            _record(
                sub + name, _num(row, "MOS", path, line), 1.0, 5.0, "higher", "1-5 MOS",
                score_std=_num(row, "SD", path, line) if "SD" in row else math.nan,
                distortion="authentic", split=sets.get(name, ""),
            )
        )  # fmt: skip
    return MetaTable(root, _numbered(records), (1.0, 5.0), source=str(path))


_SPLIT_NAMES = {"training": "train", "validation": "val", "test": "test"}
LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
LIVE_RANGE = (-3.0, 112.0)


def _loadmat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
    except FileNotFoundError:
        raise DataError(f"label file not found: {path}") from None
    except Exception as e:  # scipy raises ValueError/TypeError/MatReadError on bad files
        raise DataError(f"{path}: cannot read the .mat file ({e})") from None
    if key not in data:
        keys = ", ".join(k for k in data if not k.startswith("__"))
        raise DataError(f"{path}: no variable {key!r} (found {keys})")
    return np.asarray(data[key])


def read_live(root: str | os.PathLike) -> MetaTable:
    """LIVE IQA release 2: DMOS (lower is better), flipped on [-3, 112]; reference copies dropped."""
    root = Path(root)
    if (root / "dmos_realigned.mat").is_file():
        path, key = root / "dmos_realigned.mat", "dmos_new"
    else:
        path, key = root / "dmos.mat", "dmos"
    dmos = _loadmat(path, key).reshape(-1).astype(np.float64)
    orgs = _loadmat(path, "orgs").reshape(-1)
    refs = _loadmat(root / "refnames_all.mat", "refnames_all").reshape(-1)
    total = sum(n for _, n in LIVE_FOLDERS)
    if not len(dmos) == len(orgs) == len(refs) == total:
        raise DataError(
            f"{path}: expected {total} entries in {key}, orgs and refnames_all (LIVE release 2), "
            f"found {len(dmos)}, {len(orgs)} and {len(refs)}"
        )
    names = [f"{folder}/img{i}.bmp" for folder, n in LIVE_FOLDERS for i in range(1, n + 1)]
    records = []
    for name, d, org, ref in zip(names, dmos, orgs, refs):
        if int(org) == 1:
            continue
        ref_name = str(np.asarray(ref).reshape(-1)[0])
        records.append(
            _record(
                name, d, *LIVE_RANGE, "lower", "DMOS (realigned, about 0-100)",
                reference=f"refimgs/{ref_name}", distortion=name.split("/")[0],
                ref_id=Path(ref_name).stem,
            )
        )  # fmt: skip
    return MetaTable(root, _numbered(records), LIVE_RANGE, source=str(path))


CSIQ_TYPES = {  # dst_type in the label file -> (folder, file token)
    "noise": ("awgn", "AWGN"),
    "awgn": ("awgn", "AWGN"),
    "jpeg": ("jpeg", "JPEG"),
    "jpeg 2000": ("jpeg2000", "jpeg2000"),
    "jpeg2000": ("jpeg2000", "jpeg2000"),
    "fnoise": ("fnoise", "fnoise"),
    "blur": ("blur", "BLUR"),
    "contrast": ("contrast", "contrast"),
}


def _csiq_rows(root: Path) -> tuple[Path, list[dict[str, str]]]:
    csv_path = root / "csiq.DMOS.csv"
    if csv_path.is_file():
        return csv_path, _read_csv(csv_path, ("image", "dst_type", "dst_lev", "dmos"))
    xlsx = root / "csiq.DMOS.xlsx"
    if not xlsx.is_file():
        raise DataError(f"label file not found: {csv_path} (or {xlsx.name})")
    try:
        import openpyxl
    except ImportError:
        raise DataError(
            f"{xlsx}: reading .xlsx needs openpyxl (pip install openpyxl), or save its "
            f"'all_by_image' sheet as {csv_path.name}"
        ) from None
    sheet = openpyxl.load_workbook(xlsx, read_only=True, data_only=True).worksheets[-1]
    cells = [
        [("" if v is None else str(v)) for v in row] for row in sheet.iter_rows(values_only=True)
    ]
    start = next((i for i, r in enumerate(cells) if "dmos" in [c.strip() for c in r]), None)
    if start is None:
        raise DataError(f"{xlsx}: no header row with a 'dmos' column")
    head = [c.strip() for c in cells[start]]
    return xlsx, [dict(zip(head, r)) for r in cells[start + 1 :] if any(r)]


def read_csiq(root: str | os.PathLike) -> MetaTable:
    """CSIQ: DMOS on 0-1 (lower is better), flipped on [0, 1]."""
    root = Path(root)
    path, rows = _csiq_rows(root)
    dist_index = _CaseIndex(root, "dst_imgs")
    ref_index = _CaseIndex(root, "src_imgs")
    records = []
    for line, row in enumerate(rows, start=2):
        ref = str(row["image"]).strip()
        ref = ref[:-2] if ref.endswith(".0") else ref  # numeric names read from a spreadsheet
        dtype = str(row["dst_type"]).strip().lower()
        if dtype not in CSIQ_TYPES:
            raise DataError(f"{path}: line {line}: unknown dst_type {row['dst_type']!r}")
        folder, token = CSIQ_TYPES[dtype]
        level = _int(str(row["dst_lev"]), path, line, "dst_lev", 0)
        name = f"{ref}.{token}.{level}.png"
        records.append(
            _record(
                dist_index.find(name, f"{folder}/{name}"), _num(row, "dmos", path, line),
                0.0, 1.0, "lower", "0-1 DMOS",
                reference=ref_index.find(f"{ref}.png", f"{ref}.png"),
                score_std=_num(row, "dmos_std", path, line) if "dmos_std" in row else math.nan,
                distortion=folder, level=level, ref_id=ref,
            )
        )  # fmt: skip
    return MetaTable(root, _numbered(records), (0.0, 1.0), source=str(path))


def read_tid2013(root: str | os.PathLike) -> MetaTable:
    """TID2013: ``mos_with_names.txt``, MOS 0-9 (higher is better)."""
    root = Path(root)
    path = root / "mos_with_names.txt"
    try:
        lines = [ln.split() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    except FileNotFoundError:
        raise DataError(f"label file not found: {path}") from None
    lines = [ln for ln in lines if ln]
    stds: list[float] = []
    std_path = root / "mos_std.txt"
    if std_path.is_file():
        stds = [float(t) for t in std_path.read_text().split()]
        if len(stds) != len(lines):
            raise DataError(f"{std_path}: {len(stds)} values for {len(lines)} lines of {path.name}")
    dist_index = _CaseIndex(root, "distorted_images")
    ref_index = _CaseIndex(root, "reference_images")
    records = []
    for i, parts in enumerate(lines):
        if len(parts) != 2:
            raise DataError(
                f"{path}: line {i + 1}: expected 'MOS filename', got {' '.join(parts)!r}"
            )
        mos, name = _float(parts[0], path, i + 1, "MOS"), parts[1]
        bits = _name_parts(name, 3)
        if not bits or not bits[1].isdigit() or not bits[2].isdigit():
            raise DataError(f"{path}: line {i + 1}: file name {name!r} is not iXX_YY_Z.bmp")
        ref = bits[0].upper()
        dtype = int(bits[1])
        records.append(
            _record(
                dist_index.find(name, name), mos, 0.0, 9.0, "higher", "0-9 MOS",
                reference=ref_index.find(f"{ref}.bmp", f"{ref}.BMP"),
                score_std=stds[i] if stds else math.nan,
                distortion=TID2013_DISTORTIONS[dtype - 1] if 1 <= dtype <= 24 else "",
                level=int(bits[2]), ref_id=ref,
            )
        )  # fmt: skip
    return MetaTable(root, _numbered(records), (0.0, 9.0), source=str(path))


PIPAL_RANGE = (900.0, 1900.0)


def read_pipal(root: str | os.PathLike) -> MetaTable:
    """PIPAL (NTIRE 2021/2022 training set): Elo scores (higher is better), ``Train_Label/*.txt``."""
    root = Path(root)
    label_dir = root / "Train_Label"
    files = sorted(label_dir.glob("*.txt")) if label_dir.is_dir() else []
    if not files:
        raise DataError(f"no label files found: {label_dir}/*.txt")
    dist_index: dict[str, str] = {}
    for d in sorted(root.glob("Distortion_*")) + [root / "Train_Dis"]:
        if d.is_dir():
            for p in d.iterdir():
                dist_index.setdefault(p.name, p.relative_to(root).as_posix())
    records = []
    for path in files:
        for n, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not text.strip():
                continue
            name, _, elo = text.partition(",")
            name = name.strip()
            bits = _name_parts(name, 3)
            if not bits or not elo.strip():
                raise DataError(f"{path}: line {n}: expected 'AXXXX_GG_SS.bmp,elo', got {text!r}")
            records.append(
                _record(
                    dist_index.get(name, f"Train_Dis/{name}"), _float(elo, path, n, "elo"),
                    *PIPAL_RANGE, "higher", "Elo",
                    reference=f"Train_Ref/{bits[0]}.bmp", distortion=bits[1],
                    level=int(bits[2]) if bits[2].isdigit() else 0, ref_id=bits[0],
                )
            )  # fmt: skip
    return MetaTable(root, _numbered(records), PIPAL_RANGE, source=str(label_dir))


def read_clive(root: str | os.PathLike) -> MetaTable:
    """LIVE In-the-Wild (CLIVE): ``scores.csv`` image, mos (0-100, higher is better), mos_std."""
    root = Path(root)
    path = root / "scores.csv"
    rows = _read_csv(path, ("image", "mos"))
    sub = _subdir(root, "images", "Images")
    records = [
        _record(
            sub + row["image"].strip(), _num(row, "mos", path, line), 0.0, 100.0, "higher",
            "0-100 MOS",
            score_std=_num(row, "mos_std", path, line) if "mos_std" in row else math.nan,
            distortion="authentic",
        )
        for line, row in enumerate(rows, start=2)
    ]  # fmt: skip
    return MetaTable(root, _numbered(records), (0.0, 100.0), source=str(path))


def read_biq2021(root: str | os.PathLike) -> MetaTable:
    """BIQ2021: ``scores.csv`` image_name, mos_0_1 (0-1 from 1-5 ratings, higher is better)."""
    root = Path(root)
    path = root / "scores.csv"
    rows = _read_csv(path, ("image_name", "mos_0_1"))
    sub = _subdir(root, "images")
    records = [
        _record(
            sub + row["image_name"].strip(), _num(row, "mos_0_1", path, line), 0.0, 1.0,
            "higher", "0-1 MOS (from 1-5 ratings)", distortion="authentic",
            split=(row.get("upstream_split") or "").strip(),
        )
        for line, row in enumerate(rows, start=2)
    ]  # fmt: skip
    return MetaTable(root, _numbered(records), (0.0, 1.0), source=str(path))


READERS = {
    "kadid10k": read_kadid10k,
    "koniq10k": read_koniq10k,
    "live": read_live,
    "csiq": read_csiq,
    "tid2013": read_tid2013,
    "pipal": read_pipal,
    "clive": read_clive,
    "biq2021": read_biq2021,
}
