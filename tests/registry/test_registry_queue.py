"""Streams, jobs with leases and stored task data, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from registry_testkit import register
from sqlalchemy import text

from registry import Registry
from registry.orm import utcnow
from tasks.errors import ConfigError, IntegrityError
from tasks.spec import Example, TaskData, TaskSpec
from tasks.split import fingerprint


def _queue(reg: Registry, stream: str, *tasks: str) -> list[int]:
    return [reg.queue.enqueue(stream=stream, task=t, payload={"t": t}).id for t in tasks]


def test_a_stream_runs_its_jobs_one_at_a_time_in_order_streams_in_parallel(reg: Registry) -> None:
    a1, a2 = _queue(reg, "a", "t1", "t2")
    (b1,) = _queue(reg, "b", "u1")
    first = reg.queue.claim("w1")
    second = reg.queue.claim("w2")
    assert (first.id, second.id) == (a1, b1)  # oldest head first; b runs beside a
    assert reg.queue.claim("w3") is None  # a2 waits for a1; b has nothing more
    assert first.state == "running" and first.worker_id == "w1" and first.attempts == 1
    assert reg.queue.complete(a1, "w1", result={"ok": 1}, position=0)
    got = reg.queue.claim("w3")
    assert got.id == a2 and got.stream == "a"
    assert reg.queue.get(a1).state == "done" and reg.queue.get(a1).position == 0
    names = {s.name: s for s in reg.streams.list()}
    assert set(names) >= {"a", "b"} and dict(names["a"].jobs) == {"done": 1, "running": 1}


def test_an_expired_lease_is_taken_over_and_the_old_worker_loses_the_job(reg: Registry) -> None:
    (j,) = _queue(reg, "s", "t")
    # a lease of 1 s: long enough that a loaded machine still claims again inside it
    assert reg.queue.claim("dead", lease_s=1.0).id == j
    assert reg.queue.claim("live", lease_s=30) is None  # the lease still holds
    time.sleep(1.1)
    taken = reg.queue.claim("live", lease_s=30)
    assert taken.id == j and taken.worker_id == "live" and taken.attempts == 2
    assert not reg.queue.heartbeat(j, "dead")  # the killed worker's heartbeat finds it gone
    assert not reg.queue.complete(j, "dead", result={}, position=0)
    assert reg.queue.heartbeat(j, "live")
    assert reg.queue.complete(j, "live", result={"by": "live"}, position=0)
    assert reg.queue.get(j).result == {"by": "live"}


def test_a_job_whose_worker_keeps_dying_fails_and_blocks_its_stream(reg: Registry) -> None:
    j, k = _queue(reg, "s", "t", "u")
    for _ in range(3):
        assert reg.queue.claim("w", lease_s=0.01).id == j
        time.sleep(0.05)
    assert reg.queue.claim("w") is None  # attempts used up: failed, and k waits behind it
    failed = reg.queue.get(j)
    assert failed.state == "failed" and "lost 3 time(s)" in failed.error
    assert reg.queue.runnable() == 0
    with pytest.raises(ConfigError, match="only a failed job retries"):
        reg.queue.retry(k)
    assert reg.queue.retry(j).state == "queued"
    assert reg.queue.claim("w").id == j


def test_failed_attempts_retry_then_fail(reg: Registry) -> None:
    (j,) = _queue(reg, "s", "t")
    reg.queue.claim("w")
    assert reg.queue.fail(j, "w", error="boom", retry=True).state == "queued"
    reg.queue.claim("w")
    assert reg.queue.fail(j, "w", error="bad data", retry=False).state == "failed"
    assert reg.queue.get(j).error == "bad data"
    assert reg.queue.cancel(j).state == "cancelled"  # it never took a position
    (again,) = _queue(reg, "s", "t")  # a cancelled job frees the task's name in the stream
    assert again != j


def test_enqueue_twice_and_cancel_rules(reg: Registry) -> None:
    (j,) = _queue(reg, "s", "t")
    with pytest.raises(ConfigError, match=f"already has job {j} \\(queued\\)"):
        _queue(reg, "s", "t")
    _queue(reg, "other", "t")  # another stream may take the same task
    reg.queue.claim("w", streams=["s"])
    with pytest.raises(ConfigError, match="only queued jobs can be cancelled"):
        reg.queue.cancel(j)
    with pytest.raises(ConfigError, match="not in the registry"):
        reg.queue.get(9999)
    with pytest.raises(ConfigError, match="invalid stream name"):
        reg.queue.enqueue(stream="no spaces", task="t", payload={})
    assert [x.task for x in reg.queue.list(stream="other")] == ["t"]
    with pytest.raises(ConfigError, match="--state 'nope'"):
        reg.queue.list(state="nope")


def test_the_database_refuses_a_second_live_job_for_a_task(reg: Registry) -> None:
    _queue(reg, "s", "t")
    with pytest.raises(Exception, match="(?i)unique"), reg.db.engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO jobs (stream_id, kind, task, state, payload, attempts, "
                "max_attempts, created_at) SELECT stream_id, kind, task, 'queued', payload, 0, "
                "3, created_at FROM jobs"
            )
        )


def test_positioned_scores_and_arrivals_are_written_once(reg: Registry) -> None:
    register(reg, "a")
    register(reg, "b")
    first = reg.record_evaluation(task="a", metric="accuracy", value=0.5, n=4, position=0)
    again = reg.record_evaluation(task="a", metric="accuracy", value=0.9, n=4, position=0)
    assert again.id == first.id and again.value == 0.5 and again.stream == "default"
    other = reg.record_evaluation(
        task="a", metric="accuracy", value=0.7, n=4, position=0, stream="s2"
    )
    assert other.id != first.id and other.stream == "s2"
    loose = [reg.record_evaluation(task="a", metric="accuracy", value=0.1, n=4) for _ in "xy"]
    assert loose[0].id != loose[1].id  # scores outside a stream are not constrained
    one = reg.streams.start_arrival(position=0, task="a", method="prefix", stream="s2")
    two = reg.streams.start_arrival(position=0, task="a", method="prefix", stream="s2")
    assert one.id == two.id and one.stream == "s2"
    with pytest.raises(IntegrityError, match="held by another task"):
        reg.streams.start_arrival(position=0, task="b", method="prefix", stream="s2")
    with pytest.raises(IntegrityError):
        reg.streams.start_arrival(position=1, task="a", method="prefix", stream="s2")
    assert [e.position for e in reg.streams.evaluations("s2")] == [0]
    assert reg.streams.evaluations("missing") == []


def test_task_data_is_stored_once_and_read_back_verified(reg: Registry) -> None:
    spec = TaskSpec(name="t", kind="classification", labels=("no", "yes"))
    # texts with line breaks of every kind str.splitlines() knows (imdb has \x85 and \u2028)
    odd = ("\n", "\r\n", "\x85", "\u2028", "\x0c", "\x1e")
    train = tuple(Example(text=f"x{i} é{odd[i]}y", target=("no", "yes")[i % 2]) for i in range(5))
    ev = (Example(text="z", target="yes"),)
    data = TaskData(spec=spec, train=train, eval=ev, fingerprint=fingerprint(train, ev))
    rec = reg.data.put(data)
    assert reg.data.put(data) == rec  # same bytes, same row
    assert rec.n_train == 5 and rec.n_eval == 1 and rec.path.endswith(".data.jsonl.gz")
    back = reg.data.get(rec.sha256)
    assert back == data
    (reg.workspace / rec.path).write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="corrupt"):
        reg.data.get(rec.sha256)


def test_lease_times_compare_as_times(reg: Registry) -> None:
    """The lease columns round-trip as UTC and compare correctly in SQL on both backends."""
    (j,) = _queue(reg, "s", "t")
    before = utcnow()
    job = reg.queue.claim("w", lease_s=120)
    assert before <= job.heartbeat_at <= utcnow()
    assert job.lease_expires_at - job.heartbeat_at == timedelta(seconds=120)
    assert job.id == j
