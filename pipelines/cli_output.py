"""What a command's result looks like: one JSON object (`--json`), or text for people.

A handler returns a JSON-able dict; keys starting with `_` are for the CLI only (`_human`: the
command's own text, `_exit_code`) and never reach the JSON.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any


def jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def human(result: dict[str, Any]) -> str:
    if isinstance(result.get("_human"), str):  # a command that writes its own text
        return result["_human"]
    if "metric" in result and "score" in result and "task" in result:
        parts = [f"{result['task']}", f"{result['metric']} {result['score']:.4f}"]
        if "n_eval" in result or "n" in result:
            parts[-1] += f" on {result.get('n_eval', result.get('n'))} examples"
        if "bleu" in result:
            parts.append(f"bleu {result['bleu']:.4f}")
        if "steps" in result:
            parts.append(f"{result['steps']} steps, {result['train_seconds']:.1f} s training")
        if "stored_params" in result:
            parts.append(
                f"{result.get('module') or 'prefix'}+head {result['stored_params']:,} params "
                f"({100 * result['stored_fraction']:.2f}% of the backbone's bytes)"
            )
        if "prefix_path" in result:
            parts.append(f"stored at {result['prefix_path']}")
        return "metrics: " + " · ".join(parts)
    return json.dumps(jsonable(result), indent=2)


#: errno values that say the storage refused a write, not that the program is wrong
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _unreachable(text: str) -> bool:
    lowered = text.lower()
    return any(s in lowered for s in ("connection failed", "could not connect", "connection refused", "server closed the connection", "the database system is"))  # fmt: skip


def storage_trouble(e: BaseException) -> str | None:
    """One line for an error that means the disk refused a write (full, over quota, a file
    size limit, read-only), from the OS or from SQLite; None for anything else. Every write
    of the registry is atomic or undone on error, so the line can say nothing was half-done."""
    what, fix = None, "free some space"
    if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
        where = f" writing {e.filename}" if e.filename else ""
        what = f"{e.strerror or os.strerror(e.errno)}{where}"
        fix = {errno.EROFS: "make it writable", errno.EFBIG: "raise the file-size limit"}.get(
            e.errno, fix
        )
    else:
        text = str(getattr(e, "orig", e))
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        if "database or disk is full" in text or "disk I/O error" in text:
            what = f"the database could not write ({first})"
        elif type(e).__name__ == "OperationalError" and _unreachable(text):
            return (
                f"the registry database stayed unreachable ({first}); nothing was half-written: "
                "once it is back, run the same command again"
            )
    if what is None:
        return None
    return f"{what}; nothing was half-written: {fix} and run the same command again"
