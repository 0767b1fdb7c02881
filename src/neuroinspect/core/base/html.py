"""Small HTML pieces for the notebook objects' ``_repr_html_``: tables and inline thumbnails.

Every text that reaches the page goes through :func:`esc` (class names, ids and notes come from
the user's data). No torch import: a picture is a PIL image.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Iterable, Sequence

from PIL import Image, ImageOps


def esc(value: Any) -> str:
    """``value`` as text, HTML-escaped (quotes included)."""
    return html.escape(str(value), quote=True)


def pct(x: float | None, digits: int = 1) -> str:
    """0.8123 -> '81.2%' ('–' for None)."""
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None) -> str:
    """An HTML table; every header and cell is escaped (a cell that is already markup: wrap it in :class:`Markup`)."""
    def cell(v: Any) -> str:
        return v.text if isinstance(v, Markup) else esc("–" if v is None else v)

    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    cap = f"<caption style='text-align:left'>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Markup:
    """Markup built here (already escaped), to put in a :func:`table` cell as it is."""

    def __init__(self, text: str):
        self.text = text


def image_uri(image: Image.Image, size: int = 96) -> str:
    """A PNG thumbnail (at most ``size`` pixels a side) as a ``data:`` URI."""
    thumb = ImageOps.contain(image.convert("RGBA" if image.mode == "RGBA" else "RGB"), (size, size))
    buf = io.BytesIO()
    thumb.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(image: Image.Image, size: int = 96, title: str = "") -> str:
    return f"<img src='{image_uri(image, size)}' title='{esc(title)}' style='margin:2px'>"


def figure(image: Image.Image, caption: str, size: int = 128) -> str:
    """A thumbnail with a caption below (escaped)."""
    return (f"<figure style='display:inline-block;margin:4px;vertical-align:top;max-width:{size + 8}px'>"
            f"{img(image, size, caption)}<figcaption style='font-size:small'>{esc(caption)}</figcaption></figure>")


def file_thumbnails(paths: Iterable[str], size: int = 64, limit: int = 8) -> str:
    """Thumbnails of the image files among ``paths`` (ids that are not readable files are skipped)."""
    out = []
    for p in paths:
        if len(out) >= limit:
            break
        try:
            with Image.open(p) as im:
                out.append(img(im.convert("RGB"), size, p))
        except (OSError, ValueError):
            continue
    return "".join(out)
