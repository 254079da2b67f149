"""A self-contained HTML run report: metric tables, plots and example images (embedded PNGs)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:10px} .grid figure{margin:0;text-align:center;font-size:.8em}
.grid img{max-width:260px;border:1px solid #ccc} .note{color:#555;font-size:.9em}
.ok{color:#1a7f37;font-weight:600} .bad{color:#cf222e;font-weight:600}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4f}"
    if v is None:
        return "–"
    return html.escape(str(v))


def _img(path: str | Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).name)}">'


@dataclass
class Report:
    """Collect sections, then :meth:`write` one HTML file."""

    title: str
    subtitle: str = ""
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, cls: str = "") -> None:
        c = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{c}>{html.escape(text)}</p>")

    def key_values(self, values: dict[str, Any]) -> None:
        rows = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in values.items()
        )
        self.parts.append(f"<table>{rows}</table>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def image(self, path: str | Path | None, caption: str = "") -> None:
        if path is None or not Path(path).is_file():
            return
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(
            f'<figure style="margin:0">{_img(path).replace("max-width:260px", "")}{cap}</figure>'
        )

    def gallery(self, items: Sequence[tuple[str | Path, str]]) -> None:
        figs = "".join(
            f"<figure>{_img(p)}<figcaption>{html.escape(c)}</figcaption></figure>"
            for p, c in items
            if Path(p).is_file()
        )
        self.parts.append(f'<div class="grid">{figs}</div>')

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sub = f'<p class="note">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        doc = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>{sub}"
            + "\n".join(self.parts)
            + "</body></html>"
        )
        tmp = path.with_suffix(".html.tmp")
        tmp.write_text(doc, encoding="utf-8")
        tmp.replace(path)
        return path
