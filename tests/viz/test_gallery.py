"""compose_gallery: panels land where the layout says, scaled to the row height, with captions;
unreadable panels and an empty list are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from percepta.errors import DataError
from percepta.viz.gallery import compose_gallery


def _png(path, colour, size):
    Image.new("RGB", size, colour).save(path)
    return path


def test_panels_are_scaled_laid_out_and_captioned(tmp_path):
    red = _png(tmp_path / "red.png", (255, 0, 0), (50, 100))  # aspect 1:2 -> 30 x 60 at h 60
    green = _png(tmp_path / "green.png", (0, 255, 0), (300, 100))  # wide: capped at 2 h = 120
    blue = _png(tmp_path / "blue.png", (0, 0, 255), (80, 80))
    out = compose_gallery(
        [(red, "a red panel"), (green, "green"), (blue, "blue")],
        tmp_path / "sub" / "gallery.png",
        columns=2,
        height=60,
        title="demo",
    )
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    pad, cap = 8, 40
    top = cap + pad  # the title row
    # two rows of height 60 + caption + padding; width of the wider row: 8 + 30 + 8 + 120 + 8
    assert img.shape == (top + 2 * (60 + cap + pad), 174, 3)
    centre = lambda x, y: img[y, x].tolist()  # noqa: E731
    assert centre(pad + 15, top + 30) == [255, 0, 0]
    assert centre(pad + 30 + pad + 60, top + 30) == [0, 255, 0]
    assert centre(pad + 30, top + 60 + cap + pad + 30) == [0, 0, 255]
    # captions are drawn (dark pixels under the first panel), the background stays white
    caption_band = img[top + 60 + 2 : top + 60 + cap - 2, pad : pad + 30]
    assert (caption_band.sum(axis=2) < 500).any()
    assert img[-1, -1].tolist() == [255, 255, 255]


def test_bad_panels_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no panels"):
        compose_gallery([], tmp_path / "g.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        compose_gallery([(broken, "x")], tmp_path / "g.png")
    with pytest.raises(DataError, match="missing.png"):
        compose_gallery([(tmp_path / "missing.png", "x")], tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()
