"""Validate VG-SGG files (h5 + dicts json + image_data json) for ``percepta data check``.

One report per h5 file (:class:`VGSGGCheckReport`, a :class:`percepta.data.check.CheckReport`
with the relation counts and summary statistics added), with the same severities as the COCO
checker: ``error`` = the loader (:func:`percepta.data.vg_sgg.load_graphs`, which follows the
official Scene-Graph-Benchmark ``visual_genome.py``) refuses the file or would load wrong data;
``warning`` = it copes. The rules are :func:`percepta.data.vg_sgg.read_roidb` (structure) and
:func:`percepta.data.vg_sgg.roidb_issues` (values, vectorised), plus the companions:

* the dicts json: readable by ``load_info``; labels, predicates and attributes within its
  vocabularies (errors); classes and predicates never used (one warning each);
* ``image_data.json``: one record per h5 image after the official skip of the 4 corrupted VG
  ids (an error otherwise; a non-VG file that lists those ids and only lines up without the
  skip is a warning), ``width`` / ``height`` positive integers; with an image folder, the
  missing image files (one error: the count and a few names);
* summary statistics computed from the h5 alone, no image needed: images / boxes / relations
  per split value, the loader's split sizes (official defaults), the predicate histogram
  (top 10), duplicate relations, and the ``fg`` / ``bg`` totals of ``get_VG_statistics``
  (:func:`percepta.data.vg_sgg.vg_statistics`), with a warning when its fixed 5000-image
  validation hold-out leaves no training image (the frequency bias would be uniform).

The companions are found next to the h5 when not given: ``<stem>-dicts.json``,
``<stem with VG-SGG -> VG-SGG-dicts>.json`` (``VG-SGG-with-attri.h5`` ->
``VG-SGG-dicts-with-attri.json``) or the only ``*dicts*.json``; ``image_data.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from percepta.data import vg_sgg as V
from percepta.data.check import CheckReport, is_int
from percepta.errors import DataError
from percepta.jsonable import read_json

__all__ = [
    "VGSGGCheckReport",
    "find_companions",
    "vg_sgg_files",
    "check_vg_sgg",
    "cli_check_vg_sgg",
]

_EXAMPLES = 5


@dataclass
class VGSGGCheckReport(CheckReport):
    """A :class:`CheckReport` for one VG-SGG h5: ``num_annotations`` counts boxes,
    ``num_categories`` object classes (background excluded); ``statistics`` holds the summary
    (JSON-safe) and ``layout`` the tolerated differences from the VG150 layout."""

    dict_file: str | None = None
    image_file: str | None = None
    num_relations: int = 0
    num_predicates: int = 0
    layout: list[str] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.file}: {self.num_images} images ({self.num_images_without_annotations} "
            f"without boxes), {self.num_annotations} boxes, "
            f"{self.num_relations} relations, {self.num_categories} object classes, "
            f"{self.num_predicates} predicates; {len(self.errors)} errors, "
            f"{len(self.warnings)} warnings"
        )

    def statistics_lines(self) -> list[str]:
        s = self.statistics
        lines = [
            f"  dicts: {self.dict_file or '(none)'}; image data: {self.image_file or '(none)'}"
        ]
        if self.layout:
            lines.append("  layout (tolerated): " + "; ".join(self.layout))
        for value, d in s.get("per_split", {}).items():
            lines.append(
                f"  split {value}: {d['images']} images ({d['images_with_boxes']} with boxes, "
                f"{d['images_with_relations']} with relations), {d['boxes']} boxes, "
                f"{d['relations']} relations"
            )
        if "loader_splits" in s:
            sp = s["loader_splits"]
            lines.append(
                f"  loader splits (filter_empty_rels, num_val_im=5000): train {sp['train']}, "
                f"val {sp['val']}, test {sp['test']}"
            )
        if "predicates_top10" in s:
            top = ", ".join(f"{name} {n}" for name, n in s["predicates_top10"])
            lines.append(f"  predicates (top 10 of {s.get('predicates_used', 0)} used): {top}")
        if "duplicate_relations" in s:
            lines.append(
                f"  duplicate relations (same subject, object, predicate): "
                f"{s['duplicate_relations']}; pairs with several predicates: "
                f"{s['multi_predicate_pairs']}"
            )
        for key in ("frequency", "frequency_num_val_im_0"):
            if key in s:
                f = s[key]
                lines.append(
                    f"  frequency statistics (get_VG_statistics, num_val_im={f['num_val_im']}): "
                    f"{f['images']} train images, fg {f['fg_total']} relations, "
                    f"bg {f['bg_total']} box pairs"
                )
        return lines

    def format_text(self, max_per_kind: int = 50) -> str:
        """The summary line, the statistics, then the problems grouped by severity and kind."""
        base = super().format_text(max_per_kind).split("\n")
        return "\n".join([base[0], *self.statistics_lines(), *base[1:]])


# --------------------------------------------------------------------------------------------
# companions


def find_companions(h5_path: str | os.PathLike) -> tuple[Path | None, Path | None]:
    """``(dicts json, image_data json)`` next to ``h5_path`` (module docstring), ``None`` when
    absent."""
    h5 = Path(h5_path)
    folder, stem = h5.parent, h5.stem
    cands = [folder / f"{stem}-dicts.json"]
    if "VG-SGG" in stem:
        cands.append(folder / (stem.replace("VG-SGG", "VG-SGG-dicts", 1) + ".json"))
    dicts = next((c for c in cands if c.is_file()), None)
    if dicts is None:
        found = sorted(folder.glob("*dicts*.json"))
        dicts = found[0] if len(found) == 1 else None
    image_file = folder / "image_data.json"
    return dicts, (image_file if image_file.is_file() else None)


def vg_sgg_files(path: str | os.PathLike) -> list[Path]:
    """The h5 files ``percepta data check PATH`` checks: PATH itself, or ``PATH/VG-SGG*.h5``."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(p.glob("VG-SGG*.h5"))
        if files:
            return files
        raise DataError(f"{p}: no VG-SGG*.h5 file in this folder")
    raise DataError(f"{p}: no such file or folder")


# --------------------------------------------------------------------------------------------
# the checks


def _add_issue(report: VGSGGCheckReport, issue: V.RoidbIssue) -> None:
    rec = f"image {issue.image}" if issue.image is not None else "(no image)"
    if issue.row is not None:
        rec += f", row {issue.row}"
    where = f"{issue.key}[{issue.row}]" if issue.row is not None else issue.key
    more = f" ({issue.count} records, first named)" if issue.count > 1 else ""
    report.add(issue.severity, issue.kind, rec, f"'{issue.key}': {issue.message}{more}", where)


def _check_dicts(
    report: VGSGGCheckReport, dict_file: Path
) -> tuple[list[str], list[str], list[str]] | None:
    try:
        info = V.load_info(dict_file)
    except DataError as e:
        report.add("error", "bad_dicts", "(dicts)", str(e))
        return None
    raw = json.loads(Path(dict_file).read_text(encoding="utf-8-sig"))
    for key, idx_key in (
        ("label_to_idx", "idx_to_label"),
        ("predicate_to_idx", "idx_to_predicate"),
        ("attribute_to_idx", "idx_to_attribute"),
    ):
        fwd, back = raw.get(key), raw.get(idx_key)
        if (
            isinstance(fwd, dict)
            and isinstance(back, dict)
            and {str(i): n for n, i in fwd.items()} != back
        ):
            report.add(
                "warning",
                "dicts_mismatch",
                "(dicts)",
                f"{dict_file}: '{idx_key}' is not the inverse of '{key}' (the loader reads "
                f"only '{key}')",
            )
    return info


def _check_image_file(
    report: VGSGGCheckReport, image_file: Path, num_images: int, image_dir: Path | None
) -> None:
    try:
        records = read_json(image_file, "VG-SGG image_data")
    except DataError as e:
        report.add("error", "bad_image_data", "(image data)", str(e))
        return
    if not isinstance(records, list):
        report.add("error", "bad_image_data", "(image data)", f"{image_file}: must be a JSON list")
        return
    bad = 0
    for i, r in enumerate(records):
        ok = isinstance(r, dict) and "image_id" in r
        ok = ok and all(is_int(r.get(k)) and r.get(k) > 0 for k in ("width", "height"))
        if not ok:
            bad += 1
            if bad <= _EXAMPLES:
                report.add(
                    "error",
                    "bad_image_record",
                    f"record [{i}]",
                    f"{image_file}: an image record needs 'image_id' and positive integer "
                    f"'width' / 'height', got {r!r:.100}",
                )
    if bad > _EXAMPLES:
        report.add("error", "bad_image_record", "(image data)", f"... {bad} bad records in all")
    skip = {str(i) for i in V.VG_CORRUPTED_IMAGE_IDS}
    ids = [str(r.get("image_id")) if isinstance(r, dict) else "" for r in records]
    kept = sum(1 for i in ids if i not in skip)
    corrupted_ids: tuple = V.VG_CORRUPTED_IMAGE_IDS
    if kept == num_images:
        pass  # VG: the 4 corrupted images are listed and skipped
    elif len(records) == num_images:
        corrupted_ids = ()
        report.add(
            "warning",
            "corrupted_vg_ids",
            "(image data)",
            f"{image_file}: lists image ids {sorted(skip & set(ids))}, which the official "
            "load_image_filenames skips as corrupted VG images; it lines up with the h5 only "
            "without that skip (pass corrupted_ids=() for this dataset)",
        )
    else:
        report.add(
            "error",
            "image_count_mismatch",
            "(image data)",
            f"{image_file}: {len(records)} records ({kept} after skipping the corrupted VG ids) "
            f"for {num_images} h5 images; record i must describe h5 image i",
        )
    if image_dir is None:
        return
    if not image_dir.is_dir():
        report.add("error", "missing_image_dir", "(images)", f"image folder not found: {image_dir}")
        return
    report.image_dir = str(image_dir)
    fns, _, missing = V.load_image_filenames(image_dir, image_file, corrupted_ids)
    if missing:
        present = set(fns)
        examples = []
        for r in records:
            if not isinstance(r, dict) or str(r.get("image_id")) in {str(i) for i in corrupted_ids}:
                continue
            fn = os.path.join(image_dir, r.get("file_name") or f"{r.get('image_id')}.jpg")
            if fn not in present:
                examples.append(os.path.relpath(fn, image_dir))
                if len(examples) == _EXAMPLES:
                    break
        report.add(
            "error",
            "missing_images",
            "(images)",
            f"{missing} of {missing + len(fns)} image files not found in {image_dir} "
            f"(e.g. {', '.join(examples)}); the loader skips them and misaligns the rest",
        )


def _summary_statistics(
    report: VGSGGCheckReport, r: V.Roidb, info: tuple[list[str], list[str], list[str]] | None
) -> None:
    stats = report.statistics
    per_split: dict[str, dict[str, int]] = {}
    nbox = np.where(r.first_box >= 0, r.last_box.astype(np.int64) - r.first_box + 1, 0)
    nrel = np.where(r.first_rel >= 0, r.last_rel.astype(np.int64) - r.first_rel + 1, 0)
    for value in np.unique(r.split):
        m = r.split == value
        per_split[str(int(value))] = {
            "images": int(m.sum()),
            "images_with_boxes": int((m & (r.first_box >= 0)).sum()),
            "images_with_relations": int((m & (r.first_rel >= 0)).sum()),
            "boxes": int(nbox[m].sum()),
            "relations": int(nrel[m].sum()),
        }
    stats["per_split"] = per_split
    stats["loader_splits"] = {
        s: int(len(V.select_images(r, s, -1, 5000, True))) for s in ("train", "val", "test")
    }
    names = info[1] if info else None
    counts = np.bincount(r.predicates.astype(np.int64).clip(min=0))
    order = [int(p) for p in np.argsort(-counts, kind="stable") if counts[p] > 0][:10]
    stats["predicates_used"] = int((counts[1:] > 0).sum())
    stats["predicates_top10"] = [
        [names[p] if names and p < len(names) else str(p), int(counts[p])] for p in order
    ]
    rows, img = V.expand_ranges(r.first_rel, r.last_rel)
    rel = r.relationships[rows].astype(np.int64)
    triplets = Counter(
        zip(img.tolist(), rel[:, 0].tolist(), rel[:, 1].tolist(), r.predicates[rows].tolist())
    )
    pairs = Counter((i, s, o) for i, s, o, _ in triplets)
    stats["duplicate_relations"] = int(sum(n - 1 for n in triplets.values()))
    stats["multi_predicate_pairs"] = int(sum(1 for n in pairs.values() if n > 1))
    if info:
        for kind, what, vocab, values in (
            ("unused_classes", "object classes have no box", info[0], r.labels),
            ("unused_predicates", "predicates have no relation", info[1], r.predicates),
        ):
            n = np.bincount(values.astype(np.int64).clip(min=0), minlength=len(vocab))
            unused = [vocab[k] for k in range(1, len(vocab)) if n[k] == 0]
            if unused:
                report.add(
                    "warning",
                    kind,
                    "(dicts)",
                    f"{len(unused)} {what}: {unused[:10]}" + (" ..." if len(unused) > 10 else ""),
                )
    c = len(info[0]) if info else int(r.labels.max(initial=0)) + 1
    p = len(info[1]) if info else int(r.predicates.max(initial=0)) + 1
    fg, bg, n = V.statistics_from_roidb(r, c, p, True, 5000)
    freq = {"num_val_im": 5000, "images": n, "fg_total": int(fg.sum()), "bg_total": int(bg.sum())}
    if n == 0:
        train = int(len(V.select_images(r, "train", -1, 0, True)))
        report.add(
            "warning",
            "no_statistics_images",
            "(statistics)",
            f"get_VG_statistics holds out 5000 validation images and this file has only "
            f"{train} train images with relations: the frequency bias would be uniform "
            "(vg_statistics(..., num_val_im=N) with a smaller N counts them)",
        )
        if train:
            fg, bg, n = V.statistics_from_roidb(r, c, p, True, 0)
            stats["frequency_num_val_im_0"] = {
                "num_val_im": 0,
                "images": n,
                "fg_total": int(fg.sum()),
                "bg_total": int(bg.sum()),
            }
    stats["frequency"] = freq


def check_vg_sgg(
    h5_path: str | os.PathLike,
    dict_file: str | os.PathLike | None = None,
    image_file: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
) -> VGSGGCheckReport:
    """Check one VG-SGG h5 and its companions (found next to it when not given); never raises
    for defects in the data, which all go into the returned report. ``image_dir``: also look
    for the image files (none are opened)."""
    h5 = Path(h5_path)
    report = VGSGGCheckReport(file=str(h5))
    found_dicts, found_images = find_companions(h5)
    dicts = Path(dict_file) if dict_file is not None else found_dicts
    images = Path(image_file) if image_file is not None else found_images
    report.dict_file = str(dicts) if dicts else None
    report.image_file = str(images) if images else None
    try:
        r = V.read_roidb(h5)
    except DataError as e:
        report.add("error", "bad_file", "(file)", str(e).removeprefix(f"{h5}: "))
        return report
    report.num_images, report.num_annotations = r.num_images, r.num_boxes
    report.num_relations, report.layout = r.num_relations, list(r.layout)
    report.num_images_without_annotations = int((r.first_box < 0).sum())
    info = None
    if dicts is None:
        report.add(
            "warning",
            "no_dicts",
            "(dicts)",
            "no dicts json found next to the h5 (pass it explicitly): vocabulary not checked",
        )
    else:
        info = _check_dicts(report, dicts)
    if info:
        report.num_categories, report.num_predicates = len(info[0]) - 1, len(info[1]) - 1
    sizes = (len(info[0]), len(info[1]), len(info[2])) if info else (None, None, None)
    issues = V.roidb_issues(r, *sizes, warnings_too=True)
    for issue in issues:
        _add_issue(report, issue)
    if images is not None:
        _check_image_file(report, images, r.num_images, Path(image_dir) if image_dir else None)
    elif image_dir is not None:
        report.add("error", "no_image_data", "(images)", "an image folder needs image_data.json")
    if not any(i.severity == "error" for i in issues):
        _summary_statistics(report, r, info)
    return report


def cli_check_vg_sgg(args: argparse.Namespace) -> int:
    """``percepta data check FILE.h5|FOLDER [--images DIR] [--no-images] [--json]``: one report
    per h5; exit status 1 when any has errors."""
    files = vg_sgg_files(args.path)
    image_dir = None if getattr(args, "no_images", False) else getattr(args, "images", None)
    reports = [check_vg_sgg(f, image_dir=image_dir) for f in files]
    if getattr(args, "json", False):
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        for r in reports:
            print(r.format_text(max_per_kind=getattr(args, "max_report", 50)))
        if len(reports) > 1:
            bad = sum(1 for r in reports if not r.ok)
            print(f"{len(reports)} files checked, {bad} with errors")
    sys.stdout.flush()
    return 0 if all(r.ok for r in reports) else 1
