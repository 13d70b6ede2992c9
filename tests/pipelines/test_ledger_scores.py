"""`ledger.scores` keeps a stream's scores while they are unchanged, and reads them again when
any changes: a new score, a score's MLflow run id set, or the registry made again in place."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipelines import ledger
from registry import NullTracker, Registry
from tests.pipelines.test_router_cache import _testkit

SCORE = {"metric": "accuracy", "value": 0.5, "n": 10, "predictions_sha256": "a" * 64}


def test_scores_are_read_again_whenever_the_stream_changes(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    with Registry.open(home, tracker=NullTracker()) as reg:
        _testkit().register(reg, "alpha", seed=0)
        _testkit().register(reg, "beta", seed=1)
        ledger.record(reg, "alpha", "prefix", 0, SCORE, "s")
        first = ledger.scores(reg, "s")
        assert [e.value for e in first["alpha"]] == [0.5]
        first["alpha"].clear()  # a caller's copy: the kept scores are not touched
        assert [e.value for e in ledger.scores(reg, "s")["alpha"]] == [0.5]
        ledger.record(reg, "beta", "prefix", 1, {**SCORE, "value": 0.75}, "s")
        assert [e.value for e in ledger.scores(reg, "s")["beta"]] == [0.75]
        (row,) = ledger.scores(reg, "s")["alpha"]
        reg.db.write(lambda uow: uow.evaluations.set_mlflow_run(row.id, "run-1"))
        assert ledger.scores(reg, "s")["alpha"][0].mlflow_run_id == "run-1"
    shutil.rmtree(home)  # made again at the same place: same ids, same count
    with Registry.open(home, tracker=NullTracker()) as reg:
        _testkit().register(reg, "alpha", seed=0)
        _testkit().register(reg, "beta", seed=1)
        ledger.record(reg, "alpha", "prefix", 0, {**SCORE, "value": 0.25}, "s")
        ledger.record(reg, "beta", "prefix", 1, {**SCORE, "value": 0.75}, "s")
        alpha_id = reg.streams.evaluations("s")[0].id
        reg.db.write(lambda uow: uow.evaluations.set_mlflow_run(alpha_id, "run-1"))
        assert [e.value for e in ledger.scores(reg, "s")["alpha"]] == [0.25]
