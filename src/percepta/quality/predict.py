"""Score images with a trained quality model: the Python API and ``percepta predict``.

Python::

    from percepta.quality import load
    predictor = load("runs/iqt/checkpoints/best.pt")      # or an exported .onnx
    predictor("distorted.png", "reference.png")           # IQT (full-reference) -> float
    predictor(image_tensor)                               # TRIQ (no-reference) -> float

``load(checkpoint, device="auto") -> QualityPredictor``; the predictor takes one image as a path,
a ``[3,H,W]`` tensor (``uint8`` 0-255 or float 0-1, torchvision's convention), a ``[H,W,3]``
array or a PIL image, and returns the score on the training data's scale (higher is better). It
runs the model's own evaluation forward, so IQT averages its ``test_crops`` crops on the uniform
grid exactly as ``percepta eval`` does, and TRIQ takes any size.

Command line (``percepta predict CKPT ...`` dispatches here for quality checkpoints, see
:mod:`percepta.predict_dispatch`)::

    percepta predict triq.pt photos/ --out scores.csv                  # no-reference
    percepta predict iqt.pt dist/ --reference refs/ --out scores.csv   # same names in refs/
    percepta predict iqt.pt --pairs table.csv --out scores.csv         # image,reference columns
    ... --attention overlays/                                          # + one PNG per image

Output: a CSV ``image,score`` (``image,reference,score`` for full-reference models), one row per
scored image, readable by ``percepta score quality --pred``. ``--out`` is that file when it ends
in ``.csv``, else a folder that receives ``scores.csv``. The ``image`` column is the path
relative to the folder given (``533.JPG`` for ``photos/533.JPG``), a file argument as given, or
the ``--pairs`` cell, so the file pairs with a MOS file by name. ``--reference`` is one file (the
reference of every image) or a folder holding a reference under each image's relative name;
``--pairs`` is a csv with an ``image`` and a ``reference`` column, paths relative to the csv's
folder (a percepta IQA meta table is one).

Errors: an unreadable image, a missing or unreadable reference, or an image whose size differs
from its reference's is reported on stderr (``skipped: <file>: <reason>``), counted, and skipped;
the run fails (exit status 2) only when no image could be scored.

Devices: ``auto`` picks CUDA when available. The file-finding and device helpers mirror
:mod:`percepta.detection.predict` (a task may not import another task).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from percepta.data.images import read_rgb
from percepta.errors import CheckpointError, DataError, NotAvailableError, PerceptaError

__all__ = [
    "IMAGE_EXTENSIONS",
    "QualityItem",
    "ScoredImage",
    "ScoreResult",
    "QualityPredictor",
    "load",
    "as_image",
    "items_from_paths",
    "items_from_pairs",
    "resolve_device",
    "cli_predict_quality",
]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
ScoreFn = Callable[[list[torch.Tensor], "list[torch.Tensor] | None"], list[float]]


# ---------------------------------------------------------------------------------- inputs
@dataclass
class QualityItem:
    """One image to score: ``image`` (and ``reference_id``) are written to the CSV;
    ``problem`` (if set) is why it cannot be scored, known before reading (e.g. no reference
    found)."""

    image: str
    path: Path
    reference: Path | None = None
    problem: str = ""
    reference_id: str = ""


@dataclass
class ScoredImage:
    """A scored image of :meth:`QualityPredictor.score_files`."""

    image: str
    path: Path
    score: float
    reference: Path | None = None
    attention: Path | None = None
    reference_id: str = ""


@dataclass
class ScoreResult:
    """What :meth:`QualityPredictor.score_files` returns: scores in input order and the skipped
    files, one ``"<file>: <reason>"`` line each."""

    scores: list[ScoredImage] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    full_reference: bool = False

    def write_csv(self, path: str | os.PathLike) -> Path:
        """``image,score`` (``image,reference,score`` when full-reference) to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                ["image", "reference", "score"] if self.full_reference else ["image", "score"]
            )
            for s in self.scores:
                ref = [s.reference_id or str(s.reference or "")] if self.full_reference else []
                w.writerow([s.image, *ref, repr(float(s.score))])
        return path


def as_image(image: Any, what: str = "image") -> torch.Tensor:
    """A path, PIL image, ``[H,W,3]``/``[3,H,W]`` array or ``[3,H,W]`` tensor -> a ``[3,H,W]``
    tensor (``uint8`` stays 0-255, float stays 0-1; the model checks the range)."""
    if isinstance(image, (str, os.PathLike)):
        return read_rgb(image)
    from PIL import Image

    if isinstance(image, Image.Image):
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[-1] == 3 and arr.shape[0] != 3:
            arr = arr.transpose(2, 0, 1)
        image = torch.from_numpy(np.ascontiguousarray(arr))
    if isinstance(image, torch.Tensor):
        if image.dim() == 4 and image.shape[0] == 1:
            image = image[0]
        if image.dim() != 3 or image.shape[0] != 3:
            raise DataError(f"{what}: expected an RGB [3,H,W] image, got {tuple(image.shape)}")
        return image
    raise DataError(
        f"{what}: expected a file path, a PIL image, an array or a tensor, got {type(image).__name__}"
    )


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        q for q in folder.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS
    )


def items_from_paths(
    paths: Sequence[str | os.PathLike], reference: str | os.PathLike | None = None
) -> list[QualityItem]:
    """Files and folders (recursively, sorted) -> items; see the module docstring for the ids
    and for ``reference`` (one file, or a folder of references under the images' names)."""
    ref = Path(reference) if reference is not None else None
    if ref is not None and not ref.exists():
        raise PerceptaError(f"--reference: no such file or folder: {ref}")
    items: list[QualityItem] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [(q.relative_to(p).as_posix(), q) for q in _images_in(p)]
        elif p.is_file():
            found = [(str(p), p)]
        else:
            raise PerceptaError(f"no such file or folder: {p}")
        for ident, path in found:
            item = QualityItem(ident, path)
            if ref is not None and ref.is_dir():
                name = path.relative_to(p) if p.is_dir() else Path(path.name)
                item.reference, item.reference_id = ref / name, name.as_posix()
                if not item.reference.is_file():
                    item.problem = f"{path}: no reference {item.reference}"
            elif ref is not None:
                item.reference, item.reference_id = ref, str(ref)
            items.append(item)
    return items


def items_from_pairs(table: str | os.PathLike) -> list[QualityItem]:
    """A csv with an ``image`` column and (full-reference) a ``reference`` column, paths relative
    to the csv's folder -> items (the ``image`` cell is the id); a percepta IQA meta table is
    one. An empty ``reference`` cell makes that item a skip."""
    table = Path(table)
    try:
        with table.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            header = list(rows[0]) if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"--pairs {table}: cannot read ({e})") from None
    if not rows:
        raise DataError(f"--pairs {table}: no rows (a header line and one row per image)")
    if "image" not in header:
        raise DataError(f"--pairs {table}: no 'image' column (columns: {', '.join(header)})")
    root, items = table.parent, []
    for line, row in enumerate(rows, start=2):
        image = (row.get("image") or "").strip()
        if not image:
            raise DataError(f"--pairs {table}: line {line}: empty 'image' cell")
        item = QualityItem(image, root / image)
        ref = (row.get("reference") or "").strip()
        if ref:
            item.reference, item.reference_id = root / ref, ref
        items.append(item)
    return items


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` (CUDA when available, else CPU), or a device name this machine has."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise PerceptaError(
            f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NotAvailableError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise NotAvailableError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise NotAvailableError(f"--device {name}: mps is not available on this machine")
    return dev


# ---------------------------------------------------------------------------------- predictor
class QualityPredictor:
    """Scores images with a quality model (a checkpoint's or an ONNX export's).

    Args:
        score: ``score(images, references) -> [float]`` for lists of ``[3,H,W]`` images
            (``references`` is ``None`` for a no-reference model).
        full_reference: whether a reference is needed.
        model: the PyTorch model (attention maps need it); ``None`` for ONNX.
        name: the model's name in messages (``"IQT"``); source: the file it came from.
    """

    def __init__(
        self,
        score: ScoreFn,
        *,
        full_reference: bool,
        model: nn.Module | None = None,
        name: str = "the model",
        source: str = "",
    ) -> None:
        self._score, self.full_reference = score, bool(full_reference)
        self.model, self.name, self.source = model, name, source

    def _check_reference(self, reference: Any, what: str = "") -> None:
        where = f"{what}: " if what else ""
        if self.full_reference and reference is None:
            raise DataError(
                f"{where}{self.name} is full-reference: give the reference image too, "
                "predictor(image, reference)"
            )
        if not self.full_reference and reference is not None:
            raise DataError(f"{where}{self.name} is no-reference: it takes no reference image")

    def __call__(self, image: Any, reference: Any = None) -> float:
        """The score of one image (and its reference, for a full-reference model)."""
        self._check_reference(reference)
        name = str(image) if isinstance(image, (str, os.PathLike)) else "image"
        img = as_image(image, name)
        refs = None
        if reference is not None:
            ref_name = str(reference) if isinstance(reference, (str, os.PathLike)) else "reference"
            refs = [as_image(reference, ref_name)]
            if refs[0].shape[-2:] != img.shape[-2:]:
                raise DataError(
                    f"{name}: {img.shape[2]}x{img.shape[1]} px, but its reference {ref_name} is "
                    f"{refs[0].shape[2]}x{refs[0].shape[1]} px"
                )
        return float(self._score([img], refs)[0])

    def attention(self, image: Any, reference: Any = None, layers: str = "last") -> np.ndarray:
        """The quality token's attention map ``[H, W]`` (:mod:`percepta.quality.attention`)."""
        return self.score_and_attention(image, reference, layers)[1]

    def score_and_attention(
        self, image: Any, reference: Any = None, layers: str = "last"
    ) -> tuple[float, np.ndarray]:
        """``(score, attention map [H, W])`` of one image from one forward pass."""
        if self.model is None:
            raise NotAvailableError(
                f"{self.source or 'this model'}: attention maps need the PyTorch checkpoint "
                "(.pt), not an ONNX export"
            )
        from percepta.quality.attention import score_and_attention

        self._check_reference(reference)
        img = as_image(image)
        ref = as_image(reference, "reference") if reference is not None else None
        return score_and_attention(self.model, img, ref, layers)

    # ---------------------------------------------------------------------------- files
    def _read(self, item: QualityItem) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The item's image and reference (DataError naming the file)."""
        if item.problem:
            raise DataError(item.problem)
        img = read_rgb(item.path)
        if not self.full_reference:
            return img, None
        if item.reference is None:
            raise DataError(f"{item.path}: no reference given ({self.name} is full-reference)")
        ref = read_rgb(item.reference)
        if ref.shape != img.shape:
            raise DataError(
                f"{item.path}: {img.shape[2]}x{img.shape[1]} px, but its reference "
                f"{item.reference} is {ref.shape[2]}x{ref.shape[1]} px"
            )
        return img, ref

    def _run(self, batch: list[tuple[QualityItem, torch.Tensor, torch.Tensor | None]]):
        """``(item, score, error)`` per image of a batch; after a DataError, one image at a
        time, so the message names the file."""
        images = [b[1] for b in batch]
        refs = [b[2] for b in batch] if self.full_reference else None
        try:
            return [(b[0], s, None) for b, s in zip(batch, self._score(images, refs))]
        except DataError as e:
            if len(batch) == 1:
                return [(batch[0][0], None, f"{batch[0][0].path}: {e}")]
            return [r for b in batch for r in self._run([b])]

    def score_files(
        self,
        items: Sequence[QualityItem | str | os.PathLike],
        *,
        batch_size: int = 8,
        attention_dir: str | os.PathLike | None = None,
        on_error: Callable[[str], None] | None = None,
        progress: bool = False,
    ) -> ScoreResult:
        """Score files (or :class:`QualityItem` s) in batches; bad files are reported through
        ``on_error`` (``"<file>: <reason>"``) and skipped. With ``attention_dir`` one overlay
        PNG per scored image, ``<dir>/<position:05d>_<stem>.png``."""
        from tqdm import tqdm

        todo = [
            it if isinstance(it, QualityItem) else QualityItem(str(it), Path(it)) for it in items
        ]
        result = ScoreResult(full_reference=self.full_reference)

        def fail(message: str) -> None:
            result.errors.append(message)
            if on_error is not None:
                on_error(message)

        if attention_dir is not None and self.model is None:
            raise NotAvailableError(
                f"{self.source or 'this model'}: attention maps need the PyTorch checkpoint "
                "(.pt), not an ONNX export"
            )
        position = {id(it): i for i, it in enumerate(todo)}
        bar = tqdm(total=len(todo), desc="predict", unit="img", disable=not progress)
        for start in range(0, len(todo), max(1, int(batch_size))):
            batch = []
            for item in todo[start : start + max(1, int(batch_size))]:
                try:
                    batch.append((item, *self._read(item)))
                except DataError as e:
                    fail(str(e))
            for item, score, error in self._run(batch) if batch else []:
                if error is not None:
                    fail(error)
                    continue
                scored = ScoredImage(
                    item.image, item.path, float(score), item.reference, None, item.reference_id
                )
                if attention_dir is not None:
                    scored.attention = self._overlay(item, position[id(item)], attention_dir)
                result.scores.append(scored)
            bar.update(len(todo[start : start + max(1, int(batch_size))]))
        bar.close()
        return result

    def _overlay(self, item: QualityItem, index: int, folder: str | os.PathLike) -> Path:
        from percepta.quality.attention import save_overlay

        img = read_rgb(item.path)
        ref = read_rgb(item.reference) if self.full_reference and item.reference else None
        score, amap = self.score_and_attention(img, ref)
        out = Path(folder) / f"{index:05d}_{item.path.stem}.png"
        return save_overlay(img, amap, out, title=f"{score:.3f}")


def _model_name(model: nn.Module) -> str:
    return type(getattr(model, "module", model)).__name__


def _check_quality_model(model: nn.Module, path: str) -> None:
    """Refuse a checkpoint labelled ``quality`` whose model is registered for another task."""
    from percepta.registry import MODELS

    section = getattr(getattr(model, "percepta_config", None), "model", None)
    name = str(getattr(section, "name", "") or "")
    task = MODELS.entry(name).task if name in MODELS else None
    if task not in (None, "quality"):
        raise CheckpointError(
            f"checkpoint {path} is labelled task 'quality', but its model {name!r} is a "
            f"{task} model; use a quality checkpoint (IQT, TRIQ)"
        )


def load(checkpoint: str | os.PathLike, device: str | torch.device = "auto") -> QualityPredictor:
    """A :class:`QualityPredictor` for a quality checkpoint (``.pt``, written by ``percepta
    train``) or an ONNX export of one (``.onnx``, ``percepta export``).

    Raises:
        CheckpointError: a missing or corrupt file, or a checkpoint of another task.
    """
    path = str(checkpoint)
    if path.endswith(".onnx"):
        from percepta.export.onnx_quality import load_onnx_predictor

        return load_onnx_predictor(path, device)
    from percepta.checkpoints import check_task, load_checkpoint, model_from_checkpoint
    from percepta.inference import inference_inputs, run_model

    dev = resolve_device(device)
    ckpt = load_checkpoint(path)
    check_task(ckpt, "quality", path)
    model = model_from_checkpoint(ckpt, path, device=dev)
    _check_quality_model(model, path)
    full_reference = "reference" in inference_inputs(model)

    def score(images: list[torch.Tensor], refs: list[torch.Tensor] | None) -> list[float]:
        ims = [im.to(dev) for im in images]
        targets = [{"reference": r.to(dev)} for r in refs] if refs is not None else None
        with torch.inference_mode():
            preds = run_model(model, ims, targets)
        return [float(p["score"]) for p in preds]

    return QualityPredictor(
        score, full_reference=full_reference, model=model, name=_model_name(model), source=path
    )


# ---------------------------------------------------------------------------------- command
def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def cli_predict_quality(args: argparse.Namespace) -> int:
    """``percepta predict CKPT [IMAGES...] --out FILE.csv|DIR [--reference R | --pairs CSV]
    [--attention DIR] [--batch-size] [--device]`` for quality checkpoints."""
    pairs = getattr(args, "pairs", None)
    reference = getattr(args, "reference", None)
    images = list(getattr(args, "images", None) or [])
    if getattr(args, "coco", None):
        raise PerceptaError("--coco is for detection checkpoints; quality predictions are a csv")
    if pairs and (images or reference):
        raise PerceptaError("give either --pairs CSV or image files/folders (with --reference)")
    if not pairs and not images:
        raise PerceptaError("give image files or folders, or --pairs CSV")
    predictor = load(args.checkpoint, args.device)
    if predictor.full_reference and not (pairs or reference):
        raise PerceptaError(
            f"{args.checkpoint}: {predictor.name} is full-reference: give --reference "
            "(one file, or a folder with each image's reference under the same name) or "
            "--pairs CSV (image,reference columns)"
        )
    if not predictor.full_reference and reference:
        raise PerceptaError(
            f"{args.checkpoint}: {predictor.name} is no-reference: --reference is not used"
        )
    items = items_from_pairs(pairs) if pairs else items_from_paths(images, reference)
    if not items:
        raise PerceptaError(f"no image files found in {', '.join(images)}")
    if not predictor.full_reference:
        for it in items:
            it.reference, it.reference_id = None, ""
    repeated = [i for i, n in Counter(it.image for it in items).items() if n > 1]
    if repeated:
        _stderr(
            f"warning: {len(repeated)} image ids occur more than once (e.g. {repeated[0]!r}); "
            "`percepta score quality` refuses duplicate ids"
        )
    result = predictor.score_files(
        items,
        batch_size=args.batch_size,
        attention_dir=getattr(args, "attention", None),
        on_error=lambda m: _stderr(f"skipped: {m}"),
        progress=sys.stderr.isatty(),
    )
    if not result.scores:
        raise DataError(
            f"none of the {len(items)} images could be scored (first: {result.errors[0]}); "
            "nothing was written"
        )
    out = Path(args.out)
    csv_path = result.write_csv(out if out.suffix.lower() == ".csv" else out / "scores.csv")
    extra = f"; {len(result.errors)} skipped (listed above)" if result.errors else ""
    if getattr(args, "attention", None):
        extra += f"; attention overlays in {args.attention}"
    print(f"{len(result.scores)} images scored -> {csv_path}{extra}")
    return 0
