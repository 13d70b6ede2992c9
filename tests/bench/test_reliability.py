"""`python -m bench.reliability`: the drills' JSON as the tables of docs/RELIABILITY.md."""

from __future__ import annotations

import json
from pathlib import Path

from bench import reliability


def _doc() -> dict:
    case = {"id": "a case", "ok": True, "seen": "error: /tmp/pytest-of-root/pytest-3/x0/files/bad.jsonl: row 2"}  # fmt: skip
    bad = {"id": "kill at 1 s", "ok": False, "seen": "jobs differ | a pipe"}
    return {"drills": {
        "zeta": {"name": "zeta", "checks": "z", "scale": "quick", "cases": 1, "failures": 0, "details": [case]},  # fmt: skip
        "kill -9": {"name": "kill -9", "checks": "k", "scale": "full", "cases": 1, "failures": 1, "details": [bad], "run_seconds": {"train": 6.4}},  # fmt: skip
    }}  # fmt: skip


def test_tables_order_count_and_shorten() -> None:
    text = reliability.tables(_doc())
    rows = [x for x in text.splitlines() if x.startswith("| ")]
    assert rows[1].startswith("| kill -9 | full | 1 | 1 |")  # the fixed order first
    assert rows[2].startswith("| zeta | quick | 1 | 0 |")
    assert "| **all** | | **2** | **1** |" in text
    assert "…/bad.jsonl: row 2" in text and "/tmp/" not in text
    assert "**FAILED**" in text and "jobs differ \\| a pipe" in text
    assert 'run_seconds: {"train": 6.4}' in text


def test_main_rewrites_only_between_the_markers(tmp_path: Path, monkeypatch) -> None:
    doc = tmp_path / "RELIABILITY.md"
    doc.write_text(f"intro\n{reliability.BEGIN}\nold\n{reliability.END}\noutro\n")
    data = tmp_path / "chaos.json"
    data.write_text(json.dumps(_doc()))
    monkeypatch.setattr(reliability, "DOC", doc)
    monkeypatch.setattr(reliability, "ROOT", tmp_path)
    assert reliability.main(["--json", str(data)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old" not in text
    assert "| kill -9 | full | 1 | 1 |" in text
