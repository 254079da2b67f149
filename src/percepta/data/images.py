"""The one image-file reader: any file -> ``uint8 [3,H,W]`` RGB, or a one-line error.

torchvision's ``decode_image`` (JPEG, PNG, WebP, GIF, AVIF...) first; formats it does not decode
(BMP, TIFF) through Pillow; 16-bit PNGs scaled to 8 bits. A file that neither can read raises
:class:`~percepta.errors.DataError` ``<path>: not a readable image (<reason>)`` with the reason
stripped of torchvision's C++ source locations. Datasets (COCO, image folders, IQA tables) and
``percepta predict`` all read images through :func:`read_rgb`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

from percepta.errors import DataError

__all__ = ["read_rgb", "decode_reason"]

# torchvision's C++ errors start with "<function>, <source file>:<line>, "
_CPP_PREFIX = re.compile(r"^\w+, \S+:\d+, ")


def decode_reason(e: BaseException) -> str:
    """A short reason for a decoding failure, without torchvision's C++ source locations."""
    text = str(e).strip()
    text = _CPP_PREFIX.sub("", text.splitlines()[0]) if text else type(e).__name__
    if text.startswith("Unsupported image file"):
        return "not a supported image format (JPEG, PNG, WebP, GIF, BMP, TIFF)"
    if "non empty file" in text:
        return "empty file"
    return text.rstrip(".")


def _read_with_pil(path: Path) -> torch.Tensor | None:
    """Formats torchvision does not decode (BMP, TIFF) through PIL; ``None`` if PIL cannot."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
        return None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def read_rgb(path: str | Path) -> torch.Tensor:
    """Decode an image file to ``uint8 [3,H,W]`` RGB; :class:`DataError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found" if not path.exists() else f"{path}: not a file")
    try:
        img = decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as e:
        reason = decode_reason(e)
        img = _read_with_pil(path) if reason.startswith("not a supported") else None
        if img is None:
            raise DataError(f"{path}: not a readable image ({reason})") from None
    if img.dtype != torch.uint8:  # 16-bit PNG
        img = (img.to(torch.float32) * (255.0 / 65535.0)).round().to(torch.uint8)
    return img
