"""Bad requests and security over the HTTP API: every case is refused with a 4xx whose body is
one error line, is logged by the server, and writes nothing (every workspace file and database
row as before, nothing outside the workspace). The app runs with tokens, over a copy of a
workspace holding t1 and t2 (stream `s`).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from registry import Registry
from tests.chaos.conftest import changes, workspace_state

pytestmark = pytest.mark.slow

GOOD = b'{"text": "the film was good", "label": "positive"}\n{"text": "bad", "label": "negative"}\n'


def _cases(write: str, read: str, revoked: str) -> list[tuple[str, str, str, dict]]:
    """(case id, method, path, httpx keyword arguments); `write`/`read` are tokens."""
    w = {"Authorization": f"Bearer {write}"}
    r = {"Authorization": f"Bearer {read}"}
    arrive = "/v1/streams/s/arrivals"
    big = {"inputs": ["good " * 50] * 40_000, "task": "t1"}
    return [
        # --- uploads
        (
            "upload malformed JSONL",
            "POST",
            "/v1/datasets",
            {"headers": w, "files": {"train": ("d.jsonl", b"{oops\n")}},
        ),  # fmt: skip
        (
            "upload not UTF-8",
            "POST",
            "/v1/datasets",
            {
                "headers": w,
                "files": {"train": ("d.jsonl", '{"text": "caf\xe9"}\n'.encode("latin-1"))},
            },
        ),  # fmt: skip
        (
            "upload a spreadsheet",
            "POST",
            "/v1/datasets",
            {"headers": w, "files": {"train": ("d.xlsx", b"PK\x03\x04")}},
        ),  # fmt: skip
        (
            "upload empty",
            "POST",
            "/v1/datasets",
            {"headers": w, "files": {"train": ("d.jsonl", b"")}},
        ),  # fmt: skip
        (
            "upload one label",
            "POST",
            "/v1/datasets",
            {"headers": w, "files": {"train": ("d.jsonl", GOOD.splitlines(keepends=True)[0] * 3)}},
        ),  # fmt: skip
        (
            "upload without train",
            "POST",
            "/v1/datasets",
            {"headers": w, "data": {"kind": "classification"}},
        ),  # fmt: skip
        (
            "upload too large",
            "POST",
            "/v1/datasets",
            {"headers": w, "files": {"train": ("d.jsonl", GOOD * 40_000)}},
        ),  # fmt: skip
        (
            "upload escaping the workspace",
            "POST",
            "/v1/datasets",
            {"headers": w, "files": {"train": ("../../../escaped.jsonl", GOOD)}},
        ),  # fmt: skip
        # --- arrivals
        (
            "arrival name with ../",
            "POST",
            arrive,
            {"headers": w, "json": {"name": "../x", "catalog": "trec"}},
        ),  # fmt: skip
        (
            "arrival SQL-looking name",
            "POST",
            arrive,
            {"headers": w, "json": {"name": "t'; DROP TABLE tasks;--", "catalog": "trec"}},
        ),  # fmt: skip
        (
            "arrival case twin",
            "POST",
            arrive,
            {"headers": w, "json": {"name": "T1", "catalog": "trec"}},
        ),  # fmt: skip
        (
            "arrival negative steps",
            "POST",
            arrive,
            {"headers": w, "json": {"catalog": "trec", "options": {"steps": -1}}},
        ),  # fmt: skip
        (
            "arrival absurd prefix",
            "POST",
            arrive,
            {"headers": w, "json": {"catalog": "trec", "options": {"prefix_length": 0}}},
        ),  # fmt: skip
        (
            "arrival unknown field",
            "POST",
            arrive,
            {"headers": w, "json": {"catalog": "trec", "colour": "red"}},
        ),  # fmt: skip
        (
            "arrival not JSON",
            "POST",
            arrive,
            {"headers": {**w, "Content-Type": "application/json"}, "content": b"{not json"},
        ),  # fmt: skip
        ("arrival a JSON list", "POST", arrive, {"headers": w, "json": [1, 2]}),
        (
            "arrival unknown dataset",
            "POST",
            arrive,
            {"headers": w, "json": {"name": "x", "dataset": "f" * 64}},
        ),  # fmt: skip
        (
            "arrival stream with ../",
            "POST",
            "/v1/streams/..%2Fx/arrivals",
            {"headers": w, "json": {"catalog": "trec"}},
        ),  # fmt: skip
        (
            "arrival already arrived",
            "POST",
            arrive,
            {"headers": w, "json": {"name": "t1", "catalog": "trec"}},
        ),  # fmt: skip
        # --- predictions and reads
        (
            "predict unknown task",
            "POST",
            "/v1/predict",
            {"headers": r, "json": {"inputs": ["good"], "task": "nosuch"}},
        ),  # fmt: skip
        (
            "predict a path as task",
            "POST",
            "/v1/predict",
            {"headers": r, "json": {"inputs": ["good"], "task": "../../etc"}},
        ),  # fmt: skip
        (
            "predict no inputs",
            "POST",
            "/v1/predict",
            {"headers": r, "json": {"inputs": [], "task": "t1"}},
        ),  # fmt: skip
        (
            "predict inputs not a list",
            "POST",
            "/v1/predict",
            {"headers": r, "json": {"inputs": "good", "task": "t1"}},
        ),  # fmt: skip
        (
            "predict too many inputs",
            "POST",
            "/v1/predict",
            {"headers": r, "json": {"inputs": ["good"] * 1000, "task": "t1"}},
        ),  # fmt: skip
        ("predict 10 MB body", "POST", "/v1/predict", {"headers": r, "json": big}),
        ("unknown task", "GET", "/v1/tasks/nosuch", {"headers": r}),
        ("task name with SQL", "GET", "/v1/tasks/x' OR '1'='1", {"headers": r}),
        ("job id not a number", "GET", "/v1/jobs/abc", {"headers": r}),
        ("cancel a missing job", "DELETE", "/v1/jobs/99999", {"headers": w}),
        # --- security
        ("no token, read", "GET", "/v1/tasks", {}),
        ("no token, write", "POST", arrive, {"json": {"catalog": "trec"}}),
        ("wrong token", "GET", "/v1/tasks", {"headers": {"Authorization": "Bearer ct_wrong"}}),
        (
            "SQL-looking token",
            "GET",
            "/v1/tasks",
            {"headers": {"Authorization": "Bearer ' OR 1=1 --"}},
        ),  # fmt: skip
        (
            "not a bearer header",
            "GET",
            "/v1/tasks",
            {"headers": {"Authorization": f"Basic {read}"}},
        ),  # fmt: skip
        (
            "read token uploads",
            "POST",
            "/v1/datasets",
            {"headers": r, "files": {"train": ("d.jsonl", GOOD)}},
        ),  # fmt: skip
        (
            "read token queues an arrival",
            "POST",
            arrive,
            {"headers": r, "json": {"catalog": "trec"}},
        ),  # fmt: skip
        ("read token cancels a job", "DELETE", "/v1/jobs/1", {"headers": r}),
        ("revoked token", "GET", "/v1/tasks", {"headers": {"Authorization": f"Bearer {revoked}"}}),
    ]


def test_bad_requests_and_intruders_are_refused_logged_and_write_nothing(
    drill: Callable, base_home: Path, tmp_path: Path, client_for, caplog
) -> None:
    d = drill(
        "bad requests and security (HTTP API)",
        "4xx with a one-line error body, logged by the server, every file and row unchanged, "
        "nothing outside the workspace",
    )
    home = tmp_path / "home"
    shutil.copytree(base_home, home)
    with Registry.open(home, tracking_uri="none") as reg:
        write, _ = reg.tokens.create(scope="write", name="w")
        read, _ = reg.tokens.create(scope="read", name="r")
        revoked, gone = reg.tokens.create(scope="write", name="old")
        reg.tokens.revoke(gone.id)
    escape = tmp_path / "escaped.jsonl"
    client = client_for(home, max_upload_mb=1.0)
    cases = _cases(write, read, revoked)
    assert len(cases) >= 35
    caplog.set_level(logging.INFO, logger="continual.serve")
    for case_id, method, path, kw in cases:
        before = workspace_state(home)
        caplog.clear()
        response = client.request(method, path, **kw)
        written = changes(before, workspace_state(home))
        d.case(case_id, *_judge(response, written, caplog.records, escape, home))
    print(f"\n{len(d.cases)} bad requests, {len(d.failures)} failed")
    d.assert_clean()


def _judge(response: Any, written: list[str], logged: list, escape: Path, home: Path):
    problems = []
    status = response.status_code
    try:
        body = response.json()
    except json.JSONDecodeError:
        body = {}
    line = body.get("error") if isinstance(body, dict) else None
    if not 400 <= status < 500:
        problems.append(f"status {status}")
    if not isinstance(line, str) or not line or "\n" in line or "Traceback" in line:
        problems.append("no one-line error")
    elif str(home) in line or "/tmp/" in line:
        problems.append("names a server path")
    if not any("refused" in r.getMessage() and f"({status})" in r.getMessage() for r in logged):
        problems.append("not logged")
    if written:
        problems.append("wrote " + ", ".join(written[:4]))
    if escape.exists():
        problems.append(f"wrote {escape}")
    seen = f"{status}: {line}"
    return not problems, "; ".join(problems + [seen]) if problems else seen
