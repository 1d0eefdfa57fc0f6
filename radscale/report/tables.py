"""Number formatting and Markdown tables shared by the report, the audit and the plan (one style everywhere)."""
from __future__ import annotations

import math


def num(v, digits: int = 3, style: str = "g", scale: float = 1.0, unit: str = "") -> str:
    """A number, or "—" when missing/NaN, "∞" when unbounded; style "g" (significant) or "f" (decimals)."""
    if v is None:
        return "—"
    try:
        x = float(v) * scale
    except (TypeError, ValueError):
        return "—"
    if math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}{style}}{unit}"


def ci(lo, hi, digits: int = 3, style: str = "g") -> str:
    return f"[{num(lo, digits, style)}, {num(hi, digits, style)}]"


def with_ci(v, lo, hi, digits: int = 3, style: str = "g") -> str:
    return f"{num(v, digits, style)} {ci(lo, hi, digits, style)}"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines; a cell's "|" would split it, so it is replaced."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"
    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]


def text_table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    """Fixed-width columns for terminal output (the plan); align: one "l"/"r" per column (default: l, then r)."""
    cols = list(zip(header, *rows)) if rows else [(h,) for h in header]
    widths = [max(len(str(c)) for c in col) for col in cols]
    align = align or "l" + "r" * (len(header) - 1)

    def line(cells):
        return "  ".join(str(c).ljust(w) if a == "l" else str(c).rjust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()
    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
