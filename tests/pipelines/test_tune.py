"""`--tune N`: a seeded Optuna search over prefix length, learning rate, width and start, on a
validation split of the training data; only the best trial's prefix is registered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import tune
from pipelines.cli import main
from pipelines.tune import TuneSpace
from registry import NullTracker, Registry
from tasks.errors import ConfigError
from tests.pipelines.test_arrival_defects import cli
from tests.pipelines.test_workers import pg_url  # noqa: F401 - a fixture, requested by name

FAST = ["--steps", "8", "--eval-every", "2", "--batch-size", "8", "--patience", "0"]
SPACE = ["--tune-lengths", "2,4", "--tune-widths", "16,32", "--tune-starts", "random"]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--tune", "0"], "trials must be"),
        (["--tune", "2", "--tune-lengths", ""], "lengths is empty"),
        (["--tune", "2", "--tune-lr", "1e-2:1e-4"], "learning-rate bounds"),
        (["--tune", "2", "--tune-lr", "fast"], "MIN:MAX"),
        (["--tune", "2", "--tune-starts", "nearest"], "unknown start"),
        (["--tune-lengths", "4,8"], "add --tune N"),
        (["--tune", "2", "--tune-trial-steps", "0"], "trial_steps must be"),
    ],
)
def test_bad_search_settings_are_one_line_before_anything_is_written(
    flags, says, tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    train = write_jsonl("t.jsonl", sentiment(40))
    home = tmp_path / "home"
    code, doc = cli(
        "train", "--backbone", tiny_encoder_dir, "--train", train, "--name", "t",
        "--home", home, *FAST, *flags,
    )  # fmt: skip
    assert code == 2 and says in doc["error"] and "\n" not in doc["error"], doc
    assert not (home / "registry.db").exists() and not (home / "studies.db").exists()


def test_lengths_past_the_context_are_refused_before_the_study_or_dropped_with_a_line(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path, capsys
) -> None:
    """The tiny encoder has 128 positions: a space of only longer prefixes is one line naming
    the flag, before the study exists (it used to fail inside Optuna's first trial, with a
    traceback and a failed trial left in studies.db); a longer length among others is dropped
    with a line, and the search runs on the rest."""
    train = write_jsonl("t.jsonl", sentiment(40))
    home = tmp_path / "home"
    code, doc = cli(
        "train", "--backbone", tiny_encoder_dir, "--train", train, "--name", "t",
        "--home", home, *FAST, "--tune", "2", "--tune-lengths", "200,300",
    )  # fmt: skip
    err = doc["error"]
    assert code == 2 and "at most 128" in err and "--tune-lengths" in err and "\n" not in err
    assert not (home / "studies.db").exists()
    with Registry.open(home, tracker=NullTracker()) as reg:
        assert not reg.has_task("t")
    capsys.readouterr()
    argv = [
        "train", "--backbone", tiny_encoder_dir, "--train", train, "--name", "t",
        "--home", tmp_path / "other", *FAST, "--tune", "2", *SPACE[2:],
        "--tune-lengths", "2,200", "--json", "--tracking-uri", "none",
    ]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["prefix_length"] == 2
    assert "tune: prefix lengths [200] do not fit the context (at most 128)" in err
    assert err.count("tune: trial ") == 2  # a search says each trial (bars alone cannot)


def test_the_space_reads_from_a_stream_entry() -> None:
    space = TuneSpace.from_dict({"trials": 3, "lengths": [4, 8], "lr": [1e-3, 1e-2]})
    assert (space.trials, space.lengths, space.lr_min) == (3, (4, 8), 1e-3)
    assert TuneSpace.from_dict(5).trials == 5
    assert TuneSpace.from_dict(space.to_dict()) == space
    with pytest.raises(ConfigError, match="unknown key"):
        TuneSpace.from_dict({"trials": 2, "lenghts": [4]})
    # the number of trials is not part of the study's name: asking again continues it
    assert TuneSpace(trials=2).digest() == TuneSpace(trials=9).digest()
    assert TuneSpace(trials=2).digest() != TuneSpace(trials=2, lengths=(4,)).digest()


def _train(tiny_encoder_dir, train, ev, home, *more: str) -> tuple[int, dict]:
    return cli(
        "train", "--backbone", tiny_encoder_dir, "--train", train, "--eval", ev,
        "--name", "t", "--home", home, *FAST, "--tune", "4", *SPACE, *more,
    )  # fmt: skip


def test_a_search_registers_only_its_best_trial_and_never_sees_the_eval_split(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    rows = sentiment(48, seed=1)
    train = write_jsonl("train.jsonl", rows)
    ev = write_jsonl("eval.jsonl", sentiment(24, seed=2))
    flipped = [
        {**r, "label": "negative" if r["label"] == "positive" else "positive"}
        for r in sentiment(24, seed=2)
    ]
    poisoned = write_jsonl("poisoned.jsonl", flipped)

    code, doc = _train(tiny_encoder_dir, train, ev, tmp_path / "a")
    assert code == 0, doc
    found = doc["tune"]
    assert len(found["trials"]) == 4 and found["best"] in found["trials"]
    complete = [t for t in found["trials"] if t["state"] == "complete"]
    assert found["best"]["value"] == max(t["value"] for t in complete)
    assert doc["prefix_length"] == found["best"]["params"]["prefix_length"]
    assert found["steps"] == sum(t["steps"] for t in found["trials"])
    with Registry.open(tmp_path / "a", tracker=NullTracker()) as reg:
        (only,) = reg.prefixes(task="t")  # one registered prefix, the winner's
        run = reg.run(only.run_id).config
        assert run["tune"]["best"] == found["best"]
        assert run["train"]["lr"] == pytest.approx(found["best"]["params"]["lr"])

    # the eval split's labels flipped: the search (on the training data only) does not move
    code, other = _train(tiny_encoder_dir, train, poisoned, tmp_path / "b")
    assert code == 0, other
    assert other["tune"]["trials"] == found["trials"]
    assert other["score"] != doc["score"] or doc["score"] == 0.5


def test_short_trials_refit_the_winners_options_for_the_arrivals_steps(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    """`--tune-trial-steps 4` of `--steps 8`: each trial trains 4 steps, then the winner's
    options are trained again for 8, and that prefix is the one registered."""
    train = write_jsonl("train.jsonl", sentiment(48, seed=1))
    ev = write_jsonl("eval.jsonl", sentiment(24, seed=2))
    code, doc = _train(tiny_encoder_dir, train, ev, tmp_path / "a", "--tune-trial-steps", "4")
    assert code == 0, doc
    found = doc["tune"]
    assert all(0 < t["steps"] <= 4 for t in found["trials"]), found["trials"]
    assert found["refit_steps"] == 8 and doc["steps"] == 8
    assert doc["prefix_length"] == found["best"]["params"]["prefix_length"]
    with Registry.open(tmp_path / "a", tracker=NullTracker()) as reg:
        (only,) = reg.prefixes(task="t")
        run = reg.run(only.run_id).config
        assert run["train"]["steps"] == 8 and run["tune"]["refit_steps"] == 8
        assert run["train"]["lr"] == pytest.approx(found["best"]["params"]["lr"])
    # trials as long as the arrival: no refit, the summary says none
    code, same = _train(tiny_encoder_dir, train, ev, tmp_path / "b", "--tune-trial-steps", "8")
    assert code == 0 and "refit_steps" not in same["tune"], same
    assert TuneSpace(trials=2).digest() != TuneSpace(trials=2, trial_steps=4).digest()
    assert TuneSpace.from_dict({"trials": 2, "trial_steps": 4}).trial_steps == 4


def test_a_killed_search_runs_only_its_remaining_trials(tmp_path: Path) -> None:
    """Interrupted in its third trial, a search run again does trials 3 and 4 only."""
    storage = tune.storage_for(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path)
    space = TuneSpace(trials=4, lengths=(2, 4), widths=(16,), starts=("random",), pruner="none")
    ran: list[dict] = []

    def run_trial(params, on_validation, stop_at=None):
        if stop_at is not None and len(ran) == stop_at:
            raise KeyboardInterrupt  # as a kill would
        ran.append(params)
        on_validation(1, params["lr"])
        return (params["lr"], 1)

    def go(stop_at=None):
        return tune.search(
            space,
            lengths=space.lengths,
            study_name="t-study",
            storage=storage,
            run_trial=lambda p, v: run_trial(p, v, stop_at),
            score_of=lambda what: what,
        )

    with pytest.raises(KeyboardInterrupt):
        go(stop_at=2)
    assert len(ran) == 2
    found = go()
    assert len(ran) == 4  # the two it had not finished, not four more
    assert len(found.trials) == 4 and all(t.state == "complete" for t in found.trials)
    assert found.best.value == max(p["lr"] for p in ran)
    assert json.dumps(found.summary())  # plain data


def test_the_pruner_stops_trials_below_the_median_early(tmp_path: Path) -> None:
    """Trials whose validation curve lies below the earlier trials' median at the same step
    stop there: they use fewer steps and are recorded as pruned."""
    storage = tune.storage_for(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path)
    space = TuneSpace(trials=6, lengths=(2, 4, 8), widths=(16,), starts=("random",))
    curves = iter([1.0, 0.9, 0.1, 0.2, 0.05, 0.15])  # each trial's level; the first two lead

    def run_trial(params, on_validation):
        level, steps = next(curves), 0
        for step in range(1, 11):
            steps = step
            if not on_validation(step, level):
                break
        return level, steps

    found = tune.search(
        space, lengths=space.lengths, study_name="p", storage=storage,
        run_trial=run_trial, score_of=lambda what: what,
    )  # fmt: skip
    states = [t.state for t in found.trials]
    assert states[:2] == ["complete", "complete"] and states[2:] == ["pruned"] * 4
    assert all(t.steps == 1 for t in found.trials[2:])  # stopped at their first validation
    assert found.summary()["steps"] == 2 * 10 + 4 and found.best.value == 1.0


def test_the_defaults_are_tried_first_and_nothing_is_pruned_before_the_warmup(
    tmp_path: Path,
) -> None:
    storage = tune.storage_for(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path)
    space = TuneSpace(trials=5, lengths=(2, 4, 8), widths=(16,), starts=("random",))
    mine = {"prefix_length": 4, "lr": 1e-3, "reparam_hidden": 16, "init": "random"}
    levels = iter([0.5, 0.9, 0.1, 0.1, 0.1])
    seen: list[tuple[dict, int]] = []

    def run_trial(params, on_validation):
        level, steps = next(levels), 0
        for step in range(1, 11):
            steps = step
            if not on_validation(step, level):
                break
        seen.append((params, steps))
        return level, steps

    found = tune.search(
        space, lengths=space.lengths, study_name="w", storage=storage, run_trial=run_trial,
        score_of=lambda what: what, warmup=5, first=mine,
    )  # fmt: skip
    assert seen[0][0] == mine  # the arrival's own options, first
    pruned = [t for t in found.trials if t.state == "pruned"]
    assert pruned and all(t.steps >= 5 for t in pruned)  # none before the warm-up


def test_a_stream_entry_names_its_search() -> None:
    from pipelines.stream import arrival_plan

    plan = arrival_plan(
        {"name": "t", "dataset": "trec", "tune": {"trials": 3, "lengths": [4, 8]}}, where="e"
    )
    assert plan.tune == TuneSpace(trials=3, lengths=(4, 8))
    assert type(plan).from_dict(plan.to_dict()).tune == plan.tune  # through the job queue
    with pytest.raises(ConfigError, match=r"^arrivals\[2\] \(t\): tune: trials must be"):
        arrival_plan({"name": "t", "dataset": "trec", "tune": 0}, where="arrivals[2] (t)")


def test_learn_with_a_search_registers_the_winner_in_the_stream(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    home = tmp_path / "home"
    data = write_jsonl("a.jsonl", sentiment(48, seed=3))
    code, out = cli(
        "learn", "--backbone", tiny_encoder_dir, "--train", data, "--name", "a", "--home", home,
        *FAST, "--tune", "2", *SPACE,
    )  # fmt: skip
    assert code == 0, out
    with Registry.open(home, tracking_uri="none") as reg:
        (only,) = reg.prefixes(task="a")
        run = reg.run(only.run_id).config
        found = run["tune"]
        assert len(found["trials"]) == 2
        assert only.config["length"] == found["best"]["params"]["prefix_length"]
        assert run["train"]["lr"] == pytest.approx(found["best"]["params"]["lr"])
        assert [a.task for a in reg.streams.arrivals("prefix")] == ["a"]
        from pipelines.report import write_report

        written = write_report(reg, tmp_path / "report")
    doc = json.loads(Path(written["json"]).read_text())
    (row,) = doc["tasks"]
    assert row["tune"]["best"] == found["best"]["params"] and row["tune"]["trials"] == 2
    assert row["prefix_length"] == found["best"]["params"]["prefix_length"]
    md = Path(written["md"]).read_text()
    assert "## Searched options" in md and f"| a | {row['prefix_length']} |" in md
    assert "Searched options" in Path(written["html"]).read_text()


def test_on_postgresql_a_study_lives_in_its_own_schema_beside_the_registry(
    request, tmp_path: Path
) -> None:
    """Optuna's tables (and its alembic version) go to schema `optuna`; the registry's schema,
    migrated first in the same database, is left as it was and still opens."""
    from sqlalchemy import create_engine, inspect

    url = request.getfixturevalue("pg_url")
    with Registry.open(tmp_path / "ws", url=url, tracker=NullTracker()) as reg:
        before = sorted(inspect(reg.db.engine).get_table_names())
    storage = tune.storage_for(url, tmp_path / "ws")
    space = TuneSpace(trials=2, lengths=(2,), widths=(16,), starts=("random",), pruner="none")
    found = tune.search(
        space, lengths=(2,), study_name="s", storage=storage,
        run_trial=lambda p, v: (p["lr"], 1), score_of=lambda what: what,
    )  # fmt: skip
    assert len(found.trials) == 2
    engine = create_engine(url)
    try:
        names = inspect(engine)
        assert sorted(names.get_table_names()) == before  # the registry's schema, untouched
        assert {"studies", "trials"} <= set(names.get_table_names(schema="optuna"))
    finally:
        engine.dispose()
    with Registry.open(tmp_path / "ws", url=url, tracker=NullTracker()) as reg:
        assert reg.tasks() == []  # opens at head: the migrations are not confused


def test_each_trial_is_a_nested_mlflow_run_under_the_prefix_run(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    import contextlib
    import io

    from mlflow.tracking import MlflowClient

    from pipelines.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train = write_jsonl("train.jsonl", sentiment(48, seed=1))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main([
            "train", "--backbone", str(tiny_encoder_dir), "--train", str(train), "--name", "t",
            "--home", str(tmp_path / "h"), *FAST, "--tune", "3", *SPACE,
            "--json", "--quiet", "--tracking-uri", uri,
        ])  # fmt: skip
    doc = json.loads(out.getvalue())
    assert code == 0, doc
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(doc["mlflow_run_id"])
    assert parent.data.metrics["search_steps"] == doc["tune"]["steps"]
    best = doc["tune"]["best"]["params"]
    assert parent.data.params["tune.best.prefix_length"] == str(best["prefix_length"])
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 3
    by_trial = {int(r.data.tags["continual.trial"]): r for r in children}
    for t in doc["tune"]["trials"]:
        run = by_trial[t["number"]]
        assert run.data.params["prefix_length"] == str(t["params"]["prefix_length"])
        assert run.data.metrics["steps"] == t["steps"] and run.data.tags["state"] == t["state"]
