"""The built-in full-reference quality dataset: ``percepta data synth --task quality``.

``generate_quality(out)`` writes, in the IQA meta-table schema of :mod:`percepta.data.iqa_table`::

    out/quality.csv                         one row per distorted image
    out/references/ref0001.png ...          reference scenes
    out/images/ref0001_gaussian_blur_1.png  distorted images
    out/README.txt, out/synth_meta.json     description, options (idempotent re-runs)

**References** are scenes of the detection generator (:func:`.scene.render_image`: shapes on
textured backgrounds) rendered at ``image_size`` (default 160 px); reference ``i`` is
``render_image(seed, i, image_size)``.

**Distortions** (KADID-10k-style, 10 types x 5 levels, severity rising with the level):

===============  =================================================================  ====
distortion       parameter at levels 1..5                                            w_d
===============  =================================================================  ====
gaussian_blur    Pillow GaussianBlur radius 0.5, 1, 2, 3, 5 px                       0.9
lens_blur        convolution with a uniform disk of radius 1, 2, 3, 4, 6 px          0.9
white_noise      additive Gaussian noise, sigma 5, 10, 20, 35, 55 (of 255)           0.8
impulse_noise    salt-and-pepper on 1, 3, 6, 10, 16 % of the pixels                  0.8
jpeg             Pillow JPEG quality 40, 20, 10, 5, 2                                0.85
jpeg2000         Pillow JPEG 2000 at compression ratio 20, 40, 80, 160, 320 (*)      0.85
contrast         Pillow ImageEnhance.Contrast factor 0.75, 0.6, 0.45, 0.3, 0.15      0.6
brightness       Pillow ImageEnhance.Brightness (darken) 0.8, 0.65, 0.5, 0.35, 0.2   0.6
pixelate         box-downsample by 2, 3, 4, 6, 8, nearest-upsample                   0.8
saturation       Pillow ImageEnhance.Color factor 0.7, 0.5, 0.3, 0.15, 0               0.5
===============  =================================================================  ====

(*) where Pillow lacks OpenJPEG, a documented stand-in: bicubic down- and up-sampling by
1.5, 2, 3, 4, 6 (band-limiting, like wavelet truncation, but without ringing).

**Score** (a synthetic MOS on [1, 5], higher is better): with ``SSIM`` the structural
similarity (Wang et al. 2004: Gaussian window sigma 1.5, 11 taps, K1 = 0.01, K2 = 0.03,
data range 255, on BT.601 luma, borders mirrored, mean over the whole map; the same as
``torchmetrics.functional.structural_similarity_index_measure`` on the luma, to 1e-12) and ``w_d`` the
distortion's weight above,

    score = 1 + 4 * (0.5 * clip(SSIM, 0, 1) + 0.5 * (1 - w_d * level / 5))

The table term makes the score fall strictly with the level for every distortion (by at least
0.16 per level, so SSIM's rare non-monotonic wiggles cannot reverse the order); the SSIM term
makes it depend on the content (a blur hurts a busy scene more than a flat one). The csv also
carries the ``ssim`` column. Everything random (noise, impulses) is drawn from
``numpy.random.default_rng([seed, reference, distortion, level])``, so the output depends only
on the options, never on the number of worker processes. 60 references (3000 distorted images)
at 160 px take about 10 s on 2 cores.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, features

from percepta.data.synthetic.parallel import ordered_map
from percepta.data.synthetic.scene import SynthOptionError, render_image
from percepta.errors import DataError

__all__ = [
    "DISTORTIONS",
    "LEVELS",
    "WEIGHTS",
    "generate_quality",
    "distort",
    "ssim",
    "quality_score",
    "QUALITY_VERSION",
    "TABLE_NAME",
]

QUALITY_VERSION = 1  # bump when pixels or scores change, so old folders regenerate
TABLE_NAME = "quality.csv"
LEVELS = 5
SCORE_RANGE = (1.0, 5.0)
HAS_JPEG2000 = bool(features.check("jpg_2000"))

_PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_blur": (0.5, 1.0, 2.0, 3.0, 5.0),
    "lens_blur": (1, 2, 3, 4, 6),
    "white_noise": (5.0, 10.0, 20.0, 35.0, 55.0),
    "impulse_noise": (0.01, 0.03, 0.06, 0.10, 0.16),
    "jpeg": (40, 20, 10, 5, 2),
    "jpeg2000": (20, 40, 80, 160, 320) if HAS_JPEG2000 else (1.5, 2.0, 3.0, 4.0, 6.0),
    "contrast": (0.75, 0.6, 0.45, 0.3, 0.15),
    "brightness": (0.8, 0.65, 0.5, 0.35, 0.2),
    "pixelate": (2, 3, 4, 6, 8),
    "saturation": (0.7, 0.5, 0.3, 0.15, 0.0),
}
WEIGHTS: dict[str, float] = {
    "gaussian_blur": 0.9,
    "lens_blur": 0.9,
    "white_noise": 0.8,
    "impulse_noise": 0.8,
    "jpeg": 0.85,
    "jpeg2000": 0.85,
    "contrast": 0.6,
    "brightness": 0.6,
    "pixelate": 0.8,
    "saturation": 0.5,
}
DISTORTIONS = tuple(_PARAMS)
_LUMA = np.array([0.299, 0.587, 0.114])


# ------------------------------------------------------------------------------------------
# distortions: uint8 [H, W, 3] -> uint8 [H, W, 3]


def _pil(fn: Callable[[Image.Image, float], Image.Image]) -> Callable[..., np.ndarray]:
    def apply(img: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(fn(Image.fromarray(img, "RGB"), p).convert("RGB"))

    return apply


def _encoded(im: Image.Image, **kw: Any) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, **kw)
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def _lens_blur(img: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import convolve

    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = (xx**2 + yy**2 <= r * r + 0.5).astype(np.float64)
    disk /= disk.sum()
    out = np.stack(
        [convolve(img[..., c].astype(np.float64), disk, mode="reflect") for c in range(3)]
    )
    return np.clip(np.rint(out.transpose(1, 2, 0)), 0, 255).astype(np.uint8)


def _white_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = img.astype(np.float64) + rng.normal(0.0, sigma, img.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _impulse_noise(img: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    hit = rng.random(img.shape[:2]) < fraction
    salt = rng.random(img.shape[:2]) < 0.5
    out[hit & salt] = 255
    out[hit & ~salt] = 0
    return out


def _jpeg2000(im: Image.Image, p: float) -> Image.Image:
    if HAS_JPEG2000:
        return _encoded(im, format="JPEG2000", quality_mode="rates", quality_layers=[p])
    w, h = im.size
    small = im.resize((max(1, round(w / p)), max(1, round(h / p))), Image.Resampling.BICUBIC)
    return small.resize((w, h), Image.Resampling.BICUBIC)


def _pixelate(im: Image.Image, block: float) -> Image.Image:
    w, h = im.size
    small = im.resize((max(1, round(w / block)), max(1, round(h / block))), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.NEAREST)


_APPLY: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "gaussian_blur": _pil(lambda im, p: im.filter(ImageFilter.GaussianBlur(p))),
    "lens_blur": _lens_blur,
    "white_noise": _white_noise,
    "impulse_noise": _impulse_noise,
    "jpeg": _pil(lambda im, p: _encoded(im, format="JPEG", quality=int(p))),
    "jpeg2000": _pil(_jpeg2000),
    "contrast": _pil(lambda im, p: ImageEnhance.Contrast(im).enhance(p)),
    "brightness": _pil(lambda im, p: ImageEnhance.Brightness(im).enhance(p)),
    "pixelate": _pil(_pixelate),
    "saturation": _pil(lambda im, p: ImageEnhance.Color(im).enhance(p)),
}


def distort(img: np.ndarray, distortion: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """``img`` (uint8 [H, W, 3]) with ``distortion`` at ``level`` (1..5) applied."""
    if distortion not in _APPLY:
        raise SynthOptionError(
            f"unknown distortion {distortion!r} (known: {', '.join(DISTORTIONS)})"
        )
    if not 1 <= level <= LEVELS:
        raise SynthOptionError(f"level must be in 1..{LEVELS} (got {level})")
    return _APPLY[distortion](img, _PARAMS[distortion][level - 1], rng)


# ------------------------------------------------------------------------------------------
# score


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the BT.601 luma of two uint8 RGB images (parameters in the module docstring)."""
    from scipy.ndimage import gaussian_filter

    x = (a.astype(np.float64) @ _LUMA).astype(np.float64)
    y = (b.astype(np.float64) @ _LUMA).astype(np.float64)

    def blur(v: np.ndarray) -> np.ndarray:
        return gaussian_filter(v, 1.5, mode="mirror", truncate=5 / 1.5)  # radius 5: 11 taps

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def quality_score(ssim_value: float, distortion: str, level: int) -> float:
    """The documented synthetic MOS (module docstring): 1..5, higher is better."""
    fidelity = min(max(ssim_value, 0.0), 1.0)
    table = 1.0 - WEIGHTS[distortion] * level / LEVELS
    return 1.0 + 4.0 * (0.5 * fidelity + 0.5 * table)


# ------------------------------------------------------------------------------------------
# generation


def _make_reference(task: tuple[int, int, int, str]) -> list[dict[str, Any]]:
    """Worker: render reference ``index``, write it and its 50 distorted versions, return rows."""
    seed, index, size, out = task
    ref = render_image(seed, index, size).image
    ref_id = f"ref{index + 1:04d}"
    ref_rel = f"references/{ref_id}.png"
    Image.fromarray(ref, "RGB").save(Path(out) / ref_rel, format="PNG", compress_level=1)
    rows = []
    for d, name in enumerate(DISTORTIONS):
        for level in range(1, LEVELS + 1):
            rng = np.random.default_rng([seed, index, d, level])
            img = distort(ref, name, level, rng)
            rel = f"images/{ref_id}_{name}_{level}.png"
            Image.fromarray(img, "RGB").save(Path(out) / rel, format="PNG", compress_level=1)
            s = ssim(ref, img)
            rows.append(
                {
                    "image": rel,
                    "reference": ref_rel,
                    "score": round(quality_score(s, name, level), 4),
                    "distortion": name,
                    "level": level,
                    "ref_id": ref_id,
                    "ssim": round(s, 5),
                }
            )
    return rows


def _check(num_references: int, image_size: int, seed: int, workers: int | None) -> None:
    def ok_int(v: object, lo: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo

    if not ok_int(num_references, 1):
        raise SynthOptionError(f"number of references must be >= 1 (got {num_references!r})")
    if not ok_int(image_size, 64) or image_size > 512:
        raise SynthOptionError(f"--image-size must be in 64..512 for quality (got {image_size!r})")
    if not ok_int(seed, 0):
        raise SynthOptionError(f"--seed must be an integer >= 0 (got {seed!r})")
    if workers is not None and not ok_int(workers, 1):
        raise SynthOptionError(f"--workers must be an integer >= 1 (got {workers!r})")


def _prepare(out: Path, options: dict[str, Any]) -> bool:
    """True if ``out`` already holds this dataset; else clears an old one of ours, or refuses."""
    meta_path = out / "synth_meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = None
    if isinstance(meta, dict):
        task = (meta.get("options") or {}).get("task", "detection")
        if task != "quality":
            raise DataError(
                f"{out} holds the built-in {task} dataset ({meta_path}); write the quality "
                "dataset to another --out folder"
            )
        if meta.get("options") == options and meta.get("complete") and (out / TABLE_NAME).is_file():
            return True
        for sub in ("images", "references"):
            for p in (out / sub).glob("*.png") if (out / sub).is_dir() else ():
                p.unlink()
        (out / TABLE_NAME).unlink(missing_ok=True)
        return False
    for sub in ("images", "references"):
        d = out / sub
        if d.is_dir() and any(d.iterdir()):
            raise DataError(
                f"{d} already holds files that percepta did not generate (no {meta_path.name} "
                "beside it); choose an empty or new --out folder"
            )
    return False


def _run(tasks: list[tuple], workers: int, progress: bool) -> list[list[dict[str, Any]]]:
    return ordered_map(
        _make_reference, tasks, workers, progress, "synth quality", unit="ref", chunksize=1
    )


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from percepta.data.iqa_table import IqaRecord, MetaTable, write_table

    records = [
        IqaRecord(
            image=r["image"],
            score=r["score"],
            reference=r["reference"],
            score_raw=r["score"],
            raw_direction="higher",
            raw_scale="1-5 synthetic MOS (SSIM + distortion/level table)",
            distortion=r["distortion"],
            level=r["level"],
            ref_id=r["ref_id"],
            image_id=i,
            extra={"ssim": repr(r["ssim"])},
        )
        for i, r in enumerate(rows)
    ]
    write_table(MetaTable(path.parent, records, SCORE_RANGE, source=str(path)), path)


def generate_quality(
    out: Path | str,
    num_references: int = 60,
    image_size: int = 160,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the built-in full-reference quality dataset to ``out`` (see the module docstring).

    Args:
        out: output folder (created if needed).
        num_references: reference scenes; each gives ``10 x 5`` distorted images.
        image_size: square side in pixels (64..512).
        seed: dataset seed; the files depend only on the options.
        workers: processes (``None``: all cores); never changes the output.
        progress: show a tqdm progress bar.

    Returns:
        ``{"out", "table", "skipped", "seconds", "options", "references", "images"}``.

    Raises:
        SynthOptionError: an option is out of range.
        DataError: ``out`` holds files this generator did not write.
    """
    _check(num_references, image_size, seed, workers)
    out = Path(out)
    options = {
        "task": "quality",
        "version": QUALITY_VERSION,
        "num_references": num_references,
        "image_size": image_size,
        "seed": seed,
        "jpeg2000": "openjpeg" if HAS_JPEG2000 else "bicubic stand-in",
    }
    start = time.perf_counter()
    result = {
        "out": str(out),
        "table": str(out / TABLE_NAME),
        "options": options,
        "references": num_references,
        "images": num_references * len(DISTORTIONS) * LEVELS,
    }
    if _prepare(out, options):
        return {**result, "skipped": True, "seconds": time.perf_counter() - start}
    for sub in ("images", "references"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    meta = {"options": options, "complete": False}
    (out / "synth_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    tasks = [(seed, i, image_size, str(out)) for i in range(num_references)]
    workers = min(workers or os.cpu_count() or 1, num_references)
    rows = [row for ref_rows in _run(tasks, workers, progress) for row in ref_rows]
    _write_csv(out / TABLE_NAME, rows)
    (out / "README.txt").write_text(_readme(options, len(rows)))
    meta["complete"] = True
    (out / "synth_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return {**result, "skipped": False, "seconds": time.perf_counter() - start}


def _readme(options: dict[str, Any], n: int) -> str:
    return (
        "percepta built-in full-reference image-quality dataset (synthetic)\n"
        f"options: {json.dumps(options)}\n"
        f"{options['num_references']} reference scenes x {len(DISTORTIONS)} distortions x "
        f"{LEVELS} levels = {n} distorted images, {options['image_size']} px PNG\n"
        f"{TABLE_NAME}: the IQA meta table (docs/data.md); score = 1 + 4 * (0.5 * clip(SSIM, 0, 1)"
        " + 0.5 * (1 - w_d * level / 5)), higher is better, on [1, 5]\n"
        f"distortions: {', '.join(DISTORTIONS)}\n"
        "split by ref_id (iqa_table dataset: num_folds / fold) so no scene is in train and test\n"
    )
