"""The Visual-Genome SGG files as a training / evaluation dataset (``data.train.name: vg_sgg``).

Samples follow the official ``VGDataset.get_groundtruth`` (Scene-Graph-Benchmark
``visual_genome.py``; the measured semantics are in ``notes/sgg_official_semantics.md``):

1. boxes = ``boxes_1024 / 1024 * max(w, h)`` in float64, then float32;
2. training only, ``filter_duplicate_rels``: the relations of one (subject, object) pair become
   one, its predicate drawn with ``np.random.choice`` over the pair's predicates (duplicates
   weigh more), pairs in the order of their first appearance;
3. boxes clipped to ``[0, w - 1] x [0, h - 1]``;
4. training only: boxes with ``x2 <= x1`` or ``y2 <= y1`` removed (with their relations);
   evaluation keeps every box and every relation (no de-duplication at test).

The random draws use numpy's global RNG, which percepta's loader seeds per sample from
(seed, epoch, index), so they are reproducible and resume exactly. Horizontal flipping is not
offered (the official flip is off by default and its ``__getitem__`` passes the flag into the
wrong argument). The training relation *map* (a later relation of the same pair overwrites with
probability 0.5) is built by the relation model's sampler, not here
(:func:`percepta.scene_graph.pairs.relation_map`).

Targets: ``boxes [N,4]`` float32 XYXY pixels of the original image, ``labels [N]`` int64 in
percepta's ``0..C-1`` (the file's 1-based classes minus one), ``relations [M,3]`` int64
(subject index, object index, predicate ``1..P``; 0 is "no relation"), ``image_id`` (the
``image_data.json`` id when it is an integer, else the h5 index), ``orig_size``.

The training split publishes ``statistics_file`` in its ``meta``: the frequency statistics
(``fg_matrix``, ``bg_matrix``, ``pred_dist``) of the official ``get_VG_statistics`` computed on
this split's ``num_val_im`` carve-out (the official code fixes 5,000, more than small datasets
have) and cached (:func:`percepta.data.vg_sgg.statistics_cached`); the relation model's
frequency bias starts from them.

Image files: ``image_data.json`` lists one record per h5 image (VG's 4 known-corrupted ids are
dropped first, as officially; ``corrupted_ids: []`` keeps them). Unlike the official loader,
which silently drops missing files and so shifts every later image onto the wrong graph, a
missing file is excluded *with its own graph* and counted in one warning.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from percepta.data.images import read_rgb
from percepta.data.vg_sgg import (
    VG_CORRUPTED_IMAGE_IDS,
    load_graphs,
    load_info,
    statistics_cached,
)
from percepta.errors import DataError
from percepta.registry import DATASETS

__all__ = ["VGSGGDataset", "VGSGGDatasetConfig", "dedup_relations"]

SPLITS = ("train", "val", "test")


@dataclass
class VGSGGDatasetConfig:
    """``data.<split>`` options of the VG-SGG dataset (paths relative to ``data.root``)."""

    name: str = "vg_sgg"
    split: str = "train"  # train | val | test (train and val both come from h5 split 0)
    h5: str = "VG-SGG.h5"
    dicts: str = "VG-SGG-dicts.json"
    image_data: str = "image_data.json"
    image_dir: str = "images"
    num_im: int = -1  # keep the first num_im images of the split (-1: all)
    num_val_im: int = 0  # the first num_val_im split-0 images are val, the rest train
    filter_empty_rels: bool = True
    filter_non_overlap: bool = False  # train only (official: forced off for val / test)
    filter_duplicate_rels: bool = True  # train only
    zero_shot_triplets: str = ""  # (subject, object, predicate) file for zR@K ("" = none)
    corrupted_ids: list[int] = field(default_factory=lambda: list(VG_CORRUPTED_IMAGE_IDS))


def dedup_relations(relations: np.ndarray, rng: Any = np.random) -> np.ndarray:
    """The official training de-duplication: one relation per (subject, object) pair, its
    predicate drawn uniformly from the pair's list (so a repeated predicate weighs more);
    pairs in the order of their first appearance. ``relations``: ``[M,3]`` (s, o, p)."""
    if len(relations) == 0:
        return relations.reshape(0, 3)
    groups: dict[tuple[int, int], list[int]] = {}
    for s, o, p in relations.tolist():
        groups.setdefault((s, o), []).append(p)
    return np.array([(s, o, rng.choice(ps)) for (s, o), ps in groups.items()], dtype=np.int64)


class VGSGGDataset(Dataset):
    """One split of a VG-SGG dataset (see the module docstring)."""

    def __init__(self, cfg: VGSGGDatasetConfig, root: str | os.PathLike = ".") -> None:
        if cfg.split not in SPLITS:
            raise DataError(f"vg_sgg: split must be one of {SPLITS}, got {cfg.split!r}")
        root = Path(root)
        self.h5 = _resolve(cfg.h5, root, "VG-SGG h5 file")
        self.dicts = _resolve(cfg.dicts, root, "VG-SGG dicts json")
        self.split = cfg.split
        self.train = cfg.split == "train"
        self.filter_duplicate_rels = bool(cfg.filter_duplicate_rels) and self.train
        classes, predicates, _ = load_info(self.dicts)
        self.object_names = list(classes[1:])
        self.predicate_names = list(predicates[1:])
        mask, boxes, classes_, _, rels = load_graphs(
            self.h5,
            cfg.split,
            num_im=int(cfg.num_im),
            num_val_im=int(cfg.num_val_im),
            filter_empty_rels=bool(cfg.filter_empty_rels),
            filter_non_overlap=bool(cfg.filter_non_overlap) and self.train,
        )
        indices = np.flatnonzero(mask)
        records = _image_records(
            _resolve(cfg.image_data, root, "VG-SGG image_data json"),
            int(len(mask)),
            cfg.corrupted_ids,
        )
        image_dir = _resolve(cfg.image_dir, root, "image folder", want_dir=True)
        keep, missing = [], []
        for j, h5_index in enumerate(indices.tolist()):
            rec = records[h5_index]
            path = image_dir / (rec.get("file_name") or f"{rec['image_id']}.jpg")
            if path.is_file():
                keep.append((j, h5_index, path, rec))
            else:
                missing.append(path)
        if missing:
            warnings.warn(
                f"{self.h5}: {len(missing)} of {len(indices)} {cfg.split} images are missing "
                f"in {image_dir} (e.g. {missing[0].name}); they are left out with their graphs",
                stacklevel=2,
            )
        if not keep:
            raise DataError(f"{self.h5}: the {cfg.split} split has no image with a file on disk")
        self._boxes = [boxes[j] for j, *_ in keep]
        self._labels = [classes_[j] for j, *_ in keep]
        self._relations = [rels[j] for j, *_ in keep]
        self._paths = [p for _, _, p, _ in keep]
        self._sizes = [(int(r["height"]), int(r["width"])) for *_, r in keep]
        self._ids = [_image_id(r["image_id"], h) for _, h, _, r in keep]
        self.zero_shot_triplets = (
            str(_resolve(cfg.zero_shot_triplets, root, "zero-shot triplets file"))
            if cfg.zero_shot_triplets
            else None
        )
        self.meta: dict[str, Any] = {
            "object_names": list(self.object_names),
            "num_object_classes": len(self.object_names),
            "predicate_names": list(self.predicate_names),
            "num_predicates": len(self.predicate_names),
        }
        if self.zero_shot_triplets:
            self.meta["zero_shot_triplets"] = self.zero_shot_triplets
        if self.train:  # the frequency statistics of this training split (cached .npz)
            stats = statistics_cached(self.h5, self.dicts, num_val_im=int(cfg.num_val_im))
            self.meta["statistics_file"] = str(stats["cache_file"])

    def __len__(self) -> int:
        return len(self._paths)

    def image_path(self, index: int) -> Path:
        return self._paths[index]

    def targets_only(self, index: int) -> dict[str, Any]:
        """The target of ``index`` without reading the image (statistics, checks)."""
        return self._target(index)

    def _target(self, index: int) -> dict[str, Any]:
        h, w = self._sizes[index]
        boxes = (self._boxes[index].astype(np.float64) / 1024.0 * max(w, h)).astype(np.float32)
        labels = self._labels[index].astype(np.int64) - 1
        rels = self._relations[index].astype(np.int64).reshape(-1, 3)
        if self.filter_duplicate_rels:
            rels = dedup_relations(rels)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h - 1)
        if self.train:
            ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if not ok.all():
                new = np.cumsum(ok) - 1
                rels = rels[ok[rels[:, 0]] & ok[rels[:, 1]]]
                rels = np.stack([new[rels[:, 0]], new[rels[:, 1]], rels[:, 2]], 1)
                boxes, labels = boxes[ok], labels[ok]
        return {
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes)),
            "labels": torch.from_numpy(labels),
            "relations": torch.from_numpy(np.ascontiguousarray(rels, dtype=np.int64)),
            "image_id": self._ids[index],
            "orig_size": (h, w),
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        img = read_rgb(self._paths[index])
        h, w = self._sizes[index]
        if tuple(img.shape[-2:]) != (h, w):
            raise DataError(
                f"{self._paths[index]}: image is {img.shape[-1]}x{img.shape[-2]} (WxH) but "
                f"image_data.json says {w}x{h}"
            )
        return img, self._target(index)

    def __repr__(self) -> str:
        return (
            f"VGSGGDataset({self.h5}, split={self.split}, images={len(self)}, "
            f"objects={len(self.object_names)}, predicates={len(self.predicate_names)})"
        )


def _image_id(value: Any, h5_index: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return int(h5_index)


def _image_records(path: Path, num_images: int, corrupted: Any) -> list[dict]:
    import json

    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read VG-SGG image_data ({e})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: image_data must be a JSON list of image records")
    skip = {str(i) for i in corrupted}
    kept = []
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not {"image_id", "width", "height"} <= set(r):
            raise DataError(f"{path}: record [{i}] needs image_id, width and height")
        if str(r["image_id"]) not in skip:
            kept.append(r)
    if len(kept) != num_images:
        raise DataError(
            f"{path}: {len(kept)} image records (after dropping the corrupted ids "
            f"{sorted(skip)}) but the h5 has {num_images} images; set corrupted_ids: [] "
            "for files written by other tools"
        )
    return kept


def _resolve(path: str, root: Path, kind: str, want_dir: bool = False) -> Path:
    from percepta.data.coco import resolve_path

    return resolve_path(path, root, kind, want_dir=want_dir)


@DATASETS.register("vg_sgg", options=VGSGGDatasetConfig)
def build_vg_sgg_dataset(
    cfg: VGSGGDatasetConfig, root: str = ".", train: bool = True
) -> VGSGGDataset:
    """Visual-Genome SGG files (``VG-SGG.h5`` + dicts + image_data) with official semantics."""
    return VGSGGDataset(cfg, root)
