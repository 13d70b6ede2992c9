"""bench.tune --merge: runs of different tasks add their rows to one results file (a task run
again replaces its row, rows keep the suites' order), another setup is refused, and the file is
complete once every task of both suites is in it."""

from __future__ import annotations

import argparse
import json

import pytest

from bench import tune


def _args(out, trials=8) -> argparse.Namespace:
    return argparse.Namespace(
        trials=trials, trial_steps=100, steps=600, pruner="halving", quick=False, out=out
    )


def _row(task: str, gain: float) -> dict:
    return {"task": task, "gain_points": gain, "pruning_saved": 0.5}


def test_runs_of_other_tasks_add_up_in_one_file(tmp_path) -> None:
    out = tmp_path / "tune.json"
    tune.merged(_args(out), {"catalog": [_row("vader_nyt", 1.0)], "heldout": []})
    tune.merged(_args(out), {"catalog": [_row("trec", -1.0)], "heldout": [_row("fine_food", 2)]})
    doc = tune.merged(_args(out), {"catalog": [_row("vader_nyt", 3.0)], "heldout": []})
    assert doc == json.loads(out.read_text())
    assert [r["task"] for r in doc["suites"]["catalog"]] == ["trec", "vader_nyt"]
    assert doc["suites"]["catalog"][1]["gain_points"] == 3.0  # run again: replaced
    assert doc["summary"]["catalog"]["mean_gain_points"] == 1.0 and not doc["complete"]
    with pytest.raises(SystemExit, match="another setup"):
        tune.merged(_args(out, trials=4), {"catalog": [_row("trec", 0)], "heldout": []})
    every = {
        "catalog": [_row(t, 0) for t, _ in tune.CATALOG],
        "heldout": [_row(t, 0) for t, _ in tune.HELDOUT],
    }
    assert tune.merged(_args(out), every)["complete"]


def test_rows_of_another_setup_join_only_when_asked_and_carry_theirs(tmp_path) -> None:
    out = tmp_path / "tune.json"
    first = tune.merged(_args(out), {"catalog": [_row("trec", 1.0)], "heldout": []})
    first["machine"]["cpu"] = "the first sitting's"
    out.write_text(json.dumps(first))
    small = _args(out, trials=4)
    small.batch_size, small.max_length = 8, 64
    with pytest.raises(SystemExit, match="--own-setup"):
        tune.merged(small, {"catalog": [_row("bbc_headlines", 2.0)], "heldout": []})
    assert "bbc_headlines" not in out.read_text()  # refused: nothing written
    small.own_setup = True
    doc = tune.merged(small, {"catalog": [_row("bbc_headlines", 3.0)], "heldout": []})
    assert doc["setup"] == json.loads(json.dumps(tune.document(_args(out), {}, 0)["setup"]))
    trec, bbc = doc["suites"]["catalog"]
    assert "setup" not in trec and "machine" not in trec
    assert bbc["machine"]["cpu"] != "the first sitting's"  # the run's own machine
    assert doc["machine"]["cpu"] == "the first sitting's"  # the table's line stays the file's
    assert doc["machines"][-1] == bbc["machine"]  # and the run's machine joins the list
    assert bbc["setup"] == {**doc["setup"], "trials": 4, "batch_size": 8, "max_length": 64}
    assert doc["summary"]["catalog"]["mean_gain_points"] == 2.0  # both rows count
    # the same task run again at the file's own setup replaces the marked row
    doc = tune.merged(_args(out), {"catalog": [_row("bbc_headlines", 0.0)], "heldout": []})
    assert all("setup" not in r for r in doc["suites"]["catalog"])


def test_the_summary_marks_a_row_of_its_own_setup() -> None:
    from bench.summary_search import tune as render

    def row(task: str, **extra) -> dict:
        scores = {"default": {"score": 0.5}, "tuned": {"score": 0.52, "steps": 300}}
        chosen = {"prefix_length": 16, "lr": 1e-3, "reparam_hidden": 512}
        return {"task": task, "backbone": "minilm", "gain_points": 2.0, "pruning_saved": 0.25,
                "chosen": chosen, **scores, **extra}  # fmt: skip

    setup = {"trials": 8, "steps_per_trial": 100, "refit_steps": 600, "pruner": "halving"}
    own = {**setup, "trials": 4, "steps_per_trial": 40, "batch_size": 8, "max_length": 64,
           "threads": 2}  # fmt: skip
    doc = {
        "setup": setup,
        "complete": True,
        "suites": {"catalog": [row("trec"), row("bbc_headlines", setup=own)]},
        "summary": {},
        "bench": "tune",
        "machine": {"cores": 2, "threads": 1, "torch": "2.13.0"},
    }
    text = render(doc)
    assert "| 300 |" in text and "| 300 † |" in text
    assert (
        "† At a setup of its own, `bbc_headlines`: 4 trials of 40 steps (halving pruning), "
        "refit 600 steps, batch 8, inputs cut at 64 tokens, 2 torch threads" in text
    )
    assert "8 trials of 100 steps" in text  # the file's own setup heads the table
