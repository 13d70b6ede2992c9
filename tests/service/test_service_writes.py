"""Uploads, arrivals, cancels and tokens over HTTP: a refused request writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry import Registry


def _state(home: Path) -> tuple[int, int, list[str]]:
    """(jobs, stored datasets, files left under uploads/)."""
    with Registry.open(home, tracking_uri="none") as reg:
        jobs, datasets = reg.queue.count(), reg.data.count()
    uploads = home / "uploads"
    left = [str(p) for p in uploads.rglob("*") if p.is_file()] if uploads.exists() else []
    return jobs, datasets, left


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_an_upload_is_validated_stored_and_learnt(home: Path, client_for, sentiment) -> None:
    client = client_for(home)
    rows = [{"sentence": r["text"], "y": r["label"]} for r in sentiment(40, seed=9)]
    r = client.post(
        "/v1/datasets",
        files={"train": ("mine.jsonl", _jsonl(rows))},
        data={"text_field": "sentence", "label_field": "y"},
    )
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["rows"] == 40 and up["labels"] == ["negative", "positive"] and len(up["id"]) == 64
    assert client.get(f"/v1/datasets/{up['id']}").json()["train"] == up["train"]
    again = client.post(
        "/v1/datasets",
        files={"train": ("other-name.jsonl", _jsonl(rows))},
        data={"text_field": "sentence", "label_field": "y"},
    )
    assert again.json()["id"] == up["id"]  # content-addressed: the same data, the same id
    job = client.post(
        "/v1/streams/s/arrivals",
        json={"name": "t3", "dataset": up["id"], "options": {"steps": 8, "prefix_length": 4}},
    )
    assert job.status_code == 202, job.text
    queued = job.json()["job"]
    assert queued["state"] == "queued" and queued["task"] == "t3" and queued["stream"] == "s"
    assert queued["payload"]["backbone"] == str(client.app.state.service.answerer.name)
    assert _state(home)[2] == []

    from pipelines.arrival.worker import Worker
    from pipelines.settings import RegistryArgs

    Worker(registry=RegistryArgs(home=home, tracking_uri="none"), progress=False, say=print).serve(
        until_empty=True
    )
    done = client.get(f"/v1/jobs/{queued['id']}").json()["job"]
    assert done["state"] == "done", done["error"]
    assert done["progress"]["phase"] == "report"  # the worker wrote its phases as it went
    assert done["result"]["prefix"]["steps"] == 8
    answered = client.post("/v1/predict", json={"inputs": ["good"], "task": "t3"}).json()
    assert answered["predictions"][0]["prediction"] in ("positive", "negative")


def test_an_arrival_with_a_search_runs_it_and_registers_the_winner(
    home: Path, client_for, sentiment
) -> None:
    """`options.tune` over HTTP travels in the job to the worker, which runs the search."""
    client = client_for(home)
    rows = [{"text": r["text"], "label": r["label"]} for r in sentiment(48, seed=5)]
    up = client.post("/v1/datasets", files={"train": ("s.jsonl", _jsonl(rows))}).json()
    search = {"trials": 2, "lengths": [2, 4], "widths": [16], "starts": ["random"], "seed": 3}
    job = client.post(
        "/v1/streams/s/arrivals",
        json={"name": "t4", "dataset": up["id"], "options": {"steps": 6, "tune": search}},
    )
    assert job.status_code == 202, job.text
    queued = job.json()["job"]
    assert queued["payload"]["plan"]["tune"]["trials"] == 2

    from pipelines.arrival.worker import Worker
    from pipelines.settings import RegistryArgs

    Worker(registry=RegistryArgs(home=home, tracking_uri="none"), progress=False, say=print).serve(
        until_empty=True
    )
    done = client.get(f"/v1/jobs/{queued['id']}").json()["job"]
    assert done["state"] == "done", done["error"]
    with Registry.open(home, tracking_uri="none") as reg:
        (only,) = reg.prefixes(task="t4")
        found = reg.run(only.run_id).config["tune"]
    assert len(found["trials"]) == 2
    assert only.config["length"] == found["best"]["params"]["prefix_length"] in (2, 4)


@pytest.mark.parametrize(
    ("module", "field", "value"),
    [({"kind": "lora", "rank": 2}, "rank", 2), ({"kind": "prompt", "length": 3}, "length", 3)],
)
def test_an_arrival_may_train_another_module_kind(
    module, field, value, home: Path, client_for, sentiment
) -> None:
    """`options.module` over HTTP: the worker trains a LoRA (or a soft prompt), registered
    with its kind, and `/v1/predict` answers with it."""
    client = client_for(home)
    rows = [{"text": r["text"], "label": r["label"]} for r in sentiment(48, seed=5)]
    up = client.post("/v1/datasets", files={"train": ("s.jsonl", _jsonl(rows))}).json()
    job = client.post(
        "/v1/streams/s/arrivals",
        json={"name": "t5", "dataset": up["id"],
              "options": {"steps": 6, "max_length": 64, "module": module}},
    )  # fmt: skip
    assert job.status_code == 202, job.text
    queued = job.json()["job"]
    assert queued["payload"]["plan"]["module"] == module["kind"]

    from pipelines.arrival.worker import Worker
    from pipelines.settings import RegistryArgs

    Worker(registry=RegistryArgs(home=home, tracking_uri="none"), progress=False, say=print).serve(
        until_empty=True
    )
    done = client.get(f"/v1/jobs/{queued['id']}").json()["job"]
    assert done["state"] == "done", done["error"]
    with Registry.open(home, tracking_uri="none") as reg:
        record = reg.prefix("t5")
    assert record.kind == module["kind"] and record.config[field] == value
    answered = client.post("/v1/predict", json={"inputs": ["good"], "task": "t5"}).json()
    assert answered["predictions"][0]["prediction"] in ("positive", "negative")


@pytest.mark.parametrize(
    "files,data,status,words,field,row",
    [
        ({"train": ("d.jsonl", b'{"text": "good", "label": "a"}\n{"text": " ", "label": "b"}\n')},
         {}, 422, "d.jsonl: row 2: field 'text' is empty", "text", 2),
        ({"train": ("d.jsonl", b'{"text": "good"}\n')}, {}, 422, "field 'label' is missing",
         "label", None),
        ({"train": ("d.jsonl", b'not json\n')}, {}, 422, "d.jsonl: row 1: not valid JSON", None, 1),
        ({"train": ("d.xlsx", b"PK..")}, {}, 422, "unsupported file type '.xlsx'", None, None),
        ({"train": ("d.jsonl", b'{"text": "a", "label": "x"}\n' * 3)},
         {"label_field": "label", "target_field": "t"}, 422, "not both", None, None),
        ({}, {"kind": "classification"}, 422, "a 'train' file", None, None),
        ({"train": ("d.jsonl", b"{}\n"), "other": ("o.txt", b"x")}, {}, 422,
         "unknown form field 'other'", "other", None),
        ({"train": ("big.jsonl", b'{"text": "good", "label": "a"}\n' * 40000)}, {}, 413,
         "over the server's limit", None, None),
    ],
)  # fmt: skip
def test_a_bad_upload_is_one_line_and_leaves_nothing(
    home: Path, client_for, files, data, status, words, field, row
) -> None:
    client = client_for(home, max_upload_mb=1.0)
    before = _state(home)
    r = client.post("/v1/datasets", files=files or None, data=data)
    assert r.status_code == status, r.text
    body = r.json()
    assert words in body["error"] and "\n" not in body["error"]
    assert str(home) not in body["error"] and "/tmp" not in body["error"]
    assert (body["field"], body["row"]) == (field, row)
    assert _state(home) == before  # no dataset row, no file left under uploads/


@pytest.mark.parametrize(
    "body,status,words",
    [
        ({"catalog": "rotten_tomatoes", "dataset": "0" * 64}, 422, "one of them"),
        ({"name": "x"}, 422, "one of them"),
        ({"catalog": "no_such_set"}, 422, "unknown catalog task 'no_such_set'"),
        ({"catalog": "trec", "options": {"stpes": 5}}, 422, "did you mean 'steps'"),
        ({"catalog": "trec", "options": {"train": "/etc/passwd"}}, 422, "unknown key 'train'"),
        ({"catalog": "trec", "options": {"steps": "many"}}, 422, "whole number"),
        ({"name": "x", "dataset": "0" * 64}, 404, "is not in the registry"),
        ({"name": "x", "dataset": "zz"}, 404, "not an id"),
        ({"name": "t1", "catalog": "trec"}, 422, "already arrived"),
        ({"catalog": "trec", "baselines": ["nope"]}, 422, "unknown baseline 'nope'"),
        ({"catalog": "trec", "surprise": 1}, 422, "surprise"),
        ({"catalog": "trec", "options": {"tune": {"trials": 0}}}, 422, "trials"),
        (
            {"catalog": "trec", "options": {"tune": {"trials": 2, "lr": [1e-2, 1e-4]}}},
            422,
            "bounds",
        ),
        ({"catalog": "trec", "options": {"tune": {"trials": 2, "lengths": []}}}, 422, "lengths"),
        ({"catalog": "trec", "options": {"module": "adapter"}}, 422, "unknown task module kind"),
        (
            {"catalog": "trec", "options": {"module": {"kind": "lora", "rank": 0}}},
            422,
            "rank must be",
        ),
        # what the backbone (the tiny encoder: 128 positions) cannot take, refused at queue time
        ({"catalog": "trec", "options": {"prefix_length": 100000}}, 422, "context (128"),
        (
            {"catalog": "trec", "options": {"module": {"kind": "lora", "targets": ["nowhere"]}}},
            422,
            "lora target 'nowhere' matches no layer",
        ),
        (
            {"catalog": "trec", "options": {"tune": {"trials": 2, "lengths": [100000]}}},
            422,
            "lengths of at most 128",
        ),
    ],
)
def test_a_bad_arrival_is_refused_before_anything_is_queued(
    home: Path, client_for, body, status, words
) -> None:
    client = client_for(home)
    before = _state(home)
    r = client.post("/v1/streams/s/arrivals", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert _state(home) == before


def test_cancel_a_queued_job_then_refuse_again(home: Path, client_for, sentiment) -> None:
    client = client_for(home)
    rows = sentiment(20, seed=4)
    up = client.post("/v1/datasets", files={"train": ("x.jsonl", _jsonl(rows))}).json()
    job = client.post("/v1/streams/s2/arrivals", json={"name": "x", "dataset": up["id"]}).json()
    jid = job["job"]["id"]
    gone = client.delete(f"/v1/jobs/{jid}")
    assert gone.status_code == 200 and gone.json()["job"]["state"] == "cancelled"
    again = client.delete(f"/v1/jobs/{jid}")
    assert again.status_code == 409 and "cancelled" in again.json()["error"]
    assert client.delete("/v1/jobs/4242").status_code == 404


def test_tokens_gate_reads_and_writes(home: Path, client_for, sentiment) -> None:
    with Registry.open(home, tracking_uri="none") as reg:
        write, _ = reg.tokens.create(scope="write", name="w")
        read, read_record = reg.tokens.create(scope="read", name="r")
        assert all(write not in json.dumps(t.to_dict()) for t in reg.tokens.list())
    client = client_for(home)
    files = {"train": ("x.jsonl", _jsonl(sentiment(20, seed=4)))}
    before = _state(home)

    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    assert client.get("/healthz").status_code == 200  # probes need no token
    r = client.get("/v1/tasks")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/tasks", headers=auth("ct_wrong")).status_code == 401
    assert client.get("/v1/tasks", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.get("/v1/tasks", headers=auth(read)).status_code == 200
    assert client.post("/v1/predict", json={"inputs": ["good"], "task": "t1"}, headers=auth(read)).status_code == 200  # fmt: skip
    for token, status in ((None, 401), (read, 403)):
        headers = auth(token) if token else {}
        assert client.post("/v1/datasets", files=files, headers=headers).status_code == status
        arrival = {"catalog": "trec", "options": {"steps": 5}}
        r = client.post("/v1/streams/s/arrivals", json=arrival, headers=headers)
        assert r.status_code == status and r.json()["error"]
        assert client.delete("/v1/jobs/1", headers=headers).status_code == status
    assert _state(home) == before  # nothing written by a refused request
    assert client.post("/v1/datasets", files=files, headers=auth(write)).status_code == 201

    with Registry.open(home, tracking_uri="none") as reg:
        reg.tokens.revoke(read_record.id)
    import time

    time.sleep(2.1)  # the gate caches a token's check for 2 s
    assert client.get("/v1/tasks", headers=auth(read)).status_code == 401
    page = client.get("/")
    assert page.status_code == 401 and "<form" in page.text
    client.post("/login", data={"token": write}, follow_redirects=False)
    assert client.get("/").status_code == 200  # the browser's cookie


def test_no_tokens_no_exposure(home: Path) -> None:
    from pipelines.service.config import ServeSettings
    from pipelines.service.server import check_exposure
    from pipelines.settings import RegistryArgs
    from tasks.errors import ConfigError

    args = RegistryArgs(home=home, tracking_uri="none")
    assert check_exposure(args, ServeSettings(host="127.0.0.1")) == 0
    with pytest.raises(ConfigError, match="--insecure"):
        check_exposure(args, ServeSettings(host="0.0.0.0"))
    assert check_exposure(args, ServeSettings(host="0.0.0.0", insecure=True)) == 0
    with Registry.open(home, tracking_uri="none") as reg:
        reg.tokens.create(scope="read")
    assert check_exposure(args, ServeSettings(host="0.0.0.0")) == 1
    fresh = RegistryArgs(home=home.parent / "never-made", tracking_uri="none")
    with pytest.raises(ConfigError, match="--insecure"):
        check_exposure(fresh, ServeSettings(host="0.0.0.0"))
    assert not fresh.home.exists()  # refused before anything was written


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet"])
def test_csv_tsv_and_parquet_uploads_equal_the_jsonl_one(
    home: Path, client_for, sentiment, tmp_path: Path, fmt: str
) -> None:
    import pandas as pd

    rows = sentiment(30, seed=11)
    client = client_for(home)
    want = client.post("/v1/datasets", files={"train": ("d.jsonl", _jsonl(rows))}).json()
    path = tmp_path / f"d.{fmt}"
    frame = pd.DataFrame(rows)
    if fmt == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, sep="," if fmt == "csv" else "\t")
    got = client.post("/v1/datasets", files={"train": (path.name, path.read_bytes())})
    assert got.status_code == 201, got.text
    assert got.json()["id"] == want["id"]  # the same examples, the same stored data


def test_a_generation_task_on_an_encoder_is_refused_at_queue_time(home: Path, client_for) -> None:
    client = client_for(home)
    rows = [{"text": f"the cat sat {i}", "target": f"cat {i}"} for i in range(12)]
    up = client.post(
        "/v1/datasets", files={"train": ("g.jsonl", _jsonl(rows))}, data={"kind": "generation"}
    )
    assert up.status_code == 201, up.text
    before = _state(home)
    r = client.post(
        "/v1/streams/gen/arrivals",
        json={"name": "g", "dataset": up.json()["id"], "backbone": "minilm"},
    )
    assert r.status_code == 422 and "encoder backbone does no generation" in r.json()["error"]
    assert _state(home) == before  # no job queued, no data staged for it
