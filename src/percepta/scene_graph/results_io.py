"""Scene-graph inputs and outputs: validation of per-image records (percepta dicts or results
files), the results-file format of ``percepta score scene-graph FILE.json``, printed tables.

Results format (JSON; the same schema as the reference vectors of the official evaluator, so a
file written by any framework can be scored):

```
{
  "mode": "predcls" | "sgcls" | "sgdet",      required unless --mode is given (--mode wins)
  "k_values": [20, 50, 100],                  optional (default shown)
  "iou_threshold": 0.5,                       optional (default shown)
  "num_rel_classes": 51,                      P + 1 (background included); optional when
                                              "predicate_names" or any "rel_scores" row gives P
  "predicate_names": ["__background__", "above", ...],  optional; P names, or P + 1 with the
                                              background first
  "zeroshot_triplets": [[subject_class, object_class, predicate], ...],  optional (no zR without)
  "images": [                                 required, one record per image
    {
      "image_id": 17,                         required, unique (integer or string)
      "gt_boxes": [[x1, y1, x2, y2], ...],    N x 4 pixels, x2 >= x1, y2 >= y1
      "gt_labels": [3, 8, ...],               N object classes
      "gt_rels": [[s, o, p], ...],            M x 3: subject index, object index (into gt_boxes),
                                              predicate 1..P; repeats allowed and all counted
      "pred_boxes": [[x1, y1, x2, y2], ...],  Q x 4  } not needed in predcls, where the GT
      "pred_labels": [...],                   Q      } boxes, labels and object scores 1 are
      "pred_scores": [...],                   Q      } used (as the official evaluator does)
      "rel_pair_idxs": [[i, j], ...],         R x 2 subject/object indices into pred_boxes (into
                                              gt_boxes in predcls), ranked best first (by
                                              max non-background predicate score x subject
                                              score x object score); the order is used as given
      "rel_scores": [[p0, p1, ..., pP], ...]  R x (P + 1) predicate scores, column 0 background
    }, ...
  ]
}
```

The object may also be wrapped as ``{"inputs": {...}}`` (other top-level keys are ignored), as
in ``tests/fixtures/sgg/*.json``. Extra keys (``width``, ``height``, ``object_names``,
``num_obj_classes``...) are ignored. Labels are compared as given (only consistency between
GT, predictions and the zero-shot list matters). Boxes use the VG inclusive-pixel IoU unless
``--box-convention xyxy``. An image record without any prediction key is an image "absent from
the predictions": skipped and counted, as officially; ``"rel_pair_idxs": []`` likewise skips the
image. Bad records raise one :class:`percepta.errors.DataError` naming the file, the image id
and the key (``FILE: image 17: 'rel_scores' ...``).

Layering: this module sits below :mod:`percepta.scene_graph.evaluation` (which imports it for
validation, zero-shot lists and the table) and never imports the evaluator; the scoring command
itself, which needs both, is ``evaluation.cli_score``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from percepta.errors import DataError
from percepta.jsonable import read_json
from percepta.scene_graph.matching import MODES, ImageData, as_array, check_boxes

__all__ = [
    "MISSING",
    "build_image",
    "image_from_dicts",
    "load_zero_shot_triplets",
    "official_table",
    "read_results_file",
    "iter_images",
]

FILE_KEYS = {
    "gt_boxes": "gt_boxes",
    "gt_labels": "gt_labels",
    "gt_rels": "gt_rels",
    "pred_boxes": "pred_boxes",
    "pred_labels": "pred_labels",
    "pred_scores": "pred_scores",
    "rel_pairs": "rel_pair_idxs",
    "rel_scores": "rel_scores",
}

DICT_NAMES = {
    "gt_boxes": "target['boxes']",
    "gt_labels": "target['labels']",
    "gt_rels": "target['relations']",
    "pred_boxes": "pred['boxes']",
    "pred_labels": "pred['labels']",
    "pred_scores": "pred['scores']",
    "rel_pairs": "pred['rel_pairs']",
    "rel_scores": "pred['rel_scores']",
}
_PRED_FIELDS = ("pred_boxes", "pred_labels", "pred_scores", "rel_pairs", "rel_scores")
MISSING = object()  # marks a key absent from the input record


def build_image(
    image_id: Any, values: dict[str, Any], names: dict[str, str], *, mode: str, num_predicates: int
) -> ImageData:
    """Validate one image's raw values and return its :class:`ImageData`.

    Args:
        image_id: the image's id (named in every error).
        values: canonical field name (``gt_boxes``, ``gt_labels``, ``gt_rels``, ``pred_boxes``,
            ``pred_labels``, ``pred_scores``, ``rel_pairs``, ``rel_scores``) -> value, or
            :data:`MISSING` when the input lacks the key. When *every* prediction field is
            missing the image has no prediction (it is skipped and counted, as officially).
            ``pred_boxes``/``pred_labels``/``pred_scores`` may be missing in PredCls.
        names: canonical field name -> the key name the user wrote (for error messages).
        mode: ``predcls``, ``sgcls`` or ``sgdet``.
        num_predicates: P; GT predicates must be 1..P and ``rel_scores`` rows P + 1 wide.

    Raises:
        DataError: a missing key, a wrong shape, an index out of range, a bad box or score.
    """

    def get(f: str, dtype: Any, cols: int | None) -> np.ndarray:
        v = values.get(f, MISSING)
        if v is MISSING or v is None:
            raise DataError(f"image {image_id!r}: missing {names[f]!r}")
        return as_array(v, dtype, cols, image_id, names[f])

    gt_boxes = get("gt_boxes", np.float32, 4)
    check_boxes(gt_boxes, image_id, names["gt_boxes"])
    gt_labels = get("gt_labels", np.int64, None)
    gt_rels = get("gt_rels", np.int64, 3)
    if len(gt_labels) != len(gt_boxes):
        raise DataError(
            f"image {image_id!r}: {names['gt_labels']!r} has {len(gt_labels)} entries but "
            f"{names['gt_boxes']!r} has {len(gt_boxes)}"
        )
    if len(gt_rels):
        bad = (gt_rels[:, :2] < 0).any(1) | (gt_rels[:, :2] >= len(gt_boxes)).any(1)
        bad |= (gt_rels[:, 2] < 1) | (gt_rels[:, 2] > num_predicates)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"image {image_id!r}: {names['gt_rels']!r} row {i} = {gt_rels[i].tolist()} "
                f"needs subject/object indices in 0..{len(gt_boxes) - 1} and a predicate "
                f"in 1..{num_predicates}"
            )
    img = ImageData(image_id, gt_boxes, gt_labels, gt_rels)
    present = [f for f in _PRED_FIELDS if values.get(f, MISSING) is not MISSING]
    if not present:
        return img
    needed = _PRED_FIELDS[3:] if mode == "predcls" else _PRED_FIELDS
    img.rel_pairs = get("rel_pairs", np.int64, 2)
    img.rel_scores = get("rel_scores", np.float32, num_predicates + 1)
    if len(img.rel_pairs) != len(img.rel_scores):
        raise DataError(
            f"image {image_id!r}: {names['rel_pairs']!r} has {len(img.rel_pairs)} rows but "
            f"{names['rel_scores']!r} has {len(img.rel_scores)}"
        )
    if len(img.rel_scores):
        hi = img.rel_scores.max()
        if not (np.isfinite(hi) and np.isfinite(img.rel_scores.min())):
            raise DataError(
                f"image {image_id!r}: {names['rel_scores']!r} contains NaN or infinite values"
            )
        img.rel_score_max = float(hi)
    if "pred_boxes" in needed:
        img.pred_boxes = get("pred_boxes", np.float32, 4)
        check_boxes(img.pred_boxes, image_id, names["pred_boxes"])
        img.pred_labels = get("pred_labels", np.int64, None)
        img.pred_scores = get("pred_scores", np.float32, None)
        q = len(img.pred_boxes)
        for f in ("pred_labels", "pred_scores"):
            if len(getattr(img, f)) != q:
                raise DataError(
                    f"image {image_id!r}: {names[f]!r} has {len(getattr(img, f))} entries "
                    f"but {names['pred_boxes']!r} has {q}"
                )
        if not np.isfinite(img.pred_scores).all():
            raise DataError(
                f"image {image_id!r}: {names['pred_scores']!r} contains NaN or infinite values"
            )
    n_obj = len(gt_boxes) if mode == "predcls" else len(img.pred_boxes)
    pairs = img.rel_pairs
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n_obj):
        i = int(np.flatnonzero((pairs < 0).any(1) | (pairs >= n_obj).any(1))[0])
        what = (
            "GT objects (predcls pairs index the GT boxes)"
            if mode == "predcls"
            else "predicted boxes"
        )
        raise DataError(
            f"image {image_id!r}: {names['rel_pairs']!r} row {i} = {pairs[i].tolist()} is out "
            f"of range for {n_obj} {what}"
        )
    return img


def image_from_dicts(
    pred: Mapping[str, Any] | None, target: Mapping[str, Any], *, mode: str, num_predicates: int
) -> ImageData:
    """Validate one percepta (prediction, target) dict pair (see ``SceneGraphEvaluator.update``)."""
    if not isinstance(target, Mapping):
        raise DataError(f"a target must be a dict, got {type(target).__name__}")
    iid = target.get("image_id", None)
    if iid is None:
        raise DataError("a target is missing 'image_id'")
    try:
        iid = int(iid.item() if isinstance(iid, torch.Tensor) else iid)
    except (TypeError, ValueError):
        raise DataError(f"image_id must be an integer, got {iid!r}") from None
    values = {
        "gt_boxes": target.get("boxes", MISSING),
        "gt_labels": target.get("labels", MISSING),
        "gt_rels": target.get("relations", MISSING),
    }
    if pred is not None:
        if not isinstance(pred, Mapping):
            raise DataError(f"image {iid}: a prediction must be a dict or None")
        values.update(
            pred_boxes=pred.get("boxes", MISSING),
            pred_labels=pred.get("labels", MISSING),
            pred_scores=pred.get("scores", MISSING),
            rel_pairs=pred.get("rel_pairs", MISSING),
            rel_scores=pred.get("rel_scores", MISSING),
        )
        if values["rel_pairs"] is MISSING and values["rel_scores"] is MISSING:
            raise DataError(f"image {iid}: prediction has neither 'rel_pairs' nor 'rel_scores'")
    return build_image(iid, values, DICT_NAMES, mode=mode, num_predicates=num_predicates)


def load_zero_shot_triplets(source: Any) -> np.ndarray | None:
    """Zero-shot triplets ``[Z, 3]`` (subject class, object class, predicate) from an array-like
    or a file: ``.json`` (list of triplets), ``.npy``, or ``.pt``/``.pytorch`` (the official
    ``zeroshot_triplet.pytorch``, an int64 tensor). ``None``/``""`` -> ``None`` (no zR)."""
    if source is None or isinstance(source, str) and not source:
        return None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"zero-shot triplet file not found: {path}")
        try:
            if path.suffix == ".json":
                data = read_json(path, "zero-shot triplet")
            elif path.suffix == ".npy":
                data = np.load(path, allow_pickle=False)
            else:
                data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any parse failure is a data error for the user
            raise DataError(f"cannot read zero-shot triplets from {path}: {e}") from None
        source = data
    return as_array(source, np.int64, 3, None, "zero_shot_triplets")


_ROWS = (
    ("R", "    R", "Recall(Main)"),
    ("ngR", " ng-R", "No Graph Constraint Recall(Main)"),
    ("zR", "   zR", "Zero Shot Recall"),
    ("ng-zR", "ng-zR", "No Graph Constraint Zero Shot Recall"),
    ("mR", "   mR", "Mean Recall"),
    ("ng-mR", "ng-mR", "No Graph Constraint Mean Recall"),
    ("A", "    A", "TopK Accuracy"),
)


def official_table(
    result: Mapping[str, Any],
    *,
    mode: str,
    ks: Sequence[int],
    predicate_names: Sequence[str],
    counts_line: bool = True,
) -> str:
    """The table the official ``do_vg_evaluation`` prints (same spacing, 4 decimals), without
    its detection-mAP line (detection AP belongs to ``percepta.detection``), followed by one line
    counting evaluated and skipped images. The per-predicate details show K = 100 (the official
    choice) or the largest K when 100 is not evaluated."""
    detail_k = 100 if 100 in ks else max(ks)
    out = ["\n" + "=" * 100 + "\n"]
    for key, label, kind in _ROWS:
        if f"{key}@{ks[0]}" not in result:
            continue
        vals = "".join(f"{label} @ {k}: {result[f'{key}@{k}']:.4f}; " for k in ks)
        out.append(f"SGG eval: {vals} for mode={mode}, type={kind}.\n")
        per_pred = result.get("per_predicate", {}).get(key)
        if per_pred is not None:
            out.append("----------------------- Details ------------------------\n")
            out.append(
                "".join(f"({n}:{v:.4f}) " for n, v in zip(predicate_names, per_pred[detail_k]))
            )
            out.append("\n--------------------------------------------------------\n")
    out.append("=" * 100 + "\n\n")
    images = result.get("images")
    if counts_line and images:
        out.append(
            f"images: {images['seen']} seen, {images['evaluated']} evaluated; skipped: "
            f"{images['skipped_no_gt_relations']} without GT relation, "
            f"{images['skipped_no_prediction']} absent from the predictions, "
            f"{images['skipped_no_predicted_pairs']} without predicted pair\n"
        )
    return "".join(out)


def read_results_file(path: str | Path, mode: str | None = None) -> dict[str, Any]:
    """Parse and check the top level of a results file (schema in the module docstring).

    Returns a dict with ``mode``, ``k``, ``iou_threshold``, ``num_predicates``,
    ``predicate_names`` (or ``None``), ``zero_shot_triplets`` (or ``None``) and ``records``
    (the raw image records, ids checked unique); records are validated by :func:`iter_images`.
    """
    path = Path(path)
    data = read_json(path, "scene-graph results")
    if isinstance(data, dict) and isinstance(data.get("inputs"), dict):
        data = data["inputs"]
    if not isinstance(data, dict):
        raise DataError(f"{path}: the top level must be an object (optionally wrapped in 'inputs')")
    mode = mode or data.get("mode")
    if mode not in MODES:
        raise DataError(
            f"{path}: 'mode' must be one of {', '.join(MODES)} (or pass --mode), got {mode!r}"
        )
    records = data.get("images")
    if not isinstance(records, list):
        raise DataError(f"{path}: missing 'images' (a list of image records)")
    names = data.get("predicate_names")
    num = data.get("num_rel_classes")
    if num is not None:
        num = int(num) - 1
    elif names:
        num = len(names) - 1 if str(names[0]).startswith("__") else len(names)
    else:
        for rec in records:
            scores = rec.get("rel_scores") if isinstance(rec, dict) else None
            if scores:
                num = len(scores[0]) - 1
                break
    if not num or num < 1:
        raise DataError(
            f"{path}: cannot tell the number of predicates; give 'num_rel_classes' (P + 1)"
        )
    ks = data.get("k_values", [20, 50, 100])
    if not isinstance(ks, list) or not ks or not all(isinstance(k, int) and k > 0 for k in ks):
        raise DataError(f"{path}: 'k_values' must be a list of positive integers, got {ks!r}")
    seen: set[Any] = set()
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "image_id" not in rec:
            raise DataError(f"{path}: images[{i}] is not an object with an 'image_id'")
        iid = rec["image_id"]
        if not isinstance(iid, (int, str)) or isinstance(iid, bool):
            raise DataError(f"{path}: images[{i}]: 'image_id' must be an integer or a string")
        if iid in seen:
            raise DataError(f"{path}: duplicate image id {iid!r} (images[{i}])")
        seen.add(iid)
    return {
        "mode": mode,
        "k": ks,
        "iou_threshold": float(data.get("iou_threshold", 0.5)),
        "num_predicates": num,
        "predicate_names": names,
        "zero_shot_triplets": data.get("zeroshot_triplets"),
        "records": records,
    }


def iter_images(
    records: Sequence[Mapping[str, Any]],
    *,
    mode: str,
    num_predicates: int,
    int_ids: bool,
    source: str | Path | None = None,
) -> Iterator[ImageData]:
    """Validated :class:`ImageData` per record; with ``int_ids`` False, ids become positions.

    ``source``: the results file the records come from; a bad record then raises
    ``DataError("FILE: image <id>: ...")``, so the one error line says where to look.
    """
    for i, rec in enumerate(records):
        values = {canon: rec.get(key, MISSING) for canon, key in FILE_KEYS.items()}
        try:
            img = build_image(
                rec["image_id"], values, FILE_KEYS, mode=mode, num_predicates=num_predicates
            )
        except DataError as e:
            if source is None:
                raise
            raise DataError(f"{source}: {e}") from None
        img.image_id = rec["image_id"] if int_ids else i
        yield img
