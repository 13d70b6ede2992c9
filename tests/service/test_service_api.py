"""The HTTP API in-process: answers equal the CLI's, errors are one JSON line, limits hold."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.settings import RegistryArgs

TEXTS = ["good movie", "the film was bad", "really good", "so bad"]


def _cli_predict(home: Path, task: str, texts: list[str], backbone: str) -> list[str]:
    from pipelines.serve import run_predict

    out = run_predict(
        prefix_dir=None,
        task=task,
        registry=RegistryArgs(home=home, tracking_uri="none"),
        texts=texts,
        batch_size=32,
        backbone_name=backbone,
    )
    return [p["prediction"] for p in out["predictions"]]


def test_predict_with_a_task_equals_the_cli(home: Path, client_for, tiny_encoder_dir) -> None:
    client = client_for(home)
    for task in ("t1", "t2"):
        r = client.post("/v1/predict", json={"inputs": TEXTS, "task": task})
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        assert [p["task"] for p in got] == [task] * len(TEXTS)
        assert all(p["routed"] is False and p["confidence"] is None for p in got)
        want = _cli_predict(home, task, TEXTS, str(tiny_encoder_dir))
        assert [p["prediction"] for p in got] == want


def test_routed_predict_equals_predict_auto(home: Path, client_for, tiny_encoder_dir) -> None:
    from pipelines.serve import run_predict_auto

    client = client_for(home)
    r = client.post("/v1/predict", json={"inputs": TEXTS})
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    want = run_predict_auto(
        registry=RegistryArgs(home=home, tracking_uri="none"),
        texts=TEXTS,
        backbone=str(tiny_encoder_dir),
        batch_size=32,
    )["predictions"]
    assert [(p["task"], p["prediction"]) for p in got] == [
        (p["task"], p["prediction"]) for p in want
    ]
    assert all(p["routed"] and 0 <= p["confidence"] <= 1 for p in got)


def test_errors_are_one_json_line(home: Path, client_for) -> None:
    client = client_for(home)
    cases = [
        (client.post("/v1/predict", json={"inputs": ["x"], "task": "nope"}), 404),
        (client.post("/v1/predict", json={"inputs": []}), 422),
        (client.post("/v1/predict", json={"inputs": ["x"], "extra": 1}), 422),
        (client.post("/v1/predict", content=b"{not json", headers={"content-type": "application/json"}), 422),
        (client.get("/v1/tasks/nope"), 404),
        (client.get("/v1/tasks/NOT A NAME"), 422),
        (client.get("/v1/jobs/999"), 404),
        (client.get("/v1/streams/nope/report"), 404),
        (client.get("/v1/nowhere"), 404),
        (client.put("/v1/predict"), 405),
        (client.get("/v1/tasks?limit=0"), 422),
        (client.get("/v1/datasets/abc"), 404),
    ]  # fmt: skip
    for response, status in cases:
        assert response.status_code == status, (response.request.url, response.text)
        body = response.json()
        assert set(body) == {"error", "field", "row"}, body
        assert body["error"] and "\n" not in body["error"]
        assert "Traceback" not in body["error"]


def test_reads_list_the_registry(home: Path, client_for) -> None:
    client = client_for(home)
    tasks = client.get("/v1/tasks").json()
    assert [t["name"] for t in tasks["tasks"]] == ["t1", "t2"] and tasks["total"] == 2
    page = client.get("/v1/tasks?limit=1&offset=1").json()
    assert [t["name"] for t in page["tasks"]] == ["t2"]
    shown = client.get("/v1/tasks/t1").json()
    assert shown["task"]["name"] == "t1" and shown["current"]["version"] == 1
    history = client.get("/v1/tasks/t1/history").json()["evaluations"]
    assert {e["position"] for e in history if e["method"] == "prefix"} >= {0, 1}
    assert client.get("/v1/tasks/t2/lineage").json()["lineage"] == []
    similar = client.get("/v1/tasks/t2/similar?top=1").json()["similar"]
    assert [s["task"] for s in similar] == ["t1"]
    streams = {s["name"]: s for s in client.get("/v1/streams").json()["streams"]}
    assert streams["s"]["arrivals"] == 2
    report = client.get("/v1/streams/s/report?format=json").json()
    assert report["stream"] == "s" and [t["task"] for t in report["tasks"]] == ["t1", "t2"]
    html = client.get("/v1/streams/s/report")
    assert html.headers["content-type"].startswith("text/html") and "<img" in html.text
    jobs = client.get("/v1/jobs?stream=s").json()
    assert [j["state"] for j in jobs["jobs"]] == ["done", "done"] and jobs["total"] == 2
    assert "(a file of the submitter's)" in json.dumps(jobs["jobs"][0]["payload"])


def test_metrics_count_requests_and_batches(home: Path, client_for) -> None:
    client = client_for(home)
    client.post("/v1/predict", json={"inputs": TEXTS, "task": "t1"})
    text = client.get("/metrics").text
    assert (
        'continual_http_requests_total{method="POST",route="/v1/predict",status="200"} 1.0' in text
    )
    assert "continual_predict_batch_inputs_count 1.0" in text
    assert 'continual_jobs{state="done"} 2.0' in text
    assert "continual_predict_queue_depth 0.0" in text


def test_limits_answer_413_and_429(home: Path, client_for) -> None:
    client = client_for(home, max_inputs=3, rate=2.0)
    r = client.post("/v1/predict", json={"inputs": ["a"] * 4, "task": "t1"})
    assert r.status_code == 413 and "at most 3" in r.json()["error"]
    statuses = [client.get("/v1/tasks").status_code for _ in range(8)]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses
    limited = client.get("/v1/tasks")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_dashboard_shows_streams_jobs_and_the_heatmap(home: Path, client_for) -> None:
    client = client_for(home)
    page = client.get("/")
    assert page.status_code == 200
    assert "id='jobs'" in page.text and "id='heatmap-s'" in page.text
    assert "data:image/png;base64," in page.text and "/v1/status" in page.text
    status = client.get("/v1/status").json()
    assert status["jobs"]["done"] == 2 and status["running"] == []


def test_openapi_describes_every_route(home: Path, client_for) -> None:
    doc = client_for(home).get("/openapi.json").json()
    paths = set(doc["paths"])
    for path in (
        "/v1/datasets", "/v1/streams/{stream}/arrivals", "/v1/jobs", "/v1/jobs/{job_id}",
        "/v1/tasks", "/v1/tasks/{name}", "/v1/tasks/{name}/history", "/v1/tasks/{name}/lineage",
        "/v1/tasks/{name}/similar", "/v1/streams", "/v1/streams/{stream}/report", "/v1/predict",
        "/healthz", "/readyz", "/metrics",
    ):  # fmt: skip
        assert path in paths, path
    assert "multipart/form-data" in doc["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert "delete" in doc["paths"]["/v1/jobs/{job_id}"]


def test_a_task_that_cannot_load_fails_its_own_request_only(home: Path, client_for) -> None:
    """t2's stored prefix is damaged: requests for t2 are refused in one line (409) while a
    request for t1 sent at the same moment, inside the same batching window, is answered."""
    from concurrent.futures import ThreadPoolExecutor

    from registry import Registry

    with Registry.open(home, tracking_uri="none") as reg:
        path = home / reg.show("t2").current.artifact_path
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    client = client_for(home, batch_window_ms=300)
    bodies = [{"inputs": ["good"], "task": "t1"}, {"inputs": ["good"], "task": "t2"}] * 3
    with ThreadPoolExecutor(len(bodies)) as pool:
        got = list(pool.map(lambda b: client.post("/v1/predict", json=b), bodies))
    for body, r in zip(bodies, got):
        if body["task"] == "t1":
            assert r.status_code == 200, r.text
        else:
            assert r.status_code == 409 and "\n" not in r.json()["error"], r.text
            assert "is corrupt" in r.json()["error"] and str(home) not in r.json()["error"]
