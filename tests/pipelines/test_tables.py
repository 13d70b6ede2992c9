"""Output for people: `registry tasks|prefixes|show|history|lineage` and `predict --task` print
aligned tables (one shared renderer), a capped list says how many more there are, and `--json`
stays exactly one JSON object with the same content."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines import tables
from pipelines.cli import main
from registry import NullTracker, Registry
from tests.pipelines.test_prefix_folders import made  # noqa: F401 - a fixture

TASKS = ("sentiment", "topics", "spam", "questions", "moods")
VIEW_KEYS = {"task", "current", "versions", "metrics", "lineage", "mlflow_run_id"}


def _testkit() -> Any:
    if "registry_testkit" not in sys.modules:
        path = Path(__file__).parents[1] / "registry" / "registry_testkit.py"
        spec = importlib.util.spec_from_file_location("registry_testkit", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["registry_testkit"] = module
        spec.loader.exec_module(module)
    return sys.modules["registry_testkit"]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """Five tasks; "moods" has two versions, v2 initialised from "spam", and a later score."""
    kit = _testkit()
    home = tmp_path_factory.mktemp("tables") / "home"
    with Registry.open(home, tracker=NullTracker()) as reg:
        ids = {t: kit.register(reg, t, seed=i).id for i, t in enumerate(TASKS)}
        kit.register(
            reg, "moods", seed=9, new_version=True, lineage=[(ids["spam"], 1.0, "nearest")]
        )
        reg.record_evaluation(task="moods", metric="accuracy", value=0.8125, n=16, position=4)
    return home


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--quiet"])
    return code, out.getvalue()


def lines_of(home: Path, *argv: str) -> list[str]:
    code, out = cli("registry", *argv, "--home", str(home))
    assert code == 0, out
    return out.rstrip("\n").splitlines()


def doc_of(home: Path, *argv: str) -> dict[str, Any]:
    code, out = cli("registry", *argv, "--home", str(home), "--json")
    assert code == 0 and out.count("\n") == 1, out  # exactly one JSON object on stdout
    return json.loads(out)


def test_the_renderer_aligns_and_cuts() -> None:
    text = tables.table(("name", "n", "score"), [("a", 5, 0.5), ("longer name", 120, None)])
    assert text.splitlines() == [
        "name           n   score",
        "a              5  0.5000",
        "longer name  120       -",
    ]
    cut = tables.cell("x" * 100)
    assert len(cut) == tables.MAX_CELL and cut.endswith("…")
    assert tables.cell("2026-01-02T03:04:05.678+00:00") == "2026-01-02 03:04"
    assert tables.key_values([("task", "trec"), ("versions", 2)]) == "task      trec\nversions  2"


def test_more_says_how_many_are_left() -> None:
    assert tables.more(5, 0, 5, "tasks") is None
    assert tables.more(2, 0, 5, "tasks") == (
        "tasks 1-2 of 5 shown; 3 more, use --limit/--offset (e.g. --offset 2)"
    )
    assert tables.more(1, 4, 5, "tasks") == "tasks 5-5 of 5 shown"


def test_tasks_is_a_short_table(home) -> None:
    lines = lines_of(home, "tasks")
    assert lines[0].split() == ["id", "task", "kind", "labels", "description", "created"]
    assert len(lines) == 1 + len(TASKS)  # 170 lines of JSON before
    assert lines[1].split()[:4] == ["1", "sentiment", "classification", "yes,"]
    assert "no" in lines[1].split()


def test_a_capped_list_says_how_many_more(home) -> None:
    lines = lines_of(home, "tasks", "--limit", "2")
    assert len(lines) == 4 and lines[-1].startswith("tasks 1-2 of 5 shown; 3 more")
    assert "--limit/--offset" in lines[-1]
    lines = lines_of(home, "prefixes", "--limit", "4", "--offset", "2")
    assert lines[-1] == "prefixes 3-6 of 6 shown"
    doc = doc_of(home, "tasks", "--limit", "2")
    assert doc["total"] == 5 and len(doc["tasks"]) == 2


def test_prefixes_show_history_and_lineage_are_tables(home) -> None:
    lines = lines_of(home, "prefixes")
    assert lines[0].split()[:5] == ["id", "task", "version", "current", "status"]
    assert len(lines) == 7 and lines[1].split()[:5] == ["6", "moods", "2", "*", "ok"]
    shown = lines_of(home, "show", "moods")
    assert shown[0].split() == ["task", "moods"] and "v2 (prefix id 6, ok)" in " ".join(shown)
    assert "latest scores" in shown and "initialised from" in shown
    assert len(shown) < 25
    history = lines_of(home, "history", "moods")
    assert history[0].split() == [
        "id", "version", "position", "method", "metric", "value", "n", "when",
    ]  # fmt: skip
    assert history[-1].split()[:7] == ["7", "2", "4", "prefix", "accuracy", "0.8125", "16"]
    lineage = lines_of(home, "lineage", "moods")
    assert lineage[0].split() == ["depth", "prefix", "source", "weight", "method"]
    assert lineage[1].split() == ["1", "moods", "v2", "spam", "v1", "1.0000", "nearest"]


def test_json_is_unchanged(home) -> None:
    tasks = doc_of(home, "tasks")
    assert set(tasks) == {"tasks", "limit", "offset", "total"}
    assert [t["name"] for t in tasks["tasks"]] == list(TASKS) and tasks["limit"] == 100
    with Registry.open(home, tracker=NullTracker()) as reg:
        assert tasks["tasks"] == [t.to_dict() for t in reg.tasks()]
        prefixes = doc_of(home, "prefixes")
        assert set(prefixes) == {"prefixes", "limit", "offset", "total"}
        assert prefixes["prefixes"] == [p.to_dict() for p in reg.prefixes()]
        assert doc_of(home, "show", "moods") == reg.show("moods").to_dict()
        assert set(reg.show("moods").to_dict()) == VIEW_KEYS
        history = doc_of(home, "history", "moods")
        assert history == {
            "task": "moods",
            "evaluations": [e.to_dict() for e in reg.history("moods")],
        }
        lineage = doc_of(home, "lineage", "moods")
        assert lineage == {"task": "moods", "lineage": [e.to_dict() for e in reg.lineage("moods")]}


def test_predict_by_task_is_a_table(made) -> None:  # noqa: F811 - the fixture
    texts = ["the movie was good", "a bad film"]
    code, out = cli("predict", "--task", "sentiment", "--home", str(made["home"]), *texts)
    assert code == 0, out
    lines = out.rstrip("\n").splitlines()
    assert lines[0].split() == ["answer", "text"] and len(lines) == 3
    assert [line.split(maxsplit=1)[1] for line in lines[1:]] == texts
    code, out = cli("predict", "--task", "sentiment", "--home", str(made["home"]), *texts, "--json")
    doc = json.loads(out)
    assert set(doc) == {"task", "predictions"} and out.count("\n") == 1
    assert [p["text"] for p in doc["predictions"]] == texts
    assert [line.split()[0] for line in lines[1:]] == [p["prediction"] for p in doc["predictions"]]
