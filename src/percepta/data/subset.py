"""Write a COCO annotation file restricted to some classes and/or some images.

Used to build partially labelled datasets from a fully labelled one (the multi-teacher scenario:
"dataset A labels only class a, dataset B labels only class b"): the images keep every object,
but only the kept classes' annotations and categories remain, so the other objects become
unlabelled. Category ids are kept as they are (results stay comparable with the source).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from percepta.data.check import load_coco_json
from percepta.errors import DataError

__all__ = ["coco_subset"]


def coco_subset(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    classes: Sequence[str] | None = None,
    keep_image: Callable[[dict[str, Any]], bool] | None = None,
    keep_annotation: Callable[[dict[str, Any], str], bool] | None = None,
) -> dict[str, int]:
    """Write ``dst``: ``src`` with only the categories named in ``classes`` (all when ``None``),
    only the images for which ``keep_image(image_record)`` is true (all when ``None``) and only
    the annotations for which ``keep_annotation(annotation, class_name)`` is true (all).

    Returns counts ``{"images", "annotations", "categories"}``. Unknown class names raise
    :class:`DataError` naming them and the file's classes.
    """
    src = Path(src)
    data = load_coco_json(src)
    cats = data.get("categories", [])
    if classes is not None:
        names = [c["name"] for c in cats]
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise DataError(f"{src}: no categories named {unknown} (it has {names})")
        cats = [c for c in cats if c["name"] in set(classes)]
    cat_ids = {c["id"]: c["name"] for c in cats}
    images = [im for im in data.get("images", []) if keep_image is None or keep_image(im)]
    image_ids = {im["id"] for im in images}
    anns = [
        a
        for a in data.get("annotations", [])
        if a["category_id"] in cat_ids
        and a["image_id"] in image_ids
        and (keep_annotation is None or keep_annotation(a, cat_ids[a["category_id"]]))
    ]
    out = {**data, "images": images, "annotations": anns, "categories": cats}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, dst)
    return {"images": len(images), "annotations": len(anns), "categories": len(cats)}
