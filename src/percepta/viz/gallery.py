"""One PNG of captioned panels on a grid: the picture of a whole demo run at a glance.

The HTML report (:mod:`percepta.viz.report`) holds everything, but a README or an issue wants
one image: :func:`compose_gallery` scales each panel to a common height (aspect kept), lays the
panels out row by row, and writes a caption under each. Pillow does the drawing; the layout is
the only thing written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from percepta.atomic import atomic_write
from percepta.errors import DataError

__all__ = ["compose_gallery"]

_CAPTION_H = 40  # two lines of 14 px text
_PAD = 8


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed bitmap size
        return ImageFont.load_default()


def _fit(text: str, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, width: int) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _wrap(text: str, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, width: int) -> str:
    """``text`` on at most two lines of ``width`` pixels (broken at spaces; the rest elided)."""
    words, line = text.split(), ""
    while words and draw.textlength(f"{line} {words[0]}".strip(), font=font) <= width:
        line = f"{line} {words.pop(0)}".strip()
    if not words:
        return line
    if not line:  # a first word wider than the panel
        return _fit(text, draw, font, width)
    return line + "\n" + _fit(" ".join(words), draw, font, width)


def compose_gallery(
    panels: Sequence[tuple[str | Path, str]],
    out: str | Path,
    columns: int = 4,
    height: int = 260,
    title: str | None = None,
) -> Path:
    """Write the ``(png, caption)`` ``panels`` as one PNG grid to ``out`` (atomically).

    Each panel is scaled to ``height`` pixels (width by its aspect ratio, at most twice the
    height); a row holds ``columns`` panels; captions wrap onto two lines. Raises :class:`~percepta.errors.DataError` naming
    the file when a panel cannot be read, and when there is no panel at all.
    """
    if not panels:
        raise DataError("compose_gallery: no panels to draw")
    images = []
    for path, caption in panels:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
        except (OSError, ValueError) as err:
            raise DataError(f"compose_gallery: cannot read panel {path}: {err}") from err
        w = min(2 * height, max(1, round(im.width * height / im.height)))
        images.append((im.resize((w, height), Image.Resampling.LANCZOS), caption))
    rows = [images[i : i + columns] for i in range(0, len(images), columns)]
    width = max(sum(im.width for im, _ in row) + _PAD * (len(row) + 1) for row in rows)
    top = _CAPTION_H + _PAD if title else _PAD
    canvas = Image.new("RGB", (width, top + len(rows) * (height + _CAPTION_H + _PAD)), "white")
    draw = ImageDraw.Draw(canvas)
    font, title_font = _font(14), _font(18)
    if title:
        draw.text(
            (_PAD, _PAD), _fit(title, draw, title_font, width - 2 * _PAD), "black", title_font
        )
    y = top
    for row in rows:
        x = _PAD
        for im, caption in row:
            canvas.paste(im, (x, y))
            text = _wrap(caption, draw, font, im.width)
            draw.multiline_text((x, y + height + 4), text, (60, 60, 60), font, spacing=2)
            x += im.width + _PAD
        y += height + _CAPTION_H + _PAD
    return atomic_write(out, lambda f: canvas.save(f, format="PNG"))
