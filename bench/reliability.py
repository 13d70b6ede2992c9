"""The reliability drills' JSON (`make chaos` writes bench/results/chaos.json) as the tables of
docs/RELIABILITY.md, between its `<!-- drills:begin -->` and `<!-- drills:end -->` markers.

    python -m bench.reliability                     # rewrite the tables in docs/RELIABILITY.md
    python -m bench.reliability --json F --print    # print the tables of another run's JSON
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, write_between_markers

DOC = ROOT / "docs" / "RELIABILITY.md"
BEGIN, END = "<!-- drills:begin -->", "<!-- drills:end -->"
#: the order of the summary table (drills not named here follow, by name)
ORDER = (
    "kill -9",
    "concurrent writers",
    "outages",
    "full disk",
    "corruption",
    "bad input (CLI, stream files)",
    "bad requests and security (HTTP API)",
)
_TMP = re.compile(r"/tmp/\S*?/(?=[\w.-]+(?:[:;,'\"\s)]|$))")


def short(line: str, limit: int = 180) -> str:
    """A case's line for a table: temporary folders elided, pipes escaped, at most `limit`."""
    text = _TMP.sub("…/", line).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tables(doc: dict[str, Any]) -> str:
    drills = doc["drills"]
    names = [n for n in ORDER if n in drills] + sorted(n for n in drills if n not in ORDER)
    out = ["| drill | scale | cases | failures | what is checked |", "|---|---|---|---|---|"]
    for n in names:
        d = drills[n]
        out.append(f"| {n} | {d['scale']} | {d['cases']} | {d['failures']} | {d['checks']} |")
    total = sum(drills[n]["cases"] for n in names)
    failed = sum(drills[n]["failures"] for n in names)
    out.append(f"| **all** | | **{total}** | **{failed}** | |")
    for n in names:
        d = drills[n]
        out += ["", f"### {n}", ""]
        extra = {k: v for k, v in d.items() if k not in ("name", "checks", "scale", "cases", "failures", "details")}  # fmt: skip
        if extra:
            out += [
                ", ".join(f"{k}: {json.dumps(v, sort_keys=True)}" for k, v in extra.items()),
                "",
            ]
        out += ["| case | result | what was seen |", "|---|---|---|"]
        out += [f"| {short(c['id'], 80)} | {'ok' if c['ok'] else '**FAILED**'} | {short(c['seen'])} |" for c in d["details"]]  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=RESULTS / "chaos.json")
    p.add_argument("--print", action="store_true", help="print the tables, write nothing")
    a = p.parse_args(argv)
    body = tables(json.loads(a.json.read_text()))
    if a.print:
        print(body)
        return 0
    write_between_markers(DOC, BEGIN, END, f"\n{body}\n")
    print(f"wrote the drills' tables into {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
