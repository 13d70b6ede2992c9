"""Text for people: aligned tables, key-value blocks, and the "N more" line of a capped list.

One renderer for every command that lists rows, so they all read alike: a header of column
names, then one line per row, columns two spaces apart, numbers right-aligned, long cells cut
with an ellipsis, no rules or borders (pipes to `grep`, `sort` and `column` still work).
`--json` never goes through here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

MAX_CELL = 48
GAP = "  "


def last_line(text: str | None, width: int | None = None) -> str:
    """The last non-blank line of a (traceback-like) message, cut to `width` with "…"."""
    lines = [x for x in (text or "").strip().splitlines() if x.strip()]
    last = lines[-1] if lines else ""
    return last if width is None or len(last) <= width else last[: width - 1] + "…"


def cell(value: Any, *, width: int = MAX_CELL) -> str:
    """One value as table text: None "-", floats to 4 places, ISO times to the minute,
    sequences joined by ", ", whitespace folded, cut to `width` with "…"."""
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.4f}"
    elif isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M")
    elif isinstance(value, str) and _looks_like_iso_time(value):
        text = value[:16].replace("T", " ")
    elif isinstance(value, list | tuple):
        text = ", ".join(cell(v, width=width) for v in value)
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _looks_like_iso_time(text: str) -> bool:
    return len(text) >= 16 and text[4] == "-" and text[7] == "-" and text[10] == "T"


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, width: int = MAX_CELL) -> str:
    """An aligned table of `rows` under `headers`; a column of numbers is right-aligned."""
    rows = [list(r) for r in rows]
    texts = [[cell(v, width=width) for v in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in texts:
        widths = [max(w, len(t)) for w, t in zip(widths, r)]
    right = [
        bool(rows) and all(_numeric(r[i]) or r[i] is None for r in rows)
        for i in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return GAP.join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in texts)])


def key_values(pairs: Iterable[tuple[str, Any]], *, width: int = 160) -> str:
    """`key   value` lines, the values aligned."""
    pairs = list(pairs)
    pad = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(pad)}{GAP}{cell(v, width=width)}".rstrip() for k, v in pairs)


def more(shown: int, offset: int, total: int, noun: str) -> str | None:
    """The line under a capped list ("100 of 105 tasks shown; 5 more, use --limit/--offset"),
    None when nothing is left out."""
    left = total - offset - shown
    if offset == 0 and left <= 0:
        return None
    first = f"{noun} {offset + 1}-{offset + shown} of {total} shown" if shown else f"0 of {total}"
    if left <= 0:
        return first
    return f"{first}; {left} more, use --limit/--offset (e.g. --offset {offset + shown})"


def section(title: str, body: str) -> str:
    """A titled block: the title on its own line, then the body indented by two spaces."""
    return "\n".join([title, *("  " + line if line else line for line in body.splitlines())])
