"""bench.long_stream's bookkeeping: a group's stream file keeps only its baselines, an order's
groups merge into one summary (the prefixes from the first), and means cover complete orders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bench import long_stream as ls

STREAM = {
    "name": "s",
    "backbone": "minilm",
    "baselines": [{"name": "sequential-ft"}, "ewc", {"name": "multitask", "lr": 1e-4}],
    "arrivals": [{"dataset": "a"}, {"dataset": "b"}],
}


def _report(
    home: Path, methods: dict, agnostic: tuple[float, float, float], evaluated: int | None = None
) -> None:
    path = home / "streams" / "s" / "report" / "report.json"
    path.parent.mkdir(parents=True)
    given, inferred, routing = agnostic
    doc = {
        "methods": {
            m: {
                "acc": v,
                "bwt": 0.0,
                "fwt": 0.0,
                "forgetting_max": 0.0,
                "forgetting_last": 0.0,
                "arrivals": n,
                "tasks": ["a", "b"][:n],
            }
            for m, (v, n) in methods.items()
        },  # fmt: skip
        "task_agnostic": {
            "per_arrival": [
                {
                    "tasks": 2,
                    "task_given": given,
                    "end_to_end": inferred,
                    "routing_accuracy": routing,
                    **({"evaluated": evaluated} if evaluated else {}),
                }
            ]
        },  # fmt: skip
        "tasks": [{"stored_bytes": 10}, {"stored_bytes": 12}],
        "evidence": {"ok": True},
    }
    path.write_text(json.dumps(doc))


def test_a_group_stream_keeps_only_its_baselines(tmp_path) -> None:
    stream = tmp_path / "s.yaml"
    stream.write_text(yaml.safe_dump(STREAM))
    assert ls.group_stream(stream, None, tmp_path, 0) == stream
    got = yaml.safe_load(ls.group_stream(stream, ["ewc", "multitask"], tmp_path, 1).read_text())
    assert got["baselines"] == ["ewc", {"name": "multitask", "lr": 1e-4}]
    assert got["arrivals"] == STREAM["arrivals"] and got["name"] == "s"
    with pytest.raises(SystemExit, match="replay"):
        ls.group_stream(stream, ["replay"], tmp_path, 2)


def test_groups_merge_and_means_cover_complete_orders(tmp_path) -> None:
    g0, g1 = tmp_path / "g0", tmp_path / "g1"
    _report(g0, {"prefix": (0.8, 2), "multitask": (0.7, 2)}, (0.8, 0.75, 0.9))
    _report(g1, {"prefix": (0.1, 2), "ewc": (0.5, 2)}, (0.1, 0.1, 0.1))
    merged = ls.summarise_groups([g0, g1], "s", 2)
    assert merged["complete"]
    assert {m: v["acc"] for m, v in merged["methods"].items()} == {
        "prefix": 0.8, "multitask": 0.7, "ewc": 0.5,
    }  # fmt: skip
    assert merged["task_agnostic"]["acc_inferred"] == 0.75  # the first group's
    assert merged["stored_bytes"]["prefix"] == 22
    half = tmp_path / "half"
    _report(half, {"prefix": (0.2, 1), "ewc": (0.3, 1)}, (0.2, 0.2, 1.0))
    unfinished = ls.summarise_groups([half], "s", 2)
    assert not unfinished["complete"]
    mean = ls.means([{"order": 0, "summary": merged}, {"order": 1, "summary": unfinished}])
    assert mean["orders"] == [0] and mean["methods"]["prefix"]["acc"] == 0.8
    assert mean["task_agnostic"]["acc_inferred"] == 0.75
    audited = tmp_path / "audited"  # the last arrival scored 1 of the 2 tasks (reeval: audit)
    _report(audited, {"prefix": (0.8, 2)}, (0.9, 0.6, 0.9), evaluated=1)
    sampled = ls.summarise_groups([audited], "s", 2)
    assert sampled["task_agnostic"]["evaluated"] == 1
    assert ls.means([{"order": 0, "summary": sampled}])["task_agnostic"]["acc_inferred"] is None
    assert ls.summarise_groups([tmp_path / "none"], "s", 2) is None
