"""`bench/registry.py --quick` runs, on SQLite and (when a server answers) PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "registry.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "registry.py"), "--quick", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["sizes"]["tasks"] == 500 and result["sizes"]["prefixes"] == 1000
    assert result["machine"]["cpu_count"] >= 1
    queries = {(r["db"], r["query"]) for r in result["results"]}
    assert {("sqlite", q) for q in ("tasks", "show", "history")} <= queries
    assert all(r["median_ms"] < result["budget_ms"] for r in result["results"])
    assert "median" in done.stdout
