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
