"""No list the registry hands out is cut short without the caller asking: every task, every
prefix, a task's newest score of each metric however many came after it, and every evaluation
mirrored to MLflow."""

from __future__ import annotations

from typing import Any

import pytest
from registry_testkit import register

from registry import Registry, mirror, orm
from registry.tracking import NullTracker


def _many_tasks(reg: Registry, n: int) -> None:
    for i in range(n):
        register(reg, f"t{i:03d}", seed=i, evaluation=None)


def test_all_tasks_and_prefixes_by_default(reg: Registry) -> None:
    _many_tasks(reg, 105)
    register(reg, "t000", new_version=True, evaluation=None)
    assert len(reg.tasks()) == 105 and len(reg.prefixes()) == 106
    assert reg.count_tasks() == 105 and reg.count_prefixes() == 106
    assert reg.count_prefixes("t000") == 2 and len(reg.prefixes("t000")) == 2
    assert [t.name for t in reg.tasks(limit=2, offset=103)] == ["t103", "t104"]
    assert len(reg.prefixes(offset=100)) == 6


def test_show_keeps_a_metric_scored_before_many_others(reg: Registry) -> None:
    register(reg, "trec", evaluation={"metric": "f1", "value": 0.5, "n": 4})

    def many(uow: Any) -> None:
        t = uow.tasks.get("trec")
        pid = uow.prefixes.current(t.id).id
        uow.session.add_all(
            orm.Evaluation(
                task_id=t.id, prefix_id=pid, method="prefix", metric="accuracy", value=i / 300, n=4
            )
            for i in range(250)
        )

    reg.db.write(many)
    reg.record_evaluation(task="trec", metric="accuracy", value=0.9, n=4)
    latest = {(e.method, e.metric): e.value for e in reg.show("trec").metrics}
    assert latest == {("prefix", "accuracy"): 0.9, ("prefix", "f1"): 0.5}


class Recording(NullTracker):
    """A tracker that keeps what it was asked to log."""

    def __init__(self) -> None:
        super().__init__()
        self.logs: list[Any] = []

    def log_training(self, log: Any) -> str | None:
        self.logs.append(log)
        return "run-1"


def test_every_evaluation_reaches_mlflow(reg: Registry) -> None:
    record = register(reg, "trec")

    def many(uow: Any) -> None:
        t = uow.tasks.get("trec")
        uow.session.add_all(
            orm.Evaluation(
                task_id=t.id,
                prefix_id=record.id,
                method="prefix",
                metric="accuracy",
                value=0.5,
                n=4,
                position=i,
            )  # fmt: skip
            for i in range(10_050)
        )

    reg.db.write(many)
    reg.tracker = Recording()
    assert mirror.log_prefix(reg, record.id) == "run-1"
    (log,) = reg.tracker.logs
    scores = [m for m in log.metrics if m[0] == "accuracy"]
    assert len(scores) == 10_050 + 1  # and the score registered with the prefix


@pytest.mark.parametrize("limit", [0, -1, 10_001, True])
def test_a_bad_limit_is_still_refused(reg: Registry, limit: Any) -> None:
    from tasks.errors import ConfigError

    with pytest.raises(ConfigError, match="--limit must be between 1 and 10000"):
        reg.tasks(limit=limit)
