"""Convert Pascal VOC and Penn-Fudan folders to COCO detection json.

Both converters write one COCO json whose image ``file_name`` s are **relative to the json's own
folder** (``os.path.relpath``, e.g. ``../VOC2007/JPEGImages/000005.jpg``; an absolute path where
no relative one exists). The json's folder is one of the places
:func:`percepta.data.check.guess_image_dir` looks, so ``percepta data check OUT.json`` and
:class:`percepta.data.coco.CocoDetection` work on the output with no ``--images`` / ``image_dir``.

Pascal VOC (``Annotations/*.xml``, ``JPEGImages/``, optional ``ImageSets/Main/<split>.txt``):

- VOC pixel coordinates are 1-based and inclusive (``xmin=1`` is the first column, ``xmax`` the
  last covered column). In COCO's 0-based continuous coordinates pixel ``i`` spans ``[i-1, i)``,
  so ``x = xmin - 1``, ``y = ymin - 1``, ``w = xmax - xmin + 1``, ``h = ymax - ymin + 1``
  (the same as detectron2's ``xmin - 1`` / ``xmax`` reading).
- "difficult" objects become COCO ignore regions: ``"iscrowd": 1`` (and ``"difficult": 1``
  kept as an attribute), as mmdetection's ``tools/dataset_converters/pascal_voc.py`` writes
  them. ``iscrowd`` is the one ignore flag every COCO tool honours: pycocotools and
  faster-coco-eval set a ground truth's ``ignore`` from ``iscrowd`` alone (an ``"ignore": 1``
  field is overwritten, so the object would count as a miss), percepta's oLRP
  (:mod:`percepta.detection.olrp`) does the same, and
  :class:`~percepta.data.coco.CocoDetection` turns ``iscrowd`` boxes into ``ignore_boxes``
  (no positive and no background target in training). So, as in the VOC protocol, a detection
  on a difficult object is neither a true nor a false positive, any number of them may hit it,
  and a difficult object is never a miss. Two COCO details differ from the VOC devkit: the
  overlap with a crowd region is intersection / detection area (not IoU), and a detection
  prefers a free ordinary object over a difficult one at the same threshold (VOC takes the
  highest-IoU object of either kind). ``truncated`` is kept as an attribute.
- categories get ids ``1..C`` in ``classes`` order (default: the names found, sorted, which for
  the 20 VOC classes is the usual order); objects of classes not listed are skipped (counted in
  one warning). Image ids are ``1..N`` in sorted VOC-id order (``"voc_id"`` keeps the name).
- image sizes come from the image header (the xml's ``<size>`` is only cross-checked).

Penn-Fudan (``PNGImages/*.png``, ``PedMasks/*_mask.png`` with 0 = background, k = k-th person):
one category ``person`` (id 1); each instance id ``k`` becomes one annotation whose segmentation
is the compressed RLE from ``pycocotools.mask.encode``, box ``mask.toBbox`` (tight around the
mask pixels, 0-based) and area ``mask.area``. The ``Annotation/*.txt`` boxes (1-based, hand
drawn) agree with the mask boxes for ~96% of the instances and within a few pixels otherwise;
the masks are used because they are what the boxes were meant to enclose.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from percepta.errors import DataError

__all__ = ["voc_to_coco", "pennfudan_to_coco", "write_coco", "cli_convert"]


def _rel_name(image: Path, out_dir: Path) -> str:
    try:
        return Path(os.path.relpath(image.resolve(), out_dir.resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return image.resolve().as_posix()


def write_coco(coco: dict, out: str | os.PathLike) -> Path:
    """Write ``coco`` to ``out`` atomically (temporary file, then rename)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(coco, f)
    os.replace(tmp, out)
    return out


def _num(v: float) -> int | float:
    """Integral floats as ints, so converted integer coordinates stay integers in the json."""
    return int(v) if float(v).is_integer() else float(v)


def _image_size(path: Path, record: str) -> tuple[int, int]:
    if not path.is_file():
        raise DataError(f"{record}: image file not found: {path}")
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{record}: cannot read image {path}: {e}") from None


# --------------------------------------------------------------------------------------------
# Pascal VOC


def _text(node: ET.Element, tag: str, xml: Path, what: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DataError(f"{xml}: {what} has no <{tag}>")
    return child.text.strip()


def _parse_voc_xml(xml: Path) -> tuple[str | None, list[dict[str, Any]], tuple[int, int] | None]:
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as e:
        line, col = e.position
        raise DataError(f"{xml}: invalid XML at line {line} col {col + 1}: {e}") from None
    fn = root.findtext("filename")
    size = None
    s = root.find("size")
    if s is not None:
        try:
            size = (int(float(s.findtext("width") or 0)), int(float(s.findtext("height") or 0)))
        except ValueError:
            size = None
    objects = []
    for k, obj in enumerate(root.findall("object"), start=1):
        what = f"object {k}"
        name = _text(obj, "name", xml, what)
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(f"{xml}: object {k} ({name!r}) has no <bndbox>")
        try:
            x0, y0, x1, y1 = (
                float(_text(bb, t, xml, f"{what} <bndbox>"))
                for t in ("xmin", "ymin", "xmax", "ymax")
            )
        except ValueError as e:
            raise DataError(
                f"{xml}: object {k} ({name!r}): bndbox coordinate is not a number: {e}"
            ) from None
        if x1 < x0 or y1 < y0:
            raise DataError(
                f"{xml}: object {k} ({name!r}): bndbox has xmax < xmin or ymax < ymin "
                f"({x0}, {y0}, {x1}, {y1})"
            )

        def flag(tag: str) -> int:
            t = obj.findtext(tag)
            try:
                return int(float(t)) if t and t.strip() else 0
            except ValueError:
                raise DataError(
                    f"{xml}: object {k} ({name!r}): <{tag}> is not a number: {t!r}"
                ) from None

        objects.append(
            {
                "name": name,
                "box": (x0, y0, x1, y1),
                "difficult": flag("difficult"),
                "truncated": flag("truncated"),
            }
        )
    return fn, objects, size


def voc_to_coco(
    src: str | os.PathLike,
    out: str | os.PathLike,
    split: str | None = None,
    classes: Sequence[str] | str | None = None,
) -> dict:
    """Convert a Pascal VOC folder to a COCO json written at ``out``; returns the json dict.

    Args:
        src: folder with ``Annotations/`` and ``JPEGImages/`` (e.g. ``VOCdevkit/VOC2007``).
        out: output json path (image names are written relative to its folder).
        split: name of ``ImageSets/Main/<split>.txt`` listing the image ids to convert
            (default: every xml in ``Annotations/``).
        classes: category names in id order (list or comma-separated string); default: the
            names found, sorted.
    """
    src, out = Path(src), Path(out)
    ann_dir, img_dir = src / "Annotations", src / "JPEGImages"
    if not ann_dir.is_dir():
        raise DataError(f"{src}: not a Pascal VOC folder (no Annotations/ folder)")
    if split:
        lst = src / "ImageSets" / "Main" / f"{split}.txt"
        if not lst.is_file():
            raise DataError(f"{src}: split {split!r} not found ({lst} does not exist)")
        ids = [ln.split()[0] for ln in lst.read_text().splitlines() if ln.strip()]
        xmls = [ann_dir / f"{i}.xml" for i in ids]
        for x, i in zip(xmls, ids):
            if not x.is_file():
                raise DataError(f"{lst}: image id {i!r} has no annotation file {x}")
    else:
        xmls = sorted(ann_dir.glob("*.xml"))
    if not xmls:
        raise DataError(f"{src}: no annotation files to convert")
    xmls = sorted(xmls, key=lambda p: p.stem)

    parsed = []
    for xml in tqdm(
        xmls, desc="reading VOC xml", unit="file", disable=len(xmls) < 500, leave=False
    ):
        fn, objects, size = _parse_voc_xml(xml)
        parsed.append((xml, fn or f"{xml.stem}.jpg", objects, size))
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    if not classes:
        classes = sorted({o["name"] for _, _, objs, _ in parsed for o in objs})
    if len(set(classes)) != len(classes):
        raise DataError(f"classes contain duplicates: {list(classes)}")
    cat_id = {c: i for i, c in enumerate(classes, start=1)}

    out_dir = out.parent
    images, anns = [], []
    skipped: dict[str, int] = {}
    size_mismatch = 0
    for image_id, (xml, fn, objects, size) in enumerate(
        tqdm(parsed, desc="converting VOC", unit="img", disable=len(parsed) < 500, leave=False),
        start=1,
    ):
        path = img_dir / fn
        w, h = _image_size(path, str(xml))
        size_mismatch += size is not None and size != (w, h) and size != (0, 0)
        images.append(
            {
                "id": image_id,
                "file_name": _rel_name(path, out_dir),
                "width": w,
                "height": h,
                "voc_id": xml.stem,
            }
        )
        for o in objects:
            if o["name"] not in cat_id:
                skipped[o["name"]] = skipped.get(o["name"], 0) + 1
                continue
            x0, y0, x1, y1 = o["box"]
            bw, bh = x1 - x0 + 1, y1 - y0 + 1
            ann = {
                "id": len(anns) + 1,
                "image_id": image_id,
                "category_id": cat_id[o["name"]],
                "bbox": [_num(x0 - 1), _num(y0 - 1), _num(bw), _num(bh)],
                "area": _num(bw * bh),
                "iscrowd": int(bool(o["difficult"])),  # ignore region (module docstring)
                "truncated": o["truncated"],
                "difficult": o["difficult"],
            }
            anns.append(ann)
    if skipped:
        warnings.warn(
            f"{src}: skipped objects of classes not in `classes`: {skipped}", stacklevel=2
        )
    if size_mismatch:
        warnings.warn(
            f"{src}: {size_mismatch} xml <size> entries differ from the image files; "
            "the image files' sizes were used",
            stacklevel=2,
        )
    coco = {
        "info": {
            "description": f"Pascal VOC {src.name}"
            + (f" ({split})" if split else "")
            + " converted by percepta",
            "source": str(src.resolve()),
        },
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": c, "supercategory": "none"} for c, i in cat_id.items()],
    }
    write_coco(coco, out)
    return coco


# --------------------------------------------------------------------------------------------
# Penn-Fudan


def pennfudan_to_coco(src: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Convert a Penn-Fudan folder (``PNGImages/``, ``PedMasks/``) to a COCO json with RLE
    instance masks, written at ``out``; returns the json dict."""
    from pycocotools import mask as mask_utils

    src, out = Path(src), Path(out)
    img_dir, mask_dir = src / "PNGImages", src / "PedMasks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise DataError(f"{src}: not a Penn-Fudan folder (needs PNGImages/ and PedMasks/)")
    files = sorted(img_dir.glob("*.png"))
    if not files:
        raise DataError(f"{img_dir}: no PNG images")
    images, anns = [], []
    for image_id, path in enumerate(
        tqdm(files, desc="converting Penn-Fudan", unit="img", leave=False, disable=len(files) < 50),
        start=1,
    ):
        mpath = mask_dir / f"{path.stem}_mask.png"
        w, h = _image_size(path, f"image {path.name}")
        if not mpath.is_file():
            raise DataError(f"{path}: instance mask not found: {mpath}")
        try:
            with Image.open(mpath) as m:
                mask = np.asarray(m)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{mpath}: cannot read mask: {e}") from None
        if mask.ndim != 2 or mask.shape != (h, w):
            raise DataError(
                f"{mpath}: mask of shape {mask.shape} does not match the "
                f"{w}x{h} image {path.name} (expected a single-channel {h}x{w} mask)"
            )
        images.append(
            {"id": image_id, "file_name": _rel_name(path, out.parent), "width": w, "height": h}
        )
        inst = [int(v) for v in np.unique(mask) if v != 0]
        if not inst:
            continue
        stack = np.asfortranarray(np.stack([mask == k for k in inst], axis=-1).astype(np.uint8))
        rles = mask_utils.encode(stack)
        bboxes, areas = mask_utils.toBbox(rles), mask_utils.area(rles)
        for k, rle, bb, area in zip(inst, rles, bboxes, areas):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [float(v) for v in bb],
                    "area": float(area),
                    "iscrowd": 0,
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                    "instance_id": k,
                }
            )
    coco = {
        "info": {
            "description": "Penn-Fudan pedestrians converted by percepta (boxes and RLE "
            "masks from PedMasks)",
            "source": str(src.resolve()),
        },
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }
    write_coco(coco, out)
    return coco


# --------------------------------------------------------------------------------------------


def cli_convert(args: argparse.Namespace) -> int:
    """``percepta data convert {voc,pennfudan} SRC --out JSON [--split S] [--classes a,b]``;
    ``percepta data convert vrd SRC --out DIR [--split test|train]``
    (:func:`percepta.data.convert_vrd.vrd_to_vg_sgg`);
    ``percepta data convert {clive,kadid10k,...} SRC --out TABLE.csv``: an IQA dataset folder as
    distributed to the meta-table csv (:mod:`percepta.data.iqa_readers`)."""
    from percepta.data.iqa_readers import READERS

    if args.format in READERS:
        return _convert_iqa(args, READERS[args.format])
    if args.format == "vrd":
        from percepta.data.convert_vrd import vrd_to_vg_sgg

        if args.classes:
            raise DataError("--classes applies to the voc format only")
        s = vrd_to_vg_sgg(args.src, args.out, split=args.split or "test")
        zs = s["zero_shot"]
        print(
            f"wrote {args.out}: {s['images']} images ({s['skipped_no_image']} json entries "
            f"without an image file skipped), {s['objects']} objects, {s['relations']} "
            f"relations ({s['self_relations']} with subject == object dropped)"
            + (f", {zs['triplets']} zero-shot triplets" if zs.get("written") else "")
            + f"; images stay in {s['image_dir']} (data.train.image_dir / data.val.image_dir)"
        )
        return 0
    if args.format == "voc":
        coco = voc_to_coco(args.src, args.out, split=args.split, classes=args.classes)
    else:
        if args.split or args.classes:
            raise DataError("--split and --classes apply to the voc format only")
        coco = pennfudan_to_coco(args.src, args.out)
    print(
        f"wrote {args.out}: {len(coco['images'])} images, {len(coco['annotations'])} "
        f"annotations, {len(coco['categories'])} categories"
    )
    return 0


def _convert_iqa(args: argparse.Namespace, reader: Any) -> int:
    """Read an IQA dataset folder with its reader and write the meta-table csv."""
    from percepta.data.iqa_table import write_table

    if args.split or args.classes:
        raise DataError("--split and --classes apply to the voc format only")
    src = Path(args.src)
    if not src.is_dir():
        raise DataError(f"{args.format} dataset folder not found: {src}")
    table = reader(src)
    path = write_table(table, args.out)
    lo, hi = table.score_range
    kind = "full-reference" if table.full_reference else "no-reference"
    print(
        f"wrote {path}: {len(table)} images ({kind}), {len(set(table.groups()))} content ids, scores "
        f"{lo:g}..{hi:g} higher = better (raw: {table.raw_scale}, {table.raw_direction} is "
        f"better); check the files with `percepta data check {path}`"
    )
    return 0
