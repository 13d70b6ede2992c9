"""`continual serve` as users run it: a real uvicorn process on 127.0.0.1 over minilm, driven
by an HTTP client. The held-in files of two catalog tasks are uploaded and both arrivals
queued; the in-process worker learns them; tasks are listed; predictions with and without a
task equal `continual predict`'s; the report is read; the dashboard is opened in headless
Chromium; then the server is SIGKILLed during a third arrival and started again, and that
job finishes exactly once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ROOT, Server, child_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TASKS = ("rotten_tomatoes", "trec")
STREAM = "svc"
OPTIONS = {"steps": 30, "batch_size": 8, "eval_every": 10}


def _write_files(folder: Path) -> dict[str, dict[str, Path]]:
    """The held-in files of two catalog tasks, as a user would export them: JSONL."""
    from tasks import catalog

    out = {}
    for name in TASKS:
        data = catalog.load(name)
        out[name] = {}
        for split, rows, n in (("train", data.train, 240), ("eval", data.eval, 80)):
            path = folder / f"{name}-{split}.jsonl"
            lines = (json.dumps({"text": e.text, "label": e.target}) for e in rows[:n])
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            out[name][split] = path
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("serve")
    files = _write_files(root)
    server = Server(root / "home", root / "server.log")
    server.start()
    jobs = {}
    try:
        for name in TASKS:
            with open(files[name]["train"], "rb") as t, open(files[name]["eval"], "rb") as e:
                up = server.post("/v1/datasets", files={"train": t, "eval": e})
            assert up.status_code == 201, up.text
            body = {"name": name, "dataset": up.json()["id"], "backbone": "minilm"}
            r = server.post(f"/v1/streams/{STREAM}/arrivals", json={**body, "options": OPTIONS})
            assert r.status_code == 202, r.text
            jobs[name] = r.json()["job"]["id"]
        for job in jobs.values():
            done = server.wait_done(job)
            assert done["state"] == "done", done["error"]
        yield {"server": server, "files": files, "jobs": jobs, "home": root / "home"}
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()


def _cli(home: Path, *argv: str) -> dict[str, Any]:
    args = [sys.executable, "-m", "pipelines.cli", *argv, "--home", str(home), "--json"]
    args += ["--tracking-uri", "none"]
    done = subprocess.run(args, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_tasks_are_listed_and_answers_equal_the_cli(served: dict[str, Any]) -> None:
    server, home = served["server"], served["home"]
    tasks = server.get("/v1/tasks").json()
    assert [t["name"] for t in tasks["tasks"]] == list(TASKS)
    texts = {
        name: [json.loads(x)["text"] for x in served["files"][name]["eval"].read_text().split("\n")[:6] if x]
        for name in TASKS
    }  # fmt: skip
    for name in TASKS:
        got = server.post("/v1/predict", json={"inputs": texts[name], "task": name}).json()
        want = _cli(home, "predict", "--task", name, *texts[name])
        assert [p["prediction"] for p in got["predictions"]] == [
            p["prediction"] for p in want["predictions"]
        ]
    mixed = texts[TASKS[0]][:3] + texts[TASKS[1]][:3]
    routed = server.post("/v1/predict", json={"inputs": mixed}).json()["predictions"]
    auto = _cli(home, "predict", "--auto", *mixed)["predictions"]
    assert [(p["task"], p["prediction"]) for p in routed] == [
        (p["task"], p["prediction"]) for p in auto
    ]
    for p, a in zip(routed, auto):
        assert p["confidence"] == pytest.approx(a["confidence"], abs=1e-5)


def test_the_report_and_the_jobs(served: dict[str, Any]) -> None:
    server = served["server"]
    doc = server.get(f"/v1/streams/{STREAM}/report?format=json").json()
    assert [t["task"] for t in doc["tasks"]] == list(TASKS) and doc["evidence"]["ok"]
    html = server.get(f"/v1/streams/{STREAM}/report").text
    assert html.count("data:image/png;base64,") >= 2
    for job in served["jobs"].values():
        got = server.get(f"/v1/jobs/{job}").json()["job"]
        assert got["result"]["prefix"]["steps"] == OPTIONS["steps"] and got["attempts"] == 1
    metrics = server.get("/metrics").text
    assert 'continual_jobs{state="done"} 2.0' in metrics


def test_the_dashboard_in_headless_chromium(served: dict[str, Any], tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip(
            "chromium is not installed here; .ci/run installs it (apt-get install chromium)"
        )
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    argv += [f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000"]
    dom = subprocess.run(
        [*argv, "--dump-dom", served["server"].url + "/"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(
        r'<img id="heatmap-svc"[^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}', dom.stdout
    )
    jobs = re.search(r'<table id="jobs">(.*?)</table>', dom.stdout, re.S)
    assert jobs is not None and jobs.group(1).count("<tr") == 1 + len(TASKS)
    assert all(name in jobs.group(1) for name in TASKS)


def test_sigkill_during_an_arrival_then_it_finishes_once(served: dict[str, Any]) -> None:
    server, files = served["server"], served["files"]
    with open(files["trec"]["train"], "rb") as t:
        up = server.post("/v1/datasets", files={"train": t}).json()
    body = {"name": "trec_again", "dataset": up["id"], "options": {**OPTIONS, "steps": 150}}
    job = server.post(f"/v1/streams/{STREAM}/arrivals", json=body).json()["job"]["id"]
    deadline = time.monotonic() + 300
    while True:  # kill it in the middle of training
        progress = server.get(f"/v1/jobs/{job}").json()["job"]["progress"] or {}
        if progress.get("step", 0) >= 5:
            break
        assert time.monotonic() < deadline, progress
        time.sleep(0.2)
    server.kill()
    server.start()
    done = server.wait_done(job)
    assert done["state"] == "done" and done["attempts"] == 2, done
    streams = {s["name"]: s for s in server.get("/v1/streams").json()["streams"]}
    assert streams[STREAM]["arrivals"] == 3
    history = server.get("/v1/tasks/trec_again/history").json()["evaluations"]
    own = [e for e in history if e["method"] == "prefix" and e["position"] == 2]
    assert len(own) == 1  # registered and scored exactly once
    versions = server.get("/v1/tasks/trec_again").json()["versions"]
    assert versions == 1
    assert server.stop() == 0  # SIGTERM: a clean exit
    assert os.path.exists(served["home"] / "registry.db")
