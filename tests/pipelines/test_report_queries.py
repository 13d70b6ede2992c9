"""The report of a stream is read in a fixed number of queries, whatever the stream's length (it
is refreshed after every arrival: one query per task per refresh made a stream quadratic)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from sqlalchemy import event

from pipelines import ledger
from pipelines.report import build
from registry import NullTracker, Registry


def _testkit():
    path = Path(__file__).parents[1] / "registry" / "registry_testkit.py"
    spec = importlib.util.spec_from_file_location("registry_testkit", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("registry_testkit", module)
    spec.loader.exec_module(module)
    return module


def make_stream(reg: Registry, n: int) -> None:
    """A stream of `n` tasks as arrivals record it: each registered at its position, every
    earlier task re-scored there, the second one started from the first (lineage)."""
    kit = _testkit()
    for p in range(n):
        name = f"t{p}"
        lineage = [(reg.prefix("t0").id, 1.0, "nearest")] if p == 1 else []
        kit.register(
            reg,
            name,
            seed=p,
            lineage=lineage,
            evaluation={"metric": "accuracy", "value": 0.5, "n": 8, "position": p},
        )
        for q in range(p):
            ledger.record(
                reg,
                f"t{q}",
                "prefix",
                p,
                {"metric": "accuracy", "value": 0.5, "n": 8, "predictions_sha256": None},
            )
        reg.streams.finish_arrival(
            reg.streams.start_arrival(position=p, task=name, method="prefix").id, "done"
        )


def count_queries(reg: Registry) -> tuple[int, dict]:
    seen: list[str] = []

    def before(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(reg.db.engine, "before_cursor_execute", before)
    try:
        doc = build(reg, "default")
    finally:
        event.remove(reg.db.engine, "before_cursor_execute", before)
    return len(seen), doc


def test_the_report_reads_a_stream_in_a_fixed_number_of_queries(tmp_path: Path) -> None:
    counts = {}
    for n in (2, 6):
        with Registry.open(tmp_path / f"ws{n}", tracker=NullTracker()) as reg:
            make_stream(reg, n)
            counts[n], doc = count_queries(reg)
        assert [t["task"] for t in doc["tasks"]] == [f"t{p}" for p in range(n)]
        assert doc["tasks"][1]["lineage"][0]["source_task"] == "t0"  # read by the batch
        assert doc["methods"]["prefix"]["arrivals"] == n
    assert counts[6] == counts[2], counts
