"""Registry query latency on a large synthetic registry, on SQLite and PostgreSQL.

    python -m bench.registry [--quick] [--out bench/results/registry.json] [--pg-url URL]

Fills 10,000 tasks and 20,000 prefixes (two versions per task, one lineage edge and five
evaluations per prefix: 100,000 evaluations; synthetic rows inserted in bulk, no artifact files), then times the
Python API: `tasks` (one page of 100 at a random offset), `show` and `history` of a random task.
Prints a table of medians, writes them with the machine's description as JSON, and exits 1 if a
median is over the 50 ms budget. `--quick` fills 500 tasks (for the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MS = 50.0
DEFAULT_OUT = ROOT / "bench" / "results" / "registry.json"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
_CHUNK = 5_000
EVALS_PER_PREFIX = 5


def main(argv: list[str] | None = None) -> int:
    _unshadow()
    args = _parser().parse_args(argv)
    n_tasks = 500 if args.quick else args.tasks
    versions = 2
    repeats = 15 if args.quick else args.repeats
    rows: list[dict[str, Any]] = []
    machine = _machine()
    with tempfile.TemporaryDirectory(prefix="continual-bench-") as tmp:
        backends: list[tuple[str, str | None]] = [("sqlite", None)]
        if not args.no_postgres:
            backends.append(("postgresql", args.pg_url))
        for backend, admin_url in backends:
            with _database(backend, admin_url) as (url, note):
                if url is None and backend == "postgresql":
                    print(f"postgresql skipped: {note}", file=sys.stderr)
                    machine["postgresql"] = f"skipped: {note}"
                    continue
                if backend == "postgresql":
                    machine["postgresql"] = note
                rows += _bench(backend, Path(tmp) / backend, url, n_tasks, versions, repeats)
    ok = all(r["median_ms"] < BUDGET_MS for r in rows)
    result = {
        "machine": machine,
        "sizes": {
            "tasks": n_tasks,
            "prefixes": n_tasks * versions,
            "evaluations": n_tasks * versions * EVALS_PER_PREFIX,
            "repeats": repeats,
        },
        "budget_ms": BUDGET_MS,
        "ok": ok,
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    _print_table(rows, n_tasks, versions)
    print(f"wrote {out}")
    return 0 if ok else 1


def _unshadow() -> None:
    """Run as `python bench/registry.py`, this file's folder leads sys.path and `import registry`
    would find this file: make it mean the package."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if getattr(sys.modules.get("registry"), "__file__", None) == __file__:
        del sys.modules["registry"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="500 tasks instead of 10,000")
    p.add_argument("--tasks", type=int, default=10_000, help="tasks to fill (two prefixes each)")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per query")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results file")
    p.add_argument(
        "--pg-url",
        default=os.environ.get("CONTINUAL_BENCH_PG", DEFAULT_PG),
        help="a PostgreSQL server (a database is created there and dropped)",
    )
    p.add_argument("--no-postgres", action="store_true", help="SQLite only")
    return p


def _bench(
    backend: str, workspace: Path, url: str | None, n_tasks: int, versions: int, repeats: int
) -> list[dict[str, Any]]:
    from registry import NullTracker, Registry

    with Registry.open(workspace, url=url, tracker=NullTracker()) as reg:
        t0 = time.perf_counter()
        _fill(reg.db.engine, n_tasks, versions)
        fill_s = time.perf_counter() - t0
        rng = random.Random(0)
        names = [f"task-{i:05d}" for i in range(n_tasks)]
        queries: dict[str, Callable[[], Any]] = {
            "tasks": lambda: reg.tasks(limit=100, offset=rng.randrange(max(1, n_tasks - 100))),
            "show": lambda: reg.show(rng.choice(names)),
            "history": lambda: reg.history(rng.choice(names)),
        }
        rows = []
        for query, call in queries.items():
            for _ in range(3):  # warm caches and the connection pool
                call()
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                call()
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            rows.append(
                {
                    "db": backend,
                    "query": query,
                    "median_ms": round(statistics.median(times), 3),
                    "p95_ms": round(times[int(0.95 * (len(times) - 1))], 3),
                    "repeats": repeats,
                    "fill_s": round(fill_s, 2),
                }
            )
    return rows


def _fill(engine: Any, n_tasks: int, versions: int) -> None:
    """Bulk-insert synthetic rows through SQLAlchemy Core (no files: queries never read them),
    into the tables as the database holds them (reflected: the registry's ORM stays inside
    `registry/`)."""
    from sqlalchemy import MetaData, insert

    meta = MetaData()
    meta.reflect(engine)
    t = meta.tables

    rng = random.Random(1)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    fp = "b" * 64
    with engine.begin() as c:
        c.execute(
            insert(t["backbones"]),
            [
                {
                    "id": 1,
                    "name": "synthetic",
                    "source": "bench",
                    "fingerprint": fp,
                    "n_params": 1,
                    "config": {},
                    "created_at": start,
                }
            ],
        )
        c.execute(
            insert(t["runs"]),
            [
                {
                    "id": 1,
                    "seed": 0,
                    "config": {},
                    "packages": {},
                    "backbone_fingerprint": fp,
                    "created_at": start,
                }
            ],
        )
        tasks = (
            {
                "id": i + 1,
                "name": f"task-{i:05d}",
                "kind": "classification",
                "spec": {"name": f"task-{i:05d}", "kind": "classification", "labels": ["a", "b"]},
                "data_fingerprint": f"{i:064x}",
                "description": "synthetic",
                "created_at": start + timedelta(seconds=i),
            }
            for i in range(n_tasks)
        )
        _insert(c, t["tasks"], tasks)
        n_prefixes = n_tasks * versions

        def prefix(pid: int) -> dict[str, Any]:
            task, version = (pid - 1) // versions, (pid - 1) % versions + 1
            sha = f"{pid:064x}"
            return {
                "id": pid,
                "task_id": task + 1,
                "backbone_id": 1,
                "run_id": 1,
                "version": version,
                "is_current": version == versions,
                "status": "ok",
                "config": {"length": 16, "layers": 6, "kv_heads": 12, "head_dim": 32},
                "artifact_path": f"artifacts/{sha[:2]}/{sha}.safetensors",
                "sha256": sha,
                "n_bytes": 73_728,
                "n_trainable": 18_432,
                "n_stored": 18_432,
                "train_steps": 400,
                "train_seconds": 60.0,
                "final_loss": 0.3,
                "losses": [],
                "created_at": start + timedelta(seconds=pid),
            }

        _insert(c, t["prefixes"], (prefix(p) for p in range(1, n_prefixes + 1)))
        _insert(
            c,
            t["prefix_lineage"],
            (
                {
                    "prefix_id": p,
                    "source_prefix_id": rng.randrange(1, p),
                    "weight": 1.0,
                    "method": "nearest",
                }
                for p in range(2, n_prefixes + 1)
            ),
        )
        _insert(
            c,
            t["evaluations"],
            (
                {
                    "prefix_id": p,
                    "task_id": (p - 1) // versions + 1,
                    "position": p + k,
                    "method": "prefix",
                    "metric": "accuracy",
                    "value": rng.random(),
                    "n": 500,
                    "created_at": start + timedelta(seconds=p + k),
                }
                for p in range(1, n_prefixes + 1)
                for k in range(EVALS_PER_PREFIX)
            ),
        )
    if engine.dialect.name == "postgresql":  # explicit ids: move the sequences past them
        with engine.begin() as c:
            for table in ("backbones", "runs", "tasks", "prefixes", "evaluations"):
                c.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            c.exec_driver_sql("ANALYZE")
    else:
        with engine.begin() as c:
            c.exec_driver_sql("ANALYZE")


def _insert(connection: Any, model: Any, rows: Iterator[dict[str, Any]]) -> None:
    from sqlalchemy import insert

    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == _CHUNK:
            connection.execute(insert(model), batch)
            batch = []
    if batch:
        connection.execute(insert(model), batch)


@contextmanager
def _database(backend: str, admin_url: str | None) -> Iterator[tuple[str | None, str]]:
    """For PostgreSQL, a fresh database on the server (dropped after); SQLite needs nothing."""
    if backend == "sqlite":
        yield None, f"sqlite {sqlite3.sqlite_version}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"continual_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            version = c.execute(text("SHOW server_version")).scalar()
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as e:  # noqa: BLE001 - no server: bench SQLite alone
        admin.dispose()
        yield None, str(e).splitlines()[0]
        return
    try:
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        yield url, f"PostgreSQL {version}"
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _machine() -> dict[str, Any]:
    import sqlalchemy

    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _print_table(rows: list[dict[str, Any]], n_tasks: int, versions: int) -> None:
    print(
        f"registry queries, {n_tasks:,} tasks, {n_tasks * versions:,} prefixes, "
        f"{n_tasks * versions * EVALS_PER_PREFIX:,} evaluations "
        f"(median and p95 in ms; budget {BUDGET_MS:.0f} ms)"
    )
    print(f"{'db':<11} {'query':<8} {'median':>8} {'p95':>8}")
    for r in rows:
        flag = "" if r["median_ms"] < BUDGET_MS else "  OVER BUDGET"
        print(f"{r['db']:<11} {r['query']:<8} {r['median_ms']:>8.2f} {r['p95_ms']:>8.2f}{flag}")


if __name__ == "__main__":
    sys.exit(main())
