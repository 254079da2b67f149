"""Per-image features of the frozen detector, kept across training epochs.

The relation head trains on a detector that never changes, so the detector's features of an
image are the same at every epoch: recomputing them each step (what Scene-Graph-Benchmark does,
the detector's backbone running under ``no_grad`` at every iteration) repeats the most
expensive part of a PredCls / SGCls step. :class:`DetectorFeatureCache` keeps each image's
:class:`~percepta.detection.relation_interface.DetectorFeatures` (computed for that image
alone, so any detector works, whatever its batching or padding) up to a memory budget; images
beyond it are computed at every step as before.

An entry is keyed by the image id *and* a checksum of the pixels (sum and position-weighted sum) and shape, so
an augmented image (other pixels under the same id) is recomputed, never served stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["DetectorFeatureCache", "features_nbytes"]


def features_nbytes(feats: Any) -> int:
    """Bytes held by the tensors of a ``DetectorFeatures`` (maps and tensor extras)."""
    total = sum(m.numel() * m.element_size() for m in feats.maps)
    for v in getattr(feats, "extra", {}).values():
        for t in v if isinstance(v, (list, tuple)) else [v]:
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def _checksum(image: torch.Tensor) -> tuple[float, float]:
    """The pixel sum and a position-weighted sum: a flip, crop or colour change alters it."""
    flat = image.detach().reshape(-1).double()
    weights = torch.arange(flat.numel(), device=flat.device, dtype=torch.float64) % 9973 + 1
    return float(flat.sum()), float((flat * weights).sum())


class DetectorFeatureCache:
    """Up to ``max_mb`` MiB of per-image detector features (see the module docstring)."""

    def __init__(self, max_mb: float) -> None:
        self.max_bytes = int(max_mb * 2**20)
        self._store: dict[Any, tuple[tuple[Any, ...], Any]] = {}
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()
        self.nbytes = 0

    def features(
        self, detector: Any, images: Sequence[torch.Tensor], image_ids: Sequence[Any]
    ) -> list[Any]:
        """One single-image ``DetectorFeatures`` per image, from the cache where possible.

        ``image_ids``: an id per image (``None``: never cached)."""
        out: list[Any] = []
        for image, iid in zip(images, image_ids):
            tag = (tuple(image.shape), _checksum(image)) if iid is not None else None
            hit = self._store.get(iid) if iid is not None else None
            if hit is not None and hit[0] == tag:
                self.hits += 1
                out.append(hit[1])
                continue
            self.misses += 1
            with torch.no_grad():
                feats = detector.features([image])
            if iid is not None:
                size = features_nbytes(feats)
                if hit is not None:  # same id, other pixels: replace
                    self.nbytes -= features_nbytes(hit[1])
                    del self._store[iid]
                if self.nbytes + size <= self.max_bytes:
                    self._store[iid] = (tag, feats)
                    self.nbytes += size
            out.append(feats)
        return out
