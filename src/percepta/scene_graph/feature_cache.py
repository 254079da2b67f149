"""Per-image features of the frozen detector, kept across training epochs.

The relation head trains on a detector that never changes, so the detector's features of an
image are the same at every epoch: recomputing them each step (what Scene-Graph-Benchmark does,
the detector's backbone running under ``no_grad`` at every iteration) repeats the most
expensive part of a PredCls / SGCls step. :class:`DetectorFeatureCache` keeps each image's
:class:`~percepta.detection.relation_interface.DetectorFeatures` (computed for that image
alone, so any detector works, whatever its batching or padding) up to a memory budget; images
beyond it are computed at every step as before, unless a disk tier is given.

An entry is keyed by the image id *and* a checksum of the pixels (sum and position-weighted
sum) and shape, so an augmented image (other pixels under the same id) is recomputed, never
served stale.

**Disk tier** (``disk_dir``): entries that do not fit the memory budget are written to
``disk_dir/<detector fingerprint>/<sha1 of the image id>.pt`` (one file per image, at most
``disk_max_mb`` MiB in all; :func:`detector_fingerprint` names the folder, so the features of
another detector, or of other weights, are never served) and read back in later epochs and
later runs. A file holds the entry's tag (shape + checksum), the image id and the features in
the plain form of :func:`~percepta.scene_graph.feature_codec.encode_features` (tensors, dicts, lists, tuples, scalars, dataclasses,
``SimpleNamespace`` and torchvision's ``ImageList``; a tensor held in two places, as Faster
R-CNN's ``maps`` and ``extra["features"]``, stays one tensor); with ``disk_half`` the large
floating tensors are stored as float16 and restored to their dtype on load (small ones, such as
CenterNet's letterbox scales, stay exact). Files are written atomically (a temporary file, then
``os.replace``) and loaded with ``torch.load(weights_only=True)``; a file whose tag or id does
not match, or that cannot be read (a run killed mid-write on a file system without atomic
rename, a truncated copy), is a miss: the features are recomputed and the file rewritten.
Features that cannot be encoded skip the disk tier (counted in ``disk_skipped``), as do
entries beyond ``disk_max_mb`` (``disk_full``); training never fails because of the cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from percepta.errors import ConfigError
from percepta.scene_graph.feature_codec import (
    Unencodable,
    decode_features,
    encode_features,
    reachable_tensors,
)

__all__ = ["DetectorFeatureCache", "features_nbytes", "detector_fingerprint"]

FORMAT = 1  # version of the disk files' layout; another version is a miss


def features_nbytes(feats: Any) -> int:
    """Bytes held by the tensors of a ``DetectorFeatures`` (maps and every tensor reachable in
    ``extra``, e.g. Faster R-CNN's ``ImageList``): the memory of their storages, each counted
    once (a tensor held twice, or two views of one buffer, are one; an expanded tensor is its
    few elements)."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for t in reachable_tensors([getattr(feats, "maps", []), getattr(feats, "extra", {})]):
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def _checksum(image: torch.Tensor) -> tuple[float, float]:
    """The pixel sum and a position-weighted sum: a flip, crop or colour change alters it."""
    flat = image.detach().reshape(-1).double()
    weights = torch.arange(flat.numel(), device=flat.device, dtype=torch.float64) % 9973 + 1
    return float(flat.sum()), float((flat * weights).sum())


def _key(image_id: Any) -> Any:
    """A hashable, value-based key of an image id (a tensor or numpy id by its value)."""
    if isinstance(image_id, torch.Tensor):
        values = image_id.detach().cpu().reshape(-1).tolist()
        return values[0] if len(values) == 1 else tuple(values)
    if isinstance(image_id, np.generic):
        return image_id.item()
    if isinstance(image_id, np.ndarray):
        return tuple(image_id.reshape(-1).tolist())
    if isinstance(image_id, list):
        return tuple(_key(v) for v in image_id)
    return image_id


# ------------------------------------------------------------------------- fingerprint
def _plain(v: Any) -> bool:
    if v is None or type(v) in (bool, int, float, str):
        return True
    return type(v) in (list, tuple) and all(_plain(x) for x in v)


def detector_fingerprint(detector: Any) -> str:
    """A hex sha1 naming a detector's weights and settings: the disk tier's folder name.

    ``detector``: an ``nn.Module`` or a ``RelationDetector`` adapter (its ``.model`` is used).
    Hashed: every ``state_dict`` entry (name, dtype, shape, bytes), the module classes and
    their plain public attributes (e.g. ``input_size``, ``min_size``: settings that change the
    features but live outside the weights). It reads the weights once (~0.1 s for a
    ResNet-18), cheap next to a training run. An object without a module is named by its
    class only (a warning: such detectors cannot be told apart)."""
    h = hashlib.sha1(f"percepta-feature-cache-{FORMAT}".encode())
    h.update(type(detector).__qualname__.encode())
    module = detector if isinstance(detector, nn.Module) else getattr(detector, "model", None)
    if not isinstance(module, nn.Module):
        warnings.warn(
            f"feature cache: {type(detector).__qualname__} is not an nn.Module (nor has one as "
            ".model): its disk folder is named by its class only",
            stacklevel=2,
        )
        return h.hexdigest()
    for name, sub in module.named_modules():
        h.update(f"|{name}:{type(sub).__module__}.{type(sub).__qualname__}".encode())
        for k, v in sorted(vars(sub).items()):
            if not k.startswith("_") and k != "training" and _plain(v):
                h.update(f"|{k}={v!r}".encode())
    for name, t in module.state_dict().items():
        if not isinstance(t, torch.Tensor):
            h.update(f"|{name}={t!r}".encode())
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"|{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# -------------------------------------------------------------------------------- the cache
class DetectorFeatureCache:
    """Up to ``max_mb`` MiB of per-image detector features in memory, and beyond that up to
    ``disk_max_mb`` MiB of them in ``disk_dir`` (see the module docstring).

    Args:
        max_mb: the memory budget (<= 0: nothing in memory).
        disk_dir: the disk tier's folder (``None``: no disk tier); created if missing.
        disk_max_mb: the disk tier's budget, files already in the folder included.
        disk_half: store large floating tensors as float16 (half the bytes; the features'
            relative error is then ~5e-4).
        detector_fingerprint: names the subfolder (:func:`detector_fingerprint`); "" = the
            folder ``default``.

    Counters: ``hits`` (memory), ``disk_hits``, ``misses`` (features computed), ``disk_writes``,
    ``disk_errors`` (unreadable or unwritable files), ``disk_skipped`` (unencodable features),
    ``disk_full`` (entries not written: budget reached).

    Raises:
        ConfigError: ``disk_dir`` cannot be created.
    """

    def __init__(
        self,
        max_mb: float,
        disk_dir: str | os.PathLike | None = None,
        disk_max_mb: float = 65536.0,
        disk_half: bool = True,
        detector_fingerprint: str = "",
    ) -> None:
        self.max_bytes = int(max_mb * 2**20)
        self._store: dict[Any, tuple[tuple[Any, ...], Any]] = {}
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0
        self.disk_writes = 0
        self.disk_errors = 0
        self.disk_skipped = 0
        self.disk_full = 0
        self.disk_half = bool(disk_half)
        self.disk_max_bytes = int(disk_max_mb * 2**20)
        self.folder: Path | None = None
        self._file_sizes: dict[str, int] = {}  # file name -> bytes
        self._disk_bytes = 0  # their sum, kept up to date (57k files: no re-summing)
        self._warned = False
        if disk_dir is not None and str(disk_dir) != "":
            self.folder = Path(disk_dir) / (detector_fingerprint or "default")
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                with os.scandir(self.folder) as it:
                    for e in it:
                        if e.name.endswith(".pt") and e.is_file():
                            self._file_sizes[e.name] = e.stat().st_size
                self._disk_bytes = sum(self._file_sizes.values())
            except OSError as e:
                raise ConfigError(
                    f"feature cache folder {self.folder}: cannot use it ({e.strerror or e})"
                ) from None

    def __len__(self) -> int:
        return len(self._store)

    @property
    def disk_nbytes(self) -> int:
        """Bytes of the files in the disk tier's folder (as this cache knows them)."""
        return self._disk_bytes

    def stats(self) -> dict[str, int]:
        """The counters and sizes, e.g. for a log line."""
        keys = ("hits", "disk_hits", "misses", "disk_writes", "disk_errors", "disk_skipped")
        out = {k: int(getattr(self, k)) for k in (*keys, "disk_full")}
        out.update(entries=len(self), nbytes=self.nbytes, disk_nbytes=self.disk_nbytes)
        return out

    def clear(self) -> None:
        """Forget the memory tier (the disk tier's files stay)."""
        self._store.clear()
        self.nbytes = 0

    def features(
        self, detector: Any, images: Sequence[torch.Tensor], image_ids: Sequence[Any]
    ) -> list[Any]:
        """One single-image ``DetectorFeatures`` per image, from the cache where possible.

        ``image_ids``: an id per image (``None``: never cached)."""
        out: list[Any] = []
        for image, iid in zip(images, image_ids):
            key = _key(iid)
            tag = (tuple(image.shape), _checksum(image)) if key is not None else None
            hit = self._store.get(key) if key is not None else None
            if hit is not None and hit[0] == tag:
                self.hits += 1
                out.append(hit[1])
                continue
            if key is not None and self.folder is not None:
                feats = self._load(key, tag, image.device)
                if feats is not None:
                    self.disk_hits += 1
                    self._remember(key, tag, feats)
                    out.append(feats)
                    continue
            self.misses += 1
            with torch.no_grad():
                feats = detector.features([image])
            stored = key is not None and self._remember(key, tag, feats)
            if key is not None and not stored and self.folder is not None:
                self._save(key, tag, feats)
            out.append(feats)
        return out

    def _remember(self, key: Any, tag: Any, feats: Any) -> bool:
        """Into the memory tier (replacing the key's entry) if it fits; True if stored."""
        old = self._store.pop(key, None)
        if old is not None:  # same id, other pixels: replace
            self.nbytes -= features_nbytes(old[1])
        size = features_nbytes(feats)
        if self.nbytes + size > self.max_bytes:
            return False
        self._store[key] = (tag, feats)
        self.nbytes += size
        return True

    # ------------------------------------------------------------------------- disk tier
    def _name(self, key: Any) -> str:
        return hashlib.sha1(repr(key).encode()).hexdigest() + ".pt"

    def _load(self, key: Any, tag: Any, device: torch.device) -> Any:
        """The features of ``key`` from its file if it holds ``tag``'s; ``None`` otherwise."""
        assert self.folder is not None
        path = self.folder / self._name(key)
        try:
            payload = torch.load(path, map_location=device, weights_only=True)
        except FileNotFoundError:
            return None
        except Exception:  # truncated / corrupt: a miss, the file is rewritten
            self.disk_errors += 1
            return None
        try:
            if (
                payload.get("format") != FORMAT
                or payload.get("key") != repr(key)
                or payload.get("half") != self.disk_half
                or payload.get("tag") != tag
            ):
                return None  # other pixels (augmentation) or another layout: rewritten
            return decode_features(payload["features"], device)
        except Exception:
            self.disk_errors += 1
            return None

    def _save(self, key: Any, tag: Any, feats: Any) -> None:
        assert self.folder is not None
        try:
            encoded = encode_features(feats, self.disk_half)
        except Unencodable:
            self.disk_skipped += 1
            return
        name = self._name(key)
        others = self.disk_nbytes - self._file_sizes.get(name, 0)
        estimate = sum(t.numel() * t.element_size() for t in encoded["tensors"])
        if others + estimate > self.disk_max_bytes:
            self.disk_full += 1
            return
        payload = {
            "format": FORMAT,
            "key": repr(key),
            "half": self.disk_half,
            "tag": tag,
            "features": encoded,
        }
        tmp: Path | None = None
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self.folder, prefix=f".{name}.", suffix=".tmp")
            tmp = Path(tmp_name)
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
            size = tmp.stat().st_size
            if others + size > self.disk_max_bytes:
                self.disk_full += 1
                return
            os.replace(tmp, self.folder / name)
            tmp = None
            self._disk_bytes = others + size
            self._file_sizes[name] = size
            self.disk_writes += 1
        except OSError as e:  # disk full, permissions: keep training, computing as before
            self.disk_errors += 1
            if not self._warned:
                self._warned = True
                warnings.warn(f"feature cache: cannot write to {self.folder}: {e}", stacklevel=3)
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
