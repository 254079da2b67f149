"""Image-quality inference speed: TRIQ's padded mixed-resolution batch and IQT's batched M crops.

1. ``triq_mixed_resolution_<backbone>``: TRIQ (eval mode, no grad) on a list of mixed-resolution
   images (``--images``, default 16, cycling 384x512, 500x500, 512x384, 320x480: the size mix of
   real NR-IQA data such as KonIQ / LIVE-C). ours = one ``model(images)`` call with the whole list
   (the CNN once per distinct size, then one padded transformer batch with a key padding mask),
   baseline = one image at a time (``model([image])`` in a loop). The released TRIQ (ResNet-50
   backbone) and the ResNet-18 preset (``configs/quality/triq_r18_clive.yaml``).
2. ``iqt_mcrop_<preset>``: IQT test-time M-crop averaging (``test_crops``) on reference /
   distorted pairs. ours = ``model(images, inputs)`` (all crops of all images through the
   network as one batch), baseline = a loop over the crops written here: each crop pair through
   ``model.score_crops`` on its own, then the mean per image. The ``iqt_r18_builtin`` preset
   sizes (ResNet-18, crop 96, 4 crops, the built-in data's 128 px images); ``--paper`` adds the
   paper's IQT (Inception-ResNet-V2, crop 256, 20 crops, two 384x512 pairs: slow on a CPU).

Models are randomly initialised (nothing downloads; speed does not depend on the weights).
Sizes are H x W. Images are deterministic smooth colour fields plus noise of a per-image
strength, so the scores differ from image to image. Every row checks that ours and baseline
gave the same scores (on the last timed run): the largest difference must stay within
``atol = 1e-5 x (high - low)`` of the score range (float32 reordering differs by ~1e-7 of the
range), else the script exits non-zero naming the row and the image; ``score_spread`` (max - min
over the images) shows how far apart the scores are. Each figure is the median over
``--repeats`` timed runs after a warm-up call of each side (the two sides take turns within
every repeat, so a fluctuating load hits both alike). ``ours`` / ``baseline`` are wall seconds
per image (``ratio = baseline / ours``); ``images_per_s`` gives the same as throughput and
``cpu_s_per_image`` the process CPU time (all threads; on a shared machine the wall figures
swing with the neighbours' load, so read both).

Usage: ``python benchmarks/bench_quality.py [--quick] [--threads 2] [--repeats 3] [--paper]``
(``--quick``: timm's tiny ``test_resnet`` backbone, small images, one repeat: a smoke test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/, from any cwd
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from _common import emit, machine  # noqa: E402

# TRIQ's score range: MOS 0-100 (LIVE-C, the shipped TRIQ config's data); IQT's: unit scores.
TRIQ_RANGE = (0.0, 100.0)
IQT_RANGE = (0.0, 1.0)
ATOL_FRACTION = 1e-5  # allowed |ours - baseline| as a fraction of the score range
TRIQ_SIZES = ((384, 512), (500, 500), (512, 384), (320, 480))
TRIQ_QUICK_SIZES = ((64, 96), (80, 80), (96, 64), (64, 80))
# iqt_r18_builtin (configs/quality/iqt_r18_builtin.yaml) and the paper's IQT (IQTConfig defaults)
BUILTIN_CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "configs", "quality", "iqt_r18_builtin.yaml"
)
IQT_PRESETS: dict[str, dict[str, Any]] = {
    "r18_builtin": dict(model=None, size=(128, 128), images=16),  # model: the shipped yaml's
    "paper": dict(model={}, size=(384, 512), images=2),
    "test_resnet": dict(
        model=dict(
            backbone="test_resnet",
            crop_size=64,
            d_model=16,
            num_heads=2,
            ffn_dim=32,
            head_dim=8,
            test_crops=4,
        ),
        size=(96, 80),
        images=4,
    ),
}


def _builtin_model_options() -> dict[str, Any]:
    """The ``model:`` section of configs/quality/iqt_r18_builtin.yaml (so the bench follows it)."""
    from omegaconf import OmegaConf

    model = OmegaConf.to_container(OmegaConf.load(BUILTIN_CONFIG).model)
    model.pop("name", None)
    return model


# ------------------------------------------------------------------------------------ inputs
def make_image(height: int, width: int, seed: int, noise: float | None = None) -> torch.Tensor:
    """A deterministic ``uint8 [3,H,W]`` image: a smooth random colour field (an 8x8 grid,
    bilinearly upscaled) plus Gaussian noise of strength ``noise`` (default: from the seed)."""
    g = torch.Generator().manual_seed(seed)
    field = torch.rand(1, 3, 8, 8, generator=g)
    base = F.interpolate(field, size=(height, width), mode="bilinear", align_corners=False)[0]
    sigma = (0.02 + 0.2 * (seed % 7) / 6) if noise is None else noise
    pixels = base + sigma * torch.randn(3, height, width, generator=g)
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8)


def iqt_pairs(size: Sequence[int], count: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``count`` (distorted, reference) pairs of ``size``: the reference is a clean field, the
    distorted image the same field with noise of a per-image strength."""
    refs = [make_image(size[0], size[1], 100 + i, noise=0.0) for i in range(count)]
    dist = [
        make_image(size[0], size[1], 100 + i, noise=0.03 + 0.05 * (i % 5)) for i in range(count)
    ]
    return dist, refs


# ---------------------------------------------------------------------------- the two sides
def triq_batched(model: torch.nn.Module, images: Sequence[torch.Tensor]) -> torch.Tensor:
    """ours: one call with the whole mixed-resolution list (the padded batch path)."""
    with torch.no_grad():
        return torch.stack([o["score"] for o in model(list(images))])


def triq_one_by_one(model: torch.nn.Module, images: Sequence[torch.Tensor]) -> torch.Tensor:
    """baseline: one image per call."""
    with torch.no_grad():
        return torch.stack([model([im])[0]["score"] for im in images])


def iqt_batched(
    model: torch.nn.Module, dist: Sequence[torch.Tensor], refs: Sequence[torch.Tensor]
) -> torch.Tensor:
    """ours: the model's own M-crop path (all crops of all images as one batch)."""
    with torch.no_grad():
        out = model(list(dist), [{"reference": r} for r in refs])
    return torch.stack([o["score"] for o in out])


def iqt_crop_loop(
    model: torch.nn.Module, dist: Sequence[torch.Tensor], refs: Sequence[torch.Tensor]
) -> torch.Tensor:
    """baseline: each crop pair through ``score_crops`` on its own, then the mean per image
    (the crops laid out as the model lays them, :func:`percepta.quality.iqt.grid_offsets`;
    the images here are at least the crop size, so the model does not upscale them)."""
    from percepta.quality.iqt import grid_offsets
    from percepta.quality.layers import unit_to_score

    c, m = model.crop_size, model.test_crops
    scores = []
    with torch.no_grad():
        for d, r in zip(dist, refs):
            d, r = d.float() / 255.0, r.float() / 255.0
            units = [
                model.score_crops(
                    d[None, :, t : t + c, x : x + c], r[None, :, t : t + c, x : x + c]
                )
                for t, x in grid_offsets(d.shape[1], d.shape[2], c, m)
            ]
            scores.append(unit_to_score(torch.cat(units).mean(), model.low, model.high))
    return torch.stack(scores)


# ---------------------------------------------------------------------------------- checks
def check_agreement(
    bench: str, ours: torch.Tensor, baseline: torch.Tensor, score_range: Sequence[float]
) -> dict[str, float]:
    """Exit non-zero unless ``ours`` and ``baseline`` scores agree within ``ATOL_FRACTION`` of
    the score range; returns the figures the row reports."""
    atol = ATOL_FRACTION * (score_range[1] - score_range[0])
    if ours.shape != baseline.shape:
        sys.exit(f"{bench}: ours gave {tuple(ours.shape)} scores, baseline {tuple(baseline.shape)}")
    diff = (ours.double() - baseline.double()).abs()
    worst = int(diff.argmax())
    if not bool(torch.isfinite(ours).all()) or float(diff[worst]) > atol:
        sys.exit(
            f"{bench}: ours and baseline scores differ by {float(diff[worst]):.3g} > atol "
            f"{atol:.3g} at image {worst} ({float(ours[worst]):.6g} vs "
            f"{float(baseline[worst]):.6g}); the batched path is wrong"
        )
    return {
        "max_abs_diff": float(diff.max()),
        "atol": atol,
        "score_spread": float(ours.max() - ours.min()),
    }


def timed(
    fns: dict[str, Callable[[], torch.Tensor]], repeats: int
) -> tuple[dict[str, float], dict[str, float], dict[str, torch.Tensor]]:
    """Median wall seconds and median process CPU seconds (all threads) of each function over
    ``repeats`` runs (they take turns within each repeat), and each function's last output."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    last: dict[str, torch.Tensor] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            last[name] = fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    med = statistics.median
    return {k: med(v) for k, v in wall.items()}, {k: med(v) for k, v in cpu.items()}, last


def _row(
    bench: str,
    wall: dict[str, float],
    cpu: dict[str, float],
    n: int,
    agreement: dict,
    load_before: float | None,
    **details: Any,
) -> dict[str, Any]:
    return emit(
        bench,
        wall["ours"] / n,
        wall["baseline"] / n,
        unit="s/image",
        images_per_s={"ours": n / wall["ours"], "baseline": n / wall["baseline"]},
        cpu_s_per_image={"ours": cpu["ours"] / n, "baseline": cpu["baseline"] / n},
        images=n,
        agreement=agreement,
        **details,
        loadavg_1m_before=load_before,
        machine=machine("torch", "timm"),
    )


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


# ---------------------------------------------------------------------------------- benches
def bench_triq(
    backbone: str, sizes: Sequence[Sequence[int]], count: int, repeats: int
) -> dict[str, Any]:
    """One ``triq_mixed_resolution_<backbone>`` row (see the module docstring)."""
    from percepta.quality.triq import TRIQConfig, build_triq

    torch.manual_seed(0)
    model = build_triq(TRIQConfig(backbone=backbone, score_range=list(TRIQ_RANGE))).eval()
    images = [make_image(*sizes[i % len(sizes)], seed=i) for i in range(count)]
    warm = images[: len(sizes)]  # one image of each size
    triq_batched(model, warm), triq_one_by_one(model, warm)
    bench, load = f"triq_mixed_resolution_{backbone}", _load()
    wall, cpu, last = timed(
        {
            "ours": lambda: triq_batched(model, images),
            "baseline": lambda: triq_one_by_one(model, images),
        },
        repeats,
    )
    agreement = check_agreement(bench, last["ours"], last["baseline"], TRIQ_RANGE)
    return _row(
        bench,
        wall,
        cpu,
        count,
        agreement,
        load,
        sizes=[list(s) for s in sizes],
        repeats=repeats,
    )


def bench_iqt(preset: str, repeats: int, count: int | None = None) -> dict[str, Any]:
    """One ``iqt_mcrop_<preset>`` row (see the module docstring)."""
    from percepta.quality.iqt import IQTConfig, build_iqt

    spec = IQT_PRESETS[preset]
    count = count or spec["images"]
    torch.manual_seed(0)
    options = spec["model"] if spec["model"] is not None else _builtin_model_options()
    cfg = IQTConfig(**options, score_range=list(IQT_RANGE))
    model = build_iqt(cfg).eval()
    dist, refs = iqt_pairs(spec["size"], count)
    iqt_batched(model, dist[:1], refs[:1]), iqt_crop_loop(model, dist[:1], refs[:1])  # warm-up
    bench, load = f"iqt_mcrop_{preset}", _load()
    wall, cpu, last = timed(
        {
            "ours": lambda: iqt_batched(model, dist, refs),
            "baseline": lambda: iqt_crop_loop(model, dist, refs),
        },
        repeats,
    )
    agreement = check_agreement(bench, last["ours"], last["baseline"], IQT_RANGE)
    return _row(
        bench,
        wall,
        cpu,
        count,
        agreement,
        load,
        size=list(spec["size"]),
        backbone=cfg.backbone,
        crop_size=cfg.crop_size,
        test_crops=cfg.test_crops,
        repeats=repeats,
    )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke size: test_resnet, small images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default 3, quick 1)")
    ap.add_argument("--images", type=int, default=None, help="TRIQ images (default 16, quick 8)")
    ap.add_argument("--paper", action="store_true", help="add the paper's IQT (slow on a CPU)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 3)
    count = args.images or (8 if args.quick else 16)
    if args.quick:
        bench_triq("test_resnet", TRIQ_QUICK_SIZES, count, repeats)
        bench_iqt("test_resnet", repeats)
        return
    for backbone in ("resnet50", "resnet18"):
        bench_triq(backbone, TRIQ_SIZES, count, repeats)
    bench_iqt("r18_builtin", repeats)
    if args.paper:
        bench_iqt("paper", repeats)


if __name__ == "__main__":
    main()
