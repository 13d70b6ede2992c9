"""Trials of one search on several workers: the study is shared, an idle worker adds trials to
a running arrival's search, the arrival's worker waits for trials others are running, never
more trials than asked are counted, and a winner another worker ran is trained again here."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines import tune
from pipelines.tune import TuneSpace
from registry import Registry

SPACE = TuneSpace(trials=4, lengths=(2, 4), widths=(16,), starts=("random",), pruner="none")


def fake_trial(ran: list[str], who: str):
    def run_trial(params, on_validation):
        ran.append(who)
        on_validation(1, params["lr"])
        return (params["lr"], 1)

    return run_trial


def test_a_helper_runs_trials_the_arrival_then_counts_and_waits_for(tmp_path: Path) -> None:
    storage = tune.storage_for(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path)
    ran: list[str] = []

    def go(who: str, helper: bool, trials: int = 4):
        space = replace(SPACE, trials=trials)
        return tune.search(
            space, lengths=space.lengths, study_name="s", storage=storage,
            run_trial=fake_trial(ran, who), score_of=lambda w: w, worker=who, helper=helper,
        )  # fmt: skip

    assert go("helper", helper=True, trials=3) is None  # a helper returns nothing
    assert ran == ["helper"] * 3
    found = go("arrival", helper=False)
    assert ran == ["helper"] * 3 + ["arrival"]  # only the trial left
    assert [t.worker for t in found.trials] == ["helper"] * 3 + ["arrival"]
    assert found.best.value == max(t.value for t in found.trials)
    # the winner's weights are in memory only if this process ran it
    assert (found.best_run is None) == (found.best.worker == "helper")
    assert json.dumps(found.summary())
    solo = tune.search(
        SPACE, lengths=SPACE.lengths, study_name="solo", storage=storage,
        run_trial=fake_trial([], "solo"), score_of=lambda w: w,
    )  # fmt: skip
    # the same seed, but a helper (and a resumed search) draws afresh: no repeated options
    lrs = [t.params["lr"] for t in found.trials]
    assert lrs[0] != solo.trials[0].params["lr"] and len(set(lrs)) == 4

    # another participant's trial still running: the arrival waits for it, runs none itself
    import optuna

    study = optuna.load_study(study_name="s", storage=storage)
    running = study.ask()  # trial 4, "running" in another process
    more = replace(SPACE, trials=5)
    done: list = []
    waiter = threading.Thread(
        target=lambda: done.append(
            tune.search(
                more,
                lengths=more.lengths,
                study_name="s",
                storage=storage,
                run_trial=fake_trial(ran, "late"),
                score_of=lambda w: w,
                wait_s=0.05,
            )  # fmt: skip
        )
    )
    waiter.start()
    time.sleep(0.5)
    assert not done and "late" not in ran  # waiting, not running a surplus trial
    study.tell(running, 0.5)
    waiter.join(timeout=30)
    assert done and len(done[0].trials) == 5 and "late" not in ran


def test_a_trial_past_the_count_is_surplus_and_not_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two participants both saw room for the last trial; the later-numbered one fails at once
    (uncounted), waits for the other's, and the study ends with exactly the trials asked for."""
    import optuna

    storage = tune.storage_for(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path)
    ran: list[str] = []
    tune.search(
        replace(SPACE, trials=3), lengths=SPACE.lengths, study_name="s", storage=storage,
        run_trial=fake_trial(ran, "a"), score_of=lambda w: w, helper=True,
    )  # fmt: skip
    real_ask = optuna.study.Study.ask
    others: list = []

    def ask_after_another(self, *args, **kwargs):
        if not others:  # participant X creates its trial first, between our look and our ask
            others.append((self, real_ask(self)))
            threading.Timer(0.3, lambda: self.tell(others[0][1], 0.5)).start()
        return real_ask(self, *args, **kwargs)

    monkeypatch.setattr(optuna.study.Study, "ask", ask_after_another)
    found = tune.search(
        SPACE, lengths=SPACE.lengths, study_name="s", storage=storage,
        run_trial=fake_trial(ran, "b"), score_of=lambda w: w, wait_s=0.05,
    )  # fmt: skip
    assert "b" not in ran  # its trial was the surplus one
    assert len(found.trials) == 4 and found.trials[-1].value == 0.5
    study = optuna.load_study(study_name="s", storage=storage)
    (failed,) = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed.user_attrs.get("surplus") is True and failed.number == 4


def test_an_idle_worker_helps_a_running_search_and_the_arrival_keeps_the_winner(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    """Worker B, idle, adds every trial to the search of a job worker A has claimed; A then
    runs no trial, trains B's winner again from its seed and registers exactly one prefix."""
    from continual.train import TrainConfig
    from pipelines.arrival.plan import ArrivalPlan
    from pipelines.arrival.queueing import enqueue_arrival
    from pipelines.arrival.worker import Worker
    from pipelines.settings import RegistryArgs
    from tasks.load import DataArgs

    home = tmp_path / "home"
    args = RegistryArgs(home=home, tracking_uri="none")
    data = DataArgs(train=str(write_jsonl("h.jsonl", sentiment(48, seed=2))))
    plan = ArrivalPlan(
        name="h",
        data=data,
        config=TrainConfig(steps=6, batch_size=8, eval_every=2, patience=0),
        prefix_length=4,
        init="random",
        tune=TuneSpace(trials=3, lengths=(2, 4), widths=(16,), starts=("random",), seed=1),
    )
    said: list[str] = []
    a = Worker(registry=args, progress=False, say=said.append, name="host-a:1:a")
    b = Worker(
        registry=args, progress=False, say=said.append, name="host-b:2:b", help_searches=True
    )
    with args.open() as reg:
        enqueue_arrival(reg, plan=plan, backbone=str(tiny_encoder_dir), stream="s")
        job = reg.queue.claim(a.id, lease_s=600)
        assert job is not None
        reg.queue.progress(job.id, a.id, {"phase": "prefix · search (3 trials)"})
    ran: list = []
    serving = threading.Thread(target=lambda: ran.append(b.serve(until_empty=True)))
    serving.start()  # it waits for A's running job to end; stopped once it has helped
    deadline = time.monotonic() + 120
    while not b._helped and time.monotonic() < deadline:
        time.sleep(0.1)
    b.stop()
    serving.join(timeout=60)
    assert ran == [[]]  # it ran no job: it added trials to A's search
    assert any("helping job" in line for line in said)
    with args.open() as reg:
        outcome = a.run(reg, reg.queue.get(job.id), raise_errors=True)
        assert outcome["state"] == "done"
        (only,) = reg.prefixes(task="h")
        found = reg.run(only.run_id).config["tune"]
    assert [t["worker"] for t in found["trials"]] == [b.id] * 3
    assert only.config["length"] == found["best"]["params"]["prefix_length"]
    assert not any("tune: trial" in line and "host-a" in line for line in said)
    with Registry.open(home, tracking_uri="none") as reg:
        assert reg.count_prefixes() == 1


@pytest.mark.slow
def test_two_worker_processes_share_one_search(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    """Real `continual worker` processes: A takes the tuned arrival; B, started once A is
    searching, finds nothing to claim and adds trials to A's study. The study ends with
    exactly the trials asked for, run by both, and one prefix is registered."""
    import subprocess
    import sys

    from tests.pipelines.test_workers import _env, cli

    home = tmp_path / "home"
    data = write_jsonl("h.jsonl", sentiment(64, seed=4))
    queued = cli(
        home, None, "learn", "--queue", "--backbone", tiny_encoder_dir, "--stream", "s",
        "--name", "h", "--train", data, "--steps", "400", "--eval-every", "100",
        "--batch-size", "8", "--patience", "0", "--tune", "6", "--tune-lengths", "2,4",
        "--tune-widths", "16", "--tune-starts", "random", "--tune-pruner", "none",
    )  # fmt: skip

    def worker(name: str) -> subprocess.Popen:
        args = [sys.executable, "-m", "pipelines.cli", "worker", "--until-empty", "--poll", "0.2"]
        args += ["--home", str(home), "--tracking-uri", "none", "--json", "--quiet"]
        env = _env(CONTINUAL_WORKER_NAME=name, CONTINUAL_THREADS="1")
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    a = worker("node-a")
    deadline = time.monotonic() + 300
    state = "queued"
    while state == "queued" and time.monotonic() < deadline:
        time.sleep(0.1)
        with Registry.open(home, tracking_uri="none") as reg:
            state = reg.queue.get(queued["job"]).state
    assert state == "running", state
    b = worker("node-b")  # started once A holds the job; it joins when A's phase is the search
    for p in (a, b):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
    with Registry.open(home, tracking_uri="none") as reg:
        assert reg.queue.get(queued["job"]).state == "done"
        (only,) = reg.prefixes(task="h")
        found = reg.run(only.run_id).config["tune"]
    by = [t["worker"].split(":")[0] for t in found["trials"]]
    assert len(by) == 6 and set(by) == {"node-a", "node-b"}, by
    assert only.config["length"] == found["best"]["params"]["prefix_length"]
