"""Registering, versioning, the current flag, lineage, queries and pagination."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from registry_testkit import FINGERPRINT, register, spec
from sqlalchemy import inspect

from registry import Registry
from tasks.errors import ConfigError


def test_register_then_show_history_and_load(reg: Registry) -> None:
    record = register(reg, "trec", optimizer=True)
    assert (record.version, record.is_current, record.status) == (1, True, "ok")
    assert record.backbone_fingerprint == FINGERPRINT
    assert record.n_stored == 4 * 32 + 2 * 16 + 2
    assert record.train.steps == 3 and record.train.n_trainable == record.n_stored
    view = reg.show("trec")
    assert view.current == record and view.versions == 1
    assert [(m.metric, m.value, m.prefix_version) for m in view.metrics] == [("accuracy", 0.75, 1)]
    assert reg.history("trec")[0].predictions_sha256 == "e" * 64
    tensors, loaded = reg.load_prefix("trec", FINGERPRINT)
    assert loaded == record and set(tensors) == {"prefix", "head.weight", "head.bias"}
    assert torch.equal(tensors["prefix"], register.__globals__["tensors"](0)["prefix"])
    assert torch.equal(reg.load_optimizer_state("trec")["exp_avg"], torch.ones(3))
    run = reg.run(record.run_id)
    assert run.seed == 0 and run.packages["torch"] == torch.__version__


def test_existing_task_needs_new_version(reg: Registry) -> None:
    register(reg, "trec")
    with pytest.raises(
        ConfigError,
        match="task trec already exists in the registry; pass --new-version to train version 2",
    ):
        register(reg, "trec")
    with pytest.raises(ConfigError, match="is a classification task"):
        register(reg, "trec", kind="generation", new_version=True)


def test_new_versions_move_the_current_flag_and_keep_old_ones(reg: Registry) -> None:
    v1 = register(reg, "trec", seed=1)
    v2 = register(reg, "trec", seed=2, new_version=True, lineage=[(v1.id, 1.0, "continue")])
    v3 = register(reg, "trec", seed=3, new_version=True, task=spec("trec", description="updated"))
    assert [v.version for v in (v1, v2, v3)] == [1, 2, 3]
    listed = reg.prefixes(task="trec")
    assert [p.version for p in listed] == [3, 2, 1]  # newest first
    assert [p.is_current for p in listed] == [True, False, False]
    assert reg.prefix("trec").id == v3.id and reg.prefix("trec", version=1).id == v1.id
    old, _ = reg.load_prefix("trec", FINGERPRINT, version=1)
    assert torch.equal(old["prefix"], register.__globals__["tensors"](1)["prefix"])
    assert reg.tasks()[0].description == "updated"
    assert reg.show("trec").versions == 3
    assert [e.method for e in reg.prefix(v2.id).lineage] == ["continue"]


def test_lineage_walks_the_ancestry(reg: Registry) -> None:
    a = register(reg, "a")
    b = register(reg, "b")
    c = register(reg, "c", lineage=[(a.id, 0.7, "weighted"), (b.id, 0.3, "weighted")])
    register(reg, "d", lineage=[(c.id, 1.0, "nearest")])
    edges = reg.lineage("d")
    assert [(e.task, e.source_task, e.depth) for e in edges] == [
        ("d", "c", 1),
        ("c", "a", 2),
        ("c", "b", 2),
    ]
    assert reg.show("c").lineage[0].weight == pytest.approx(0.7)
    with pytest.raises(ConfigError, match=r"source prefix ids \[999\]"):
        register(reg, "e", lineage=[(999, 1.0, "nearest")])
    with pytest.raises(ConfigError, match="twice"):
        register(reg, "e", lineage=[(a.id, 0.5, "x"), (a.id, 0.5, "x")])


def test_evaluations_over_time_and_baselines(reg: Registry) -> None:
    register(reg, "trec")
    register(reg, "sst2")
    for position in (1, 2):
        reg.record_evaluation(
            task="trec", metric="accuracy", value=(7 - position) / 10, n=8, position=position
        )
    reg.record_evaluation(
        task="trec", metric="accuracy", value=0.9, n=8, position=2, method="replay"
    )
    history = reg.history("trec")
    assert [(e.position, e.method, e.value) for e in history] == [
        (None, "prefix", 0.75),
        (1, "prefix", 0.6),
        (2, "prefix", 0.5),
        (2, "replay", 0.9),
    ]
    assert history[-1].prefix_id is None
    latest = {(m.method, m.metric): m.value for m in reg.show("trec").metrics}
    assert latest == {("prefix", "accuracy"): 0.5}
    with pytest.raises(ConfigError, match="not a prefix of task trec"):
        reg.record_evaluation(
            task="trec", metric="accuracy", value=1.0, n=1, prefix_id=reg.prefix("sst2").id
        )


def test_pagination(reg: Registry) -> None:
    for i in range(7):
        register(reg, f"t{i}")
    register(reg, "t0", new_version=True)
    assert [t.name for t in reg.tasks(limit=3)] == ["t0", "t1", "t2"]
    assert [t.name for t in reg.tasks(limit=3, offset=6)] == ["t6"]
    assert reg.tasks(limit=3, offset=7) == []
    newest = reg.prefixes(limit=2)
    assert [(p.task, p.version) for p in newest] == [("t0", 2), ("t6", 1)]
    assert [p.task for p in reg.prefixes(limit=2, offset=7)] == ["t0"]
    with pytest.raises(ConfigError, match="--limit"):
        reg.tasks(limit=0)
    with pytest.raises(ConfigError, match="--offset"):
        reg.prefixes(offset=-1)


def test_unknown_and_invalid_names_are_clear_errors(reg: Registry) -> None:
    with pytest.raises(ConfigError, match="task 'nope' is not in the registry"):
        reg.show("nope")
    with pytest.raises(ConfigError, match="invalid task name"):
        reg.history("x'; DROP TABLE tasks;--")
    with pytest.raises(ConfigError, match="prefix id 42 is not in the registry"):
        reg.prefix(42)


def test_bad_inputs_are_refused_before_anything_is_written(reg: Registry) -> None:
    bad_shape = {"prefix": torch.zeros(4, 31)}
    with pytest.raises(ConfigError, match=r"prefix tensor has shape \[4, 31\]"):
        register(reg, "trec", tensors=bad_shape)
    with pytest.raises(ConfigError, match="tensors lack the 'prefix' tensor"):
        register(reg, "trec", tensors={"head.weight": torch.zeros(2)})
    with pytest.raises(ConfigError, match="prefix_config lacks head_dim"):
        register(reg, "trec", prefix_config={"length": 4, "layers": 2, "kv_heads": 2})
    with pytest.raises(ConfigError, match="run backbone_fingerprint"):
        register(
            reg,
            "trec",
            run={"seed": 0, "config": {}, "packages": {}, "backbone_fingerprint": "other"},
        )
    with pytest.raises(ConfigError, match="JSON-able"):
        register(
            reg,
            "trec",
            prefix_config={"length": 4, "layers": 2, "kv_heads": 2, "head_dim": 4, "x": object()},
        )
    assert reg.tasks() == [] and not (reg.workspace / "artifacts").exists()


def test_metadata_reaches_sql_only_as_bound_parameters(reg: Registry) -> None:
    evil = "x'; DROP TABLE tasks;--"
    register(
        reg,
        "safe",
        task=spec("safe", description=evil),
        backbone={
            "name": evil,
            "source": evil,
            "fingerprint": FINGERPRINT,
            "n_params": 1,
            "config": {evil: evil},
        },
        prefix_config={"length": 4, "layers": 2, "kv_heads": 2, "head_dim": 4, "note": evil},
        run={
            "seed": 0,
            "config": {"why": evil},
            "packages": {},
            "backbone_fingerprint": FINGERPRINT,
        },
    )
    reg.record_evaluation(task="safe", metric=evil, value=1.0, n=1, method=evil)
    assert "tasks" in inspect(reg.db.engine).get_table_names()
    view = reg.show("safe")
    assert view.task.description == evil and view.current.backbone_name == evil
    assert view.current.config["note"] == evil
    assert [(e.method, e.metric) for e in reg.history("safe")][-1] == (evil, evil)


def test_embeddings_and_arrivals(reg: Registry) -> None:
    register(reg, "a")
    register(reg, "b")
    reg.put_embedding("a", "mean", [1.0, 2.0, 3.0])
    reg.put_embedding("a", "mean", torch.tensor([4.0, 5.0, 6.0]))
    reg.put_embedding("b", "mean", [0.5, 0.25, 0.0])
    newest = {e.task: e.vector for e in reg.embeddings("mean")}
    assert {k: v.tolist() for k, v in newest.items()} == {"a": [4, 5, 6], "b": [0.5, 0.25, 0]}
    # packed float32 read back as float32 arrays over the stored bytes: no Python float per value
    assert all(v.dtype == np.float32 and not v.flags.writeable for v in newest.values())
    arrival = reg.streams.start_arrival(position=0, task="a", method="prefix")
    assert arrival.status == "running" and arrival.finished_at is None
    done = reg.streams.finish_arrival(arrival.id, "done")
    assert done.status == "done" and done.finished_at is not None
    assert [a.task for a in reg.streams.arrivals("prefix")] == ["a"]


def test_has_task_says_whether_a_name_is_registered(reg: Registry) -> None:
    assert not reg.has_task("trec")
    register(reg, "trec", evaluation=None)
    assert reg.has_task("trec")
    assert not reg.has_task("tre") and not reg.has_task("not a valid name!")
