"""ONNX export of the quality transformers (IQT, TRIQ), a parity check against PyTorch, and the
onnxruntime predictor behind ``percepta.quality.load("model.onnx")``.

``percepta export CKPT`` on a quality checkpoint (:mod:`percepta.predict_dispatch`) ->
:func:`export_quality_checkpoint` -> :func:`export_quality_onnx`.

Graphs (inputs float32 in 0-1, torchvision's float image convention; the model's own
normalisation is inside; batch is dynamic):

* **IQT** (full-reference): inputs ``distorted`` and ``reference`` ``[B,3,S,S]`` with ``S`` the
  model's ``crop_size`` (fixed: the position tables have one row per token of an ``S x S``
  crop), output ``score [B]``, one per crop pair, on the dataset's scale: exactly
  :meth:`IQT.score_crops` mapped by ``score_range``. The test-time averaging over
  ``test_crops`` crops stays on the host, in :class:`OnnxQualityPredictor`, with the model's own
  functions (``_fit_to_crop``: upscale images smaller than the crop; ``grid_offsets``: the
  uniform crop grid), so a whole image scores as ``model.eval()`` scores it.
* **TRIQ** (no-reference): input ``images [B,3,H,W]``, outputs ``score [B]`` and
  ``feature_hw`` (int64 ``[2]``, the 1x1 projection's grid before pooling). ``H, W`` are fixed
  at the traced size by default; with ``dynamic=True`` they are dynamic axes. Tracing freezes
  two data-dependent decisions at the traced size: the released pooling rule (a 2x2 max-pool
  when the feature height is ``>= pool_from``) and the position table's size test. A dynamic
  graph is therefore right only for sizes in the traced size's pooling regime (and, in
  ``truncate`` mode, within the table): the predictor reads ``feature_hw`` and refuses any
  other size with a ``DataError`` naming it, rather than return a score PyTorch would not give.
  The graph takes the batch size from ``images.shape[0]`` (``len()`` would be frozen by tracing).

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``, as the detection export
(:mod:`percepta.export.onnx`; deprecated in torch 2.9 but working, fast to trace). Metadata
(``metadata_props``): ``percepta_version``, ``task=quality``, ``model`` (iqt/triq),
``full_reference``, ``score_range``, ``input_range=0-1``, ``inputs``, ``outputs``; IQT:
``crop_size``, ``test_crops``; TRIQ: ``input_size`` ([H, W] traced), ``dynamic``, ``pooled``,
``pool_from``, ``max_tokens`` (-1: the table is interpolated to any grid).

Parity (:func:`check_quality_parity`): onnxruntime (CPU) against ``model.eval()`` on seeded
uint8 images, graph level (batch 1 and 3, plus a second size for a dynamic TRIQ) and, for IQT,
whole images through both predictors (the crop grid included); scores agree within ``atol``
(1e-4 by default).
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from percepta.errors import CheckpointError, DataError, NotAvailableError, PerceptaError
from percepta.export.onnx import MAX_OPSET, MIN_OPSET, ExportError
from percepta.quality.iqt import IQT, _fit_to_crop, grid_offsets
from percepta.quality.layers import to_unit_list, unit_to_score
from percepta.quality.triq import TRIQ

__all__ = [
    "PARITY_ATOL",
    "IQTGraph",
    "TRIQGraph",
    "default_triq_size",
    "export_quality_onnx",
    "check_quality_parity",
    "export_quality_checkpoint",
    "OnnxQualityPredictor",
    "load_onnx_predictor",
    "is_quality_model",
    "cli_export_quality",
]

PARITY_ATOL = 1e-4
# metadata values stored as plain strings; every other value is JSON
_PLAIN = ("percepta_version", "task", "model", "input_dtype", "input_range", "position_mode")


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def is_quality_model(model: nn.Module) -> bool:
    """Whether :func:`export_quality_onnx` exports ``model`` (an IQT or a TRIQ)."""
    return isinstance(_unwrap(model), (IQT, TRIQ))


class IQTGraph(nn.Module):
    """The exported IQT graph: crop pairs (float 0-1, ``crop_size``) -> scores per pair."""

    def __init__(self, model: IQT) -> None:
        super().__init__()
        self.model = model

    def forward(self, distorted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        m = self.model
        return unit_to_score(m.score_crops(distorted, reference), m.low, m.high)


def _attention_any_length(mha: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """Self-attention of ``x [B, N, D]`` with ``mha``'s own weights, written so that the
    TorchScript exporter keeps ``N`` dynamic. By hand because ``nn.MultiheadAttention``
    traces its sequence length as a constant (torch 2.14: a graph traced at 25 tokens fails
    on 19), and the dynamo exporter, which handles it, takes ~20 s even for a tiny TRIQ."""
    b, d, heads = x.shape[0], mha.embed_dim, mha.num_heads
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, -1, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    weights = (q @ k.transpose(-2, -1) / math.sqrt(d // heads)).softmax(-1)
    return mha.out_proj((weights @ v).transpose(1, 2).reshape(b, -1, d))


def _encoder_any_length(encoder: nn.TransformerEncoder, x: torch.Tensor) -> torch.Tensor:
    """``encoder(x)`` in eval mode (post-LN layers, no mask) with :func:`_attention_any_length`."""
    for layer in encoder.layers:
        if layer.norm_first:
            raise ExportError("dynamic TRIQ export supports post-LN layers (norm_first=False)")
        x = layer.norm1(x + _attention_any_length(layer.self_attn, x))
        x = layer.norm2(x + layer.linear2(layer.activation(layer.linear1(x))))
    return encoder.norm(x) if encoder.norm is not None else x


class TRIQGraph(nn.Module):
    """The exported TRIQ graph: images (float 0-1) -> scores and the pre-pooling grid.

    The body is :meth:`TRIQ.score_batch` with the batch size read as ``images.shape[0]``; the
    grid comes from a forward hook on the model's 1x1 projection. ``dynamic=True`` (any height
    and width) swaps in :func:`_encoder_any_length` and, for ``position_mode="interpolate"``,
    always resizes the position grid (an identity at the table's own size: bilinear with
    ``align_corners=False`` samples exactly the table's cells), since :meth:`TRIQ.position`
    skips that resize with a Python test that tracing would freeze.
    """

    def __init__(self, model: TRIQ, dynamic: bool = False) -> None:
        super().__init__()
        self.model, self.dynamic = model, bool(dynamic)

    def _position(self, h: int, w: int) -> torch.Tensor:
        m = self.model
        if not (self.dynamic and m.position_mode == "interpolate"):
            return m.position(h, w)
        gh, gw = m.max_grid
        grid = m.pos[0, 1:].reshape(gh, gw, -1).permute(2, 0, 1).unsqueeze(0)
        grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
        return torch.cat([m.pos[0, :1], grid[0].flatten(1).t()])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        grids: list[torch.Tensor] = []
        handle = m.proj.register_forward_hook(
            lambda mod, args, out: grids.append(torch._shape_as_tensor(out)[2:])
        )
        try:
            f = m.features(images)
        finally:
            handle.remove()
        tokens = f.flatten(2).transpose(1, 2)
        tokens = torch.cat([m.token.expand(images.shape[0], -1, -1), tokens], 1)
        x = m.embed_drop(tokens + self._position(f.shape[-2], f.shape[-1]))
        x = _encoder_any_length(m.encoder, x) if self.dynamic else m.encoder(x)
        return m._score(m.head(x[:, 0])), grids[0]


# ---------------------------------------------------------------------------------- sizes
def _c5_grid(model: TRIQ, size: tuple[int, int]) -> tuple[int, int]:
    """The projection's grid (before pooling) of an ``H x W`` input, by one probe forward."""
    dev = model.pixel_mean.device
    with torch.no_grad():
        f = model.backbone(torch.zeros(1, 3, *size, device=dev))
    return int(f.shape[-2]), int(f.shape[-1])


def _taps_share_a_grid(model: IQT) -> bool:
    """Whether all of IQT's backbone taps have one resolution. When they do not (e.g. timm's
    ``test_resnet`` taps), :class:`~percepta.quality.layers.TapExtractor` pools them with
    ``adaptive_avg_pool2d`` to a size read from the tensors' shapes, which the TorchScript
    exporter can only translate when every input dimension is static: such graphs get a fixed
    batch (``test_crops``, one image's crops), recorded as metadata ``batch``."""
    c = model.crop_size
    with torch.no_grad():
        feats = model.backbone.body(torch.zeros(1, 3, c, c, device=model.pixel_mean.device))
    return len({tuple(f.shape[-2:]) for f in feats.values()}) == 1


def _pooled(model: TRIQ, grid_h: int) -> bool:
    """The released rule of :meth:`TRIQ.features` (2x2 max-pool when the height is large)."""
    return bool(model.pool_from) and grid_h >= model.pool_from


def _tokens(model: TRIQ, grid: tuple[int, int]) -> int:
    h, w = grid
    return (h // 2) * (w // 2) if _pooled(model, h) else h * w


def _max_tokens(model: TRIQ) -> int:
    return -1 if model.position_mode == "interpolate" else int(model.pos.shape[1]) - 1


def default_triq_size(model: TRIQ) -> tuple[int, int]:
    """The largest input whose tokens fill the position table (``max_grid``): twice the table
    in C5 cells when that size is pooled, else the table itself, times the backbone's stride;
    768x1024 (KonIQ's full size) for the released 12x16 table and a stride-32 ResNet-50."""
    probe = 256
    stride = max(1, round(probe / _c5_grid(model, (probe, probe))[0]))
    gh, gw = model.max_grid
    k = 2 if _pooled(model, 2 * gh) else 1
    return gh * k * stride, gw * k * stride


def _check_triq_size(model: TRIQ, size: tuple[int, int]) -> None:
    if min(size) < 32:
        raise ExportError(f"TRIQ export size {size[0]}x{size[1]}: it needs >= 32 px a side")
    n = _tokens(model, _c5_grid(model, size))
    limit = _max_tokens(model)
    if limit >= 0 and n > limit:
        raise ExportError(
            f"TRIQ export size {size[0]}x{size[1]} gives {n} tokens, more than the position "
            f"table's {limit}; pick a smaller --image-size"
        )


# ---------------------------------------------------------------------------------- export
def _metadata(model: nn.Module, extra: dict[str, Any]) -> dict[str, str]:
    import percepta

    m = _unwrap(model)
    iqt = isinstance(m, IQT)
    meta: dict[str, Any] = {
        "percepta_version": percepta.__version__,
        "task": "quality",
        "model": "iqt" if iqt else "triq",
        "full_reference": iqt,
        "score_range": [float(m.low), float(m.high)],
        "input_dtype": "float32",
        "input_range": "0-1",
        "inputs": ["distorted", "reference"] if iqt else ["images"],
        "outputs": ["score"] if iqt else ["score", "feature_hw"],
        **extra,
    }
    return {k: str(v) if k in _PLAIN else json.dumps(v) for k, v in meta.items()}


def export_quality_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    opset: int = 17,
    image_size: int | Sequence[int] | None = None,
    dynamic: bool = False,
) -> Path:
    """Write an IQT or TRIQ as an ONNX graph (see the module docstring).

    Args:
        model: an :class:`IQT` or :class:`TRIQ` (its mode is restored after).
        path: output ``.onnx`` file (folders are created).
        opset: ONNX opset, 11..20.
        image_size: TRIQ only: ``S`` or ``(H, W)`` of the traced input (default
            :func:`default_triq_size`). IQT always takes its ``crop_size``.
        dynamic: TRIQ only: dynamic height and width (sizes in the traced pooling regime).

    Returns:
        The written path; ``onnx.checker.check_model`` has passed on it.
    """
    import onnx

    m = _unwrap(model)
    if not is_quality_model(m):
        raise ExportError(
            f"cannot export {type(m).__name__} as a quality model: only IQT and TRIQ are supported"
        )
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dev = m.pixel_mean.device
    was_training = m.training
    m.eval()
    if isinstance(m, IQT):
        if image_size is not None or dynamic:
            raise ExportError(
                f"IQT takes {m.crop_size}x{m.crop_size} crops (model.crop_size): "
                "--image-size and --dynamic are for TRIQ"
            )
        c = m.crop_size
        graph: nn.Module = IQTGraph(m)
        example: tuple[torch.Tensor, ...] = (
            torch.rand(2, 3, c, c, generator=torch.Generator().manual_seed(0)).to(dev),
            torch.rand(2, 3, c, c, generator=torch.Generator().manual_seed(1)).to(dev),
        )
        names, outputs = ["distorted", "reference"], ["score"]
        batch = None if _taps_share_a_grid(m) else m.test_crops
        if batch is None:
            axes = {"distorted": {0: "batch"}, "reference": {0: "batch"}, "score": {0: "batch"}}
        else:  # see _taps_share_a_grid: a fixed batch of one image's crops
            axes = {}
            example = tuple(x[:1].expand(batch, -1, -1, -1).contiguous() for x in example)
        extra: dict[str, Any] = {"crop_size": c, "test_crops": m.test_crops, "batch": batch}
    else:
        if image_size is None:
            size = default_triq_size(m)
        elif isinstance(image_size, int):
            size = (int(image_size), int(image_size))
        else:
            size = (int(image_size[0]), int(image_size[-1]))
        _check_triq_size(m, size)
        graph = TRIQGraph(m, dynamic=dynamic)
        example = (torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0)).to(dev),)
        names, outputs = ["images"], ["score", "feature_hw"]
        axes = {"images": {0: "batch"}, "score": {0: "batch"}}
        if dynamic:
            axes["images"] = {0: "batch", 2: "height", 3: "width"}
        grid = _c5_grid(m, size)
        extra = {
            "input_size": list(size),
            "dynamic": bool(dynamic),
            "pooled": _pooled(m, grid[0]),
            "pool_from": int(m.pool_from),
            "max_tokens": _max_tokens(m),
            "position_mode": m.position_mode,
        }
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # PyTorch's fused inference kernel of TransformerEncoderLayer (used under no_grad in eval
    # mode) has no ONNX translation: trace the composite ops it is equivalent to
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
            torch.onnx.export(
                graph,
                example,
                str(path),
                dynamo=False,
                opset_version=int(opset),
                input_names=names,
                output_names=outputs,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except Exception as e:  # torch's errors are long; keep the first line and the cause
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(
            f"ONNX export of {type(m).__name__} to {path} failed: {type(e).__name__}: {first}"
        ) from e
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        m.train(was_training)
    proto = onnx.load(str(path))
    for key, value in _metadata(m, extra).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"percepta {type(m).__name__} quality model; see metadata_props"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


# ---------------------------------------------------------------------------------- runtime
def _read_metadata(session: Any, path: Path) -> dict[str, Any]:
    raw = dict(session.get_modelmeta().custom_metadata_map)
    if raw.get("task") != "quality" or raw.get("model") not in ("iqt", "triq"):
        raise CheckpointError(
            f"{path} is not a percepta quality export (metadata task={raw.get('task')!r}, "
            f"model={raw.get('model')!r}); export one with `percepta export CKPT`"
        )
    try:
        meta = {k: v if k in _PLAIN else json.loads(v) for k, v in raw.items()}
    except ValueError as e:
        raise CheckpointError(f"{path}: unreadable percepta metadata ({e})") from None
    for key in (
        "full_reference",
        "score_range",
        "crop_size" if raw["model"] == "iqt" else "input_size",
    ):
        if key not in meta:
            raise CheckpointError(f"{path}: its percepta metadata lacks {key!r}")
    return meta


class OnnxQualityPredictor:
    """onnxruntime predictor for an exported IQT or TRIQ; same scores as ``model.eval()``.

    ``predictor(images, references=None) -> [float]`` for lists of ``[3,H,W]`` images
    (``uint8`` 0-255 or float 0-1). Attributes: ``metadata``, ``full_reference``, ``name``.

    Args:
        path: ``.onnx`` file written by :func:`export_quality_onnx`.
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None) -> None:
        from percepta.export.runtime import open_session

        self.path = Path(path)
        self.session = open_session(self.path, providers)
        self.metadata = _read_metadata(self.session, self.path)
        self.full_reference = bool(self.metadata["full_reference"])
        self.name = self.metadata["model"].upper()

    def __repr__(self) -> str:
        return f"OnnxQualityPredictor({str(self.path)!r}, model={self.metadata['model']})"

    def run_graph(self, *inputs: torch.Tensor) -> list[np.ndarray]:
        """The graph's outputs for float 0-1 inputs in the graph's layout."""
        names = [i.name for i in self.session.get_inputs()]
        feed = {
            n: x.detach().to("cpu", torch.float32).contiguous().numpy()
            for n, x in zip(names, inputs)
        }
        try:
            return self.session.run(None, feed)
        except Exception as e:  # onnxruntime's own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            shapes = ", ".join("x".join(map(str, x.shape)) for x in inputs)
            raise DataError(
                f"{self.path}: onnxruntime failed on inputs {shapes}: {first}"
            ) from None

    def _iqt(self, images: list[torch.Tensor], refs: list[torch.Tensor]) -> list[float]:
        c, m = int(self.metadata["crop_size"]), int(self.metadata["test_crops"])
        dist, crops_d, crops_r = to_unit_list(images), [], []
        ref = to_unit_list(refs, "references")
        for i, (d, r) in enumerate(zip(dist, ref)):
            if d.shape != r.shape:
                raise DataError(
                    f"IQT: image {i} is {tuple(d.shape)} but its reference is {tuple(r.shape)}"
                )
            d, r = _fit_to_crop(d, r, c)
            for t, x in grid_offsets(d.shape[1], d.shape[2], c, m):
                crops_d.append(d[:, t : t + c, x : x + c])
                crops_r.append(r[:, t : t + c, x : x + c])
        scores = self._crop_scores(torch.stack(crops_d), torch.stack(crops_r))
        return [float(s) for s in scores.reshape(len(dist), m).astype(np.float64).mean(1)]

    def _crop_scores(self, dist: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
        """Scores of crop pairs; a fixed-batch graph (metadata ``batch``) runs in chunks of
        that size, the last one padded with copies of its first crop (their scores dropped)."""
        batch = self.metadata.get("batch")
        if not batch:
            return self.run_graph(dist, ref)[0]
        out = []
        for i in range(0, len(dist), batch):
            d, r = dist[i : i + batch], ref[i : i + batch]
            n = len(d)
            if n < batch:
                d = torch.cat([d, d[:1].expand(batch - n, -1, -1, -1)])
                r = torch.cat([r, r[:1].expand(batch - n, -1, -1, -1)])
            out.append(self.run_graph(d, r)[0][:n])
        return np.concatenate(out)

    def _triq(self, images: list[torch.Tensor]) -> list[float]:
        meta = self.metadata
        fixed = tuple(meta["input_size"])
        out: list[float] = []
        for i, x in enumerate(to_unit_list(images)):
            size = tuple(x.shape[-2:])
            if not meta.get("dynamic") and size != fixed:
                raise DataError(
                    f"TRIQ export {self.path.name} takes {fixed[0]}x{fixed[1]} images (exported "
                    f"with a fixed size); image {i} is {size[0]}x{size[1]}: resize it, or "
                    "export with --dynamic"
                )
            score, grid = self.run_graph(x[None])
            h, w = (int(v) for v in grid)
            pooled = bool(meta["pool_from"]) and h >= int(meta["pool_from"])
            tokens = (h // 2) * (w // 2) if pooled else h * w
            limit = int(meta.get("max_tokens", -1))
            if pooled != bool(meta["pooled"]) or (limit >= 0 and tokens > limit):
                regime = "pools its features" if meta["pooled"] else "does not pool"
                raise DataError(
                    f"TRIQ export {self.path.name}: image {i} of {size[0]}x{size[1]} px gives a "
                    f"{h}x{w} feature grid, outside what the graph traced at "
                    f"{fixed[0]}x{fixed[1]} handles (it {regime}; tables of "
                    f"{limit if limit >= 0 else 'any'} tokens); score it with the checkpoint, "
                    "or export at a size like it"
                )
            out.append(float(score[0]))
        return out

    def __call__(
        self, images: list[torch.Tensor], references: list[torch.Tensor] | None = None
    ) -> list[float]:
        if self.full_reference:
            if references is None:
                raise DataError(f"{self.path}: IQT is full-reference: give the references")
            return self._iqt(list(images), list(references))
        return self._triq(list(images))


def load_onnx_predictor(path: str | Path, device: str = "auto") -> Any:
    """A :class:`percepta.quality.predict.QualityPredictor` running the export ``path``
    (``device``: ``auto``/``cpu`` = onnxruntime's CPU provider, ``cuda`` = its CUDA provider)."""
    from percepta.quality.predict import QualityPredictor, resolve_device

    dev = resolve_device(device) if device != "auto" else torch.device("cpu")
    if dev.type not in ("cpu", "cuda"):
        raise NotAvailableError(f"--device {device}: ONNX models run on cpu or cuda")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if dev.type == "cuda" else None
    runner = OnnxQualityPredictor(path, providers=providers)
    return QualityPredictor(
        runner, full_reference=runner.full_reference, name=runner.name, source=str(path)
    )


# ---------------------------------------------------------------------------------- parity
def _images(n: int, size: tuple[int, int], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8) for _ in range(n)]


def _other_size(model: TRIQ, size: tuple[int, int]) -> tuple[int, int] | None:
    """A second input size in the traced size's pooling regime (and within the table)."""
    pooled = _pooled(model, _c5_grid(model, size)[0])
    limit = _max_tokens(model)
    h, w = size
    for cand in ((h - 32, w + 32), (h + 32, w - 32), (h - 32, w - 32), (h - 32, w), (h, w - 32)):
        if min(cand) < 32 or cand == size:
            continue
        grid = _c5_grid(model, cand)
        if _pooled(model, grid[0]) == pooled and (limit < 0 or _tokens(model, grid) <= limit):
            return cand
    return None


def check_quality_parity(
    model: nn.Module, onnx_path: str | Path, atol: float = PARITY_ATOL, seed: int = 0
) -> dict[str, Any]:
    """Compare the export with ``model.eval()`` on seeded uint8 images (see module docstring).

    Returns:
        ``{"scores": n compared, "max_score_diff": float, "atol": atol, "sizes": [[H, W]...],
        "ok": bool}``.
    """
    m = _unwrap(model)
    runner = OnnxQualityPredictor(onnx_path)
    was = m.training
    m.eval()
    diffs: list[float] = []
    sizes: list[list[int]] = []
    try:
        with torch.no_grad():
            if isinstance(m, IQT):
                c = m.crop_size
                d = [x.float() / 255 for x in _images(3, (c, c), seed)]
                r = [x.float() / 255 for x in _images(3, (c, c), seed + 1)]
                for k in (1, 3):  # the graph, batch 1 and 3 (chunked for a fixed batch)
                    dd, rr = torch.stack(d[:k]), torch.stack(r[:k])
                    got = runner._crop_scores(dd, rr)
                    dev = m.pixel_mean.device
                    ref = IQTGraph(m)(dd.to(dev), rr.to(dev)).cpu().numpy()
                    diffs.extend(np.abs(got.astype(np.float64) - ref).tolist())
                # whole images, the crop grid and averaging included (one smaller than a crop)
                shapes = [(c + c // 2, c + c // 4), (c - c // 4, c)]
                imgs = [x for s in shapes for x in _images(1, s, seed + 2)]
                refs = [x for s in shapes for x in _images(1, s, seed + 3)]
                got_full = runner(imgs, refs)
                dev = m.pixel_mean.device
                want = m([x.to(dev) for x in imgs], [{"reference": x.to(dev)} for x in refs])
                diffs.extend(abs(a - float(b["score"])) for a, b in zip(got_full, want))
                sizes = [[c, c], *map(list, shapes)]
            else:
                size = tuple(runner.metadata["input_size"])
                checks = [size]
                if runner.metadata.get("dynamic"):
                    other = _other_size(m, size)
                    if other is not None:
                        checks.append(other)
                for s in checks:
                    imgs = _images(3, s, seed)
                    for k in (1, 3):
                        got = runner([x for x in imgs[:k]])
                        dev = m.pixel_mean.device
                        want = m([x.to(dev) for x in imgs[:k]])
                        diffs.extend(abs(a - float(b["score"])) for a, b in zip(got, want))
                    sizes.append(list(s))
    finally:
        m.train(was)
    worst = max(diffs)
    return {
        "scores": len(diffs),
        "max_score_diff": worst,
        "atol": float(atol),
        "sizes": sizes,
        "ok": bool(worst <= atol),
    }


def export_quality_checkpoint(
    ckpt_path: str | Path,
    out_path: str | Path | None = None,
    *,
    opset: int = 17,
    image_size: int | Sequence[int] | None = None,
    dynamic: bool = False,
    check: bool = True,
) -> dict[str, Any]:
    """Export a quality checkpoint to ONNX and (optionally) check parity with PyTorch.

    Returns:
        ``{"path", "model", "opset", "size_mb", "parity": dict or None}``.
    """
    from percepta.checkpoints import check_task, load_checkpoint, model_from_checkpoint

    ckpt_path = Path(ckpt_path)
    ckpt = load_checkpoint(ckpt_path)
    check_task(ckpt, "quality", ckpt_path)
    model = model_from_checkpoint(ckpt, ckpt_path, device="cpu")
    del ckpt
    if not is_quality_model(model):
        raise ExportError(
            f"cannot export {ckpt_path}: its {type(model).__name__} is not an IQT or TRIQ"
        )
    out = Path(out_path) if out_path is not None else ckpt_path.with_suffix(".onnx")
    path = export_quality_onnx(model, out, opset=opset, image_size=image_size, dynamic=dynamic)
    parity = check_quality_parity(model, path) if check else None
    return {
        "path": str(path),
        "model": type(_unwrap(model)).__name__,
        "opset": int(opset),
        "size_mb": round(path.stat().st_size / 2**20, 2),
        "parity": parity,
    }


def cli_export_quality(args: argparse.Namespace) -> int:
    """``percepta export CKPT [--out] [--opset] [--image-size H [W]] [--dynamic] [--no-check]``
    for quality checkpoints."""
    if getattr(args, "format", "onnx") != "onnx":
        raise ExportError(f"unsupported export format {args.format!r} (only onnx)")
    size = getattr(args, "image_size", None)
    if size is not None and not 1 <= len(size) <= 2:
        raise PerceptaError("--image-size takes H or H W")
    info = export_quality_checkpoint(
        args.checkpoint,
        args.out,
        opset=args.opset,
        image_size=(size[0] if len(size) == 1 else tuple(size)) if size else None,
        dynamic=bool(getattr(args, "dynamic", False)),
        check=not args.no_check,
    )
    print(
        f"wrote {info['path']} ({info['model']}, {info['size_mb']} MB, opset {info['opset']}); "
        "onnx.checker: ok"
    )
    parity = info["parity"]
    if parity is None:
        return 0
    sizes = ", ".join("x".join(map(str, s)) for s in parity["sizes"])
    print(
        f"parity vs PyTorch on {parity['scores']} scores (sizes {sizes}): max score diff "
        f"{parity['max_score_diff']:.2e} (atol {parity['atol']:g}) -> "
        f"{'ok' if parity['ok'] else 'FAILED'}"
    )
    return 0 if parity["ok"] else 1
