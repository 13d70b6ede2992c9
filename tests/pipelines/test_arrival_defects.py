"""Defects found by trying arrivals as a new user would, each pinned by a test that failed
before its fix: an unwritable `train --out` refused before anything is written, and an
arrival whose task-agnostic step raised is not finished (its job is retried and fills the rows)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from pipelines.arrival import steps
from pipelines.arrival.plan import ArrivalPlan
from pipelines.arrival.queueing import learn
from pipelines.arrival.worker import Worker
from pipelines.cli import main
from pipelines.settings import RegistryArgs
from registry import Registry
from tasks.errors import ConfigError
from tasks.load import DataArgs

FAST = ["--steps", "8", "--lr", "1e-2", "--prefix-length", "4", "--eval-every", "4"]
FAST += ["--batch-size", "8"]


def cli(*argv: str | Path) -> tuple[int, dict]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv] + ["--json", "--quiet", "--tracking-uri", "none"])
    return code, json.loads(out.getvalue() or "{}")


@pytest.mark.parametrize("where", ["a file in the way", "under a file"])
def test_train_out_that_cannot_be_written_is_refused_before_anything(
    where, tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    train = write_jsonl("t.jsonl", sentiment(32))
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker if where == "a file in the way" else blocker / "prefix"
    home = tmp_path / "home"
    code, doc = cli(
        "train", "--backbone", tiny_encoder_dir, "--train", train, "--name", "t",
        "--home", home, "--out", out, *FAST,
    )  # fmt: skip
    assert code == 2 and "--out" in doc["error"], doc
    assert not (home / "registry.db").exists()  # nothing registered: a retry is not refused
    code, doc = cli(
        "train", "--backbone", tiny_encoder_dir, "--train", train, "--name", "t",
        "--home", home, "--out", tmp_path / "fine", *FAST,
    )  # fmt: skip
    assert code == 0, doc


def _plan(name: str, folder: Path, sentiment, seed: int) -> ArrivalPlan:
    for split, n in (("train", 32), ("eval", 16)):
        rows = sentiment(n, seed=seed + (split == "eval") * 100)
        (folder / f"{name}-{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
        )
    data = DataArgs(
        train=str(folder / f"{name}-train.jsonl"), eval=str(folder / f"{name}-eval.jsonl")
    )
    from continual.train import TrainConfig

    config = TrainConfig(steps=8, lr=1e-2, eval_every=4, batch_size=8)
    return ArrivalPlan(name=name, data=data, config=config, prefix_length=4, init="random")


@pytest.mark.parametrize("error", [ConfigError, RuntimeError])
def test_a_failed_task_agnostic_step_leaves_the_arrival_unfinished(
    error, tiny_encoder_dir, sentiment, tmp_path, monkeypatch
) -> None:
    """The earlier orchestrator caught a ConfigError from this step, said "skipped" and
    finished the arrival, so its routed rows were never filled. Now only tasks without routing
    keys are skipped (checked first); anything else fails the job: a user error fails it for a
    `jobs retry`, any other is retried by the next worker."""
    registry = RegistryArgs(home=tmp_path / "home", tracking_uri="none")
    backbone = str(tiny_encoder_dir)
    kw = dict(backbone=backbone, stream="default", progress=False, say=lambda _: None)
    learn(registry, plan=_plan("first", tmp_path, sentiment, 1), **kw)

    def broken(*args, **kwargs):
        raise error("routing broke")

    monkeypatch.setattr(steps, "record_task_agnostic", broken)
    with pytest.raises(error, match="routing broke"):
        learn(registry, plan=_plan("second", tmp_path, sentiment, 3), **kw)
    with registry.open() as reg:
        second = [a for a in reg.streams.arrivals("prefix") if a.task == "second"]
        assert [a.status for a in second] == ["running"]  # not finished without its rows
        (job,) = [j for j in reg.queue.list() if j.task == "second"]
        assert "routing broke" in job.error
        assert job.state == ("failed" if error is ConfigError else "queued")
        if job.state == "failed":
            reg.queue.retry(job.id)
    monkeypatch.undo()
    Worker(registry=registry, progress=False, say=lambda _: None).serve(until_empty=True)
    with Registry.open(registry.home, tracking_uri="none") as reg:
        assert reg.queue.get(job.id).state == "done"
        assert all(a.status == "done" for a in reg.streams.arrivals())
        routed = {(e.task, e.method) for e in reg.streams.evaluations("default") if e.position == 1}
    assert {("first", "prefix/routed"), ("second", "prefix/routing")} <= routed


def test_a_task_trained_with_train_joins_a_stream(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    """`learn --task T` adopts T's current prefix at the stream's next position (scored there on
    T's stored data) instead of refusing it; a plain `learn` of the same name still refuses."""
    home = tmp_path / "home"
    first = write_jsonl("first.jsonl", sentiment(32, seed=1))
    code, out = cli("learn", "--backbone", tiny_encoder_dir, "--train", first, "--name", "first",
                    "--home", home, *FAST)  # fmt: skip
    assert code == 0, out
    solo = write_jsonl("solo.jsonl", sentiment(32, seed=2))
    code, trained = cli("train", "--backbone", tiny_encoder_dir, "--train", solo, "--name", "solo",
                        "--home", home, *FAST)  # fmt: skip
    assert code == 0, trained
    code, out = cli("learn", "--backbone", tiny_encoder_dir, "--train", solo, "--name", "solo",
                    "--home", home, *FAST)  # fmt: skip
    assert code == 2 and "learn --task solo" in out["error"]
    code, out = cli("learn", "--task", "solo", "--home", home)
    assert code == 0, out
    assert out["position"] == 1 and out["prefix"]["adopted"] == trained["prefix_id"]
    assert out["prefix"]["score"] == trained["score"]  # its own data, its own batching
    with Registry.open(home, tracking_uri="none") as reg:
        assert [a.task for a in reg.streams.arrivals("prefix")] == ["first", "solo"]
        assert all(a.status == "done" for a in reg.streams.arrivals())
        assert reg.show("solo").versions == 1  # adopted, not retrained
