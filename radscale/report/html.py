"""The report's Markdown subset as one self-contained HTML file (figures inlined as base64 PNG).

Subset: #-headings (h2 get anchors and a table of contents), paragraphs, "- " bullets, pipe tables, images on
their own line, inline `code` and **bold**. Only what report/*.py writes; not a general Markdown renderer.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}"
          "table{border-collapse:collapse;margin:.6em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;"
          "font-size:13px;text-align:left;vertical-align:top}th{background:#f3f3f3}tr:nth-child(even) td"
          "{background:#fafafa}img{max-width:100%;display:block;margin:.5em 0 1em}li{margin:.2em 0;font-size:14px}"
          "code{background:#f3f3f3;padding:0 3px;border-radius:3px}h2{border-bottom:1px solid #ddd;margin-top:2em}"
          "nav ul{columns:2}")


def _inline(text: str) -> str:
    s = html.escape(text, quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


def _anchor(title: str) -> str:
    return "s-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _img(folder: Path, name: str, alt: str) -> str:
    data = base64.b64encode((folder / name).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(rows: list[list[str]]) -> str:
    head, *rest = rows
    return ("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rest)
            + "</tbody></table>")


def markdown_to_html(markdown: str, folder: Path, title: str = "radscale report") -> str:
    """HTML for the Markdown the report writes; images are read from `folder` and inlined."""
    body: list[str] = []
    toc: list[tuple[str, str]] = []
    table: list[list[str]] = []
    items: list[str] = []

    def flush() -> None:
        if table:
            body.append(_table(table))
            table.clear()
        if items:
            body.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
            items.clear()
    for line in markdown.splitlines():
        if line.startswith("|"):
            if items:
                flush()
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(c and set(c) <= set("-:") for c in cells):
                table.append(cells)
            continue
        if line.startswith("- "):
            if table:
                flush()
            items.append(_inline(line[2:]))
            continue
        flush()
        m = re.fullmatch(r"!\[(.*)\]\((.+)\)", line.strip())
        if m:
            body.append(_img(folder, m.group(2), m.group(1)))
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            text = line[level:].strip()
            if level == 2:
                toc.append((_anchor(text), text))
                body.append(f'<h2 id="{_anchor(text)}">{_inline(text)}</h2>')
            else:
                body.append(f"<h{level}>{_inline(text)}</h{level}>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush()
    nav = "<nav><ul>" + "".join(f'<li><a href="#{a}">{_inline(t)}</a></li>' for a, t in toc) + "</ul></nav>"
    first_h2 = next((i for i, b in enumerate(body) if b.startswith("<h2")), len(body))
    if toc:
        body.insert(first_h2, nav)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n")
