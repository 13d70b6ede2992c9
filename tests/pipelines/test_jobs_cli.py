"""`continual learn --queue`, `jobs`, `jobs show|cancel|retry` and `stream list` from the
command line: readable tables by default, exactly one JSON object with `--json`."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from pipelines.cli import main


def cli(*argv: str | Path, as_json: bool = True) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    flags = ["--json"] if as_json else []
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv] + flags + ["--quiet", "--tracking-uri", "none"])
    return code, out.getvalue()


def test_queue_list_show_cancel_and_retry(write_jsonl, sentiment, tmp_path) -> None:
    home = tmp_path / "home"
    ids, files = [], {}
    for name in ("a", "b"):
        train = files[name] = write_jsonl(f"{name}.jsonl", sentiment(24))
        code, out = cli(
            "learn", "--backbone", "minilm", "--train", train, "--name", name, "--queue",
            "--stream", "nightly", "--home", home,
        )  # fmt: skip
        doc = json.loads(out)
        assert code == 0 and doc["state"] == "queued" and doc["stream"] == "nightly"
        ids.append(doc["job"])
    code, out = cli("jobs", "--stream", "nightly", "--home", home)
    listed = json.loads(out)
    assert [j["task"] for j in listed["jobs"]] == ["a", "b"] and listed["total"] == 2
    code, out = cli("jobs", "--home", home, as_json=False)
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["job", "stream", "task", "state"] and len(lines) == 4
    code, out = cli("jobs", "cancel", str(ids[1]), "--home", home)
    assert code == 0 and json.loads(out)["job"]["state"] == "cancelled"
    code, out = cli("jobs", "retry", str(ids[0]), "--home", home)
    assert code == 2 and "only a failed job retries" in json.loads(out)["error"]
    code, out = cli("jobs", "show", str(ids[0]), "--home", home)
    shown = json.loads(out)["job"]
    assert shown["payload"]["plan"]["name"] == "a" and shown["payload"]["data_sha256"]
    code, out = cli("jobs", "--state", "cancelled", "--home", home)
    assert [j["task"] for j in json.loads(out)["jobs"]] == ["b"]
    code, out = cli("stream", "list", "--home", home, as_json=False)
    assert "nightly" in out and "cancelled 1" in out and "queued 1" in out
    code, out = cli(
        "learn", "--backbone", "minilm", "--train", files["a"], "--name", "a",
        "--queue", "--stream", "nightly", "--home", home,
    )  # fmt: skip
    assert code == 2 and f"already has job {ids[0]} (queued)" in json.loads(out)["error"]
