"""What a command's result looks like: one JSON object (`--json`), or text for people.

A handler returns a JSON-able dict; keys starting with `_` are for the CLI only (`_human`: the
command's own text, `_exit_code`) and never reach the JSON.
"""

from __future__ import annotations

import json
import math
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
                f"prefix+head {result['stored_params']:,} params "
                f"({100 * result['stored_fraction']:.2f}% of the backbone's bytes)"
            )
        if "prefix_path" in result:
            parts.append(f"stored at {result['prefix_path']}")
        return "metrics: " + " · ".join(parts)
    return json.dumps(jsonable(result), indent=2)
