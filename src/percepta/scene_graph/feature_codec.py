"""Detector features <-> plain values that ``torch.load(weights_only=True)`` reads back.

The disk tier of :class:`~percepta.scene_graph.feature_cache.DetectorFeatureCache` stores a
frozen detector's per-image :class:`~percepta.detection.relation_interface.DetectorFeatures`,
whose ``extra`` holds what each adapter needs later (dicts of maps, torchvision's
``ImageList``, dataclasses, scales). ``torch.save`` of those objects would need unsafe
unpickling to load, so :func:`encode_features` turns the structure into tagged plain dicts and
a list of CPU tensors (a tensor held in two places stays one; an expanded tensor is stored as
its distinct elements; large floating tensors optionally float16), and :func:`decode_features`
rebuilds it. Written by hand: torch's pytree does not cover dataclasses or ``ImageList`` and
keeps no tensor sharing.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import OrderedDict
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import torch

__all__ = ["encode_features", "decode_features", "reachable_tensors", "Unencodable"]

HALF_MIN_NUMEL = 1024  # smaller floating tensors (scales, sizes) are stored exactly
FP16_MAX = 65504.0  # a tensor with larger magnitudes (or inf / nan) is stored in its own dtype
_TAG = "__percepta_cache__"  # the type tag of an encoded non-plain value
_MAX_DEPTH = 32


def reachable_tensors(x: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """Every tensor reachable in a feature structure (may repeat a shared tensor)."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from reachable_tensors(v, depth + 1)
    elif isinstance(x, dict):
        for v in x.values():
            yield from reachable_tensors(v, depth + 1)
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):
        for f in dataclasses.fields(x):
            yield from reachable_tensors(getattr(x, f.name, None), depth + 1)
    elif isinstance(x, SimpleNamespace) or _is_image_list(x):
        yield from reachable_tensors(vars(x), depth + 1)


# ---------------------------------------------------------------------- encode / decode
class Unencodable(TypeError):
    """A value the disk tier cannot store (the entry then skips the disk tier)."""


def _is_image_list(x: Any) -> bool:
    from torchvision.models.detection.image_list import ImageList

    return type(x) is ImageList


class _Encoder:
    def __init__(self, half: bool) -> None:
        self.half = half
        self.memo: dict[int, int] = {}  # id(tensor) -> index: shared tensors stay one
        self.bases: dict[int, dict[str, Any]] = {}  # id(expanded tensor) -> its encoded base
        self.alive: list[torch.Tensor] = []  # the bases, kept until the encoding ends
        self.tensors: list[torch.Tensor] = []
        self.dtypes: list[str] = []

    def tensor(self, orig: torch.Tensor) -> dict[str, Any]:
        if orig.layout == torch.strided and any(
            st == 0 and n > 1 for st, n in zip(orig.stride(), orig.shape)
        ):
            # an expanded tensor (e.g. the Faster R-CNN adapter's padded-shape placeholder): its
            # distinct elements and the shape, never the materialised copy a device move makes
            keep = tuple(slice(0, 1) if st == 0 else slice(None) for st in orig.stride())
            if id(orig) not in self.bases:
                base = orig[keep].contiguous()
                self.alive.append(base)  # the memo is by id: no other tensor may reuse it
                self.bases[id(orig)] = self.tensor(base)
            return {_TAG: "expanded", "base": self.bases[id(orig)], "shape": list(orig.shape)}
        ref = self.memo.get(id(orig))
        if ref is None:
            t = orig
            if t.layout != torch.strided or t.is_quantized:
                raise Unencodable(f"a {t.layout} tensor")
            dtype = t.dtype
            t = t.detach()
            if (
                self.half
                and t.is_floating_point()
                and dtype != torch.float16
                and t.numel() >= HALF_MIN_NUMEL
                and float(t.abs().amax()) <= FP16_MAX  # False for inf / nan: kept as they are
            ):
                t = t.to(torch.float16)
            elif t.untyped_storage().nbytes() > t.numel() * t.element_size():
                t = t.clone()  # a view of a larger tensor: save only its own elements
            ref = self.memo[id(orig)] = len(self.tensors)
            self.tensors.append(t.cpu())
            self.dtypes.append(str(dtype).removeprefix("torch."))
        return {_TAG: "tensor", "ref": ref}

    def __call__(self, x: Any, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise Unencodable(f"nesting deeper than {_MAX_DEPTH}")
        enc = lambda v: self(v, depth + 1)  # noqa: E731
        tx = type(x)
        if x is None or tx in (bool, int, float, str):
            return x
        if tx is torch.Tensor:
            return self.tensor(x)
        if tx is list:
            return [enc(v) for v in x]
        if tx in (tuple, torch.Size):
            return {_TAG: "size" if tx is torch.Size else "tuple", "items": [enc(v) for v in x]}
        if tx in (dict, OrderedDict):
            kind = "dict" if tx is dict else "odict"
            return {_TAG: kind, "items": [[enc(k), enc(v)] for k, v in x.items()]}
        if tx is SimpleNamespace:
            return {_TAG: "namespace", "items": [[k, enc(v)] for k, v in vars(x).items()]}
        if isinstance(x, torch.dtype):
            return {_TAG: "dtype", "name": str(x).removeprefix("torch.")}
        if _is_image_list(x):
            return {_TAG: "image_list", "tensors": enc(x.tensors), "sizes": enc(x.image_sizes)}
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return {
                _TAG: "dataclass",
                "module": tx.__module__,
                "qualname": tx.__qualname__,
                "items": [[f.name, enc(getattr(x, f.name))] for f in dataclasses.fields(x)],
            }
        raise Unencodable(f"a {tx.__module__}.{tx.__qualname__}")


def encode_features(feats: Any, half: bool = True) -> dict[str, Any]:
    """A feature structure -> ``{"tree", "tensors", "dtypes"}`` of plain values and CPU tensors
    that ``torch.load(weights_only=True)`` reads back (module docstring). ``half``: floating
    tensors of >= ``HALF_MIN_NUMEL`` elements within float16's range as float16.

    Raises:
        TypeError: a value of another type (a numpy array, an arbitrary object)."""
    encoder = _Encoder(half)
    tree = encoder(feats)
    return {"tree": tree, "tensors": encoder.tensors, "dtypes": encoder.dtypes}


def _dataclass_type(module: str, qualname: str) -> type:
    """The dataclass ``module.qualname``, from an already imported module only: a cache file
    never makes percepta import code."""
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise ValueError(f"{module}.{qualname} is not an imported dataclass")
    return obj


def _decode(x: Any, tensors: list[torch.Tensor]) -> Any:
    if type(x) is list:
        return [_decode(v, tensors) for v in x]
    if type(x) is not dict:
        return x
    kind = x[_TAG]
    if kind == "tensor":
        return tensors[x["ref"]]
    if kind == "expanded":
        return _decode(x["base"], tensors).expand(x["shape"])
    if kind in ("tuple", "size"):
        items = tuple(_decode(v, tensors) for v in x["items"])
        return torch.Size(items) if kind == "size" else items
    if kind in ("dict", "odict"):
        pairs = [(_decode(k, tensors), _decode(v, tensors)) for k, v in x["items"]]
        return dict(pairs) if kind == "dict" else OrderedDict(pairs)
    if kind == "namespace":
        return SimpleNamespace(**{k: _decode(v, tensors) for k, v in x["items"]})
    if kind == "dtype":
        return _dtype(x["name"])
    if kind == "image_list":
        from torchvision.models.detection.image_list import ImageList

        return ImageList(_decode(x["tensors"], tensors), _decode(x["sizes"], tensors))
    if kind == "dataclass":
        cls = _dataclass_type(x["module"], x["qualname"])
        values = {k: _decode(v, tensors) for k, v in x["items"]}
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        obj = cls(**{k: v for k, v in values.items() if k in init})
        for k, v in values.items():
            if k not in init:
                object.__setattr__(obj, k, v)
        return obj
    raise ValueError(f"unknown entry kind {kind!r}")


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def decode_features(payload: dict[str, Any], device: torch.device | str | None = None) -> Any:
    """The inverse of :func:`encode_features`: tensors restored to their dtype (on
    ``device``, default where they are), shared tensors one object again."""
    tensors = []
    for t, name in zip(payload["tensors"], payload["dtypes"], strict=True):
        tensors.append(t.to(device=device, dtype=_dtype(name)))
    return _decode(payload["tree"], tensors)
