"""`continual train` on two tasks into one workspace, then the registry as the CLI and MLflow see
it: tasks listed, each task's metrics, artifact, sha256 and MLflow run; MLflow holding those runs
with their metrics and per-step loss and each prefix as a registered model version aliased
`current`; a second `train` of a task refused without `--new-version` (one line, nothing
written); with `--new-version` version 2 becomes current and the alias follows.

One module fixture drives the whole story once, in order; the tests only read what it recorded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TASKS = ("sentiment", "opinion")
STEPS = 20
TRAIN_OPTS = ("--steps", str(STEPS), "--eval-every", "10", "--lr", "1e-2", "--batch-size", "8")
# SQLite's write-ahead log and shared-memory index change when a connection merely opens the
# database; the database files themselves must not.
_SQLITE_SIDE = ("-wal", "-shm", "-journal")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(home: Path) -> dict[str, str]:
    """Every file of the workspace (but SQLite's side files) with its sha256."""
    return {
        str(p.relative_to(home)): sha256(p)
        for p in sorted(home.rglob("*"))
        if p.is_file() and not p.name.endswith(_SQLITE_SIDE)
    }


@dataclass
class Story:
    home: Path
    trained: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: Any = None
    shown: dict[str, Any] = field(default_factory=dict)
    refused: Any = None
    before_refusal: dict[str, str] = field(default_factory=dict)
    after_refusal: dict[str, str] = field(default_factory=dict)
    runs_before_refusal: int = 0
    runs_after_refusal: int = 0
    v2: dict[str, Any] = field(default_factory=dict)
    shown_v2: Any = None
    prefixes_v2: Any = None


def mlflow_client(home: Path) -> Any:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def n_runs(home: Path) -> int:
    client = mlflow_client(home)
    exp = client.get_experiment_by_name("continual")
    return 0 if exp is None else len(client.search_runs([exp.experiment_id], max_results=1000))


@pytest.fixture(scope="module")
def story(tmp_path_factory, cli, train_argv, task_files, tiny_encoder_dir) -> Story:
    s = Story(home=tmp_path_factory.mktemp("registry-cli") / "home")
    for task in TASKS:
        r = cli(*train_argv(tiny_encoder_dir, task_files, task, s.home, *TRAIN_OPTS))
        assert r.rc == 0, r.err
        s.trained[task] = r.out
    s.tasks = cli("registry", "tasks", "--json", "--home", s.home).out
    s.shown = {t: cli("registry", "show", t, "--json", "--home", s.home).out for t in TASKS}

    s.before_refusal, s.runs_before_refusal = snapshot(s.home), n_runs(s.home)
    s.refused = cli(*train_argv(tiny_encoder_dir, task_files, "sentiment", s.home, *TRAIN_OPTS))
    s.after_refusal, s.runs_after_refusal = snapshot(s.home), n_runs(s.home)

    argv = train_argv(tiny_encoder_dir, task_files, "sentiment", s.home, *TRAIN_OPTS, "--seed", "1")
    r = cli(*argv, "--new-version")
    assert r.rc == 0, r.err
    s.v2 = r.out
    s.shown_v2 = cli("registry", "show", "sentiment", "--json", "--home", s.home).out
    s.prefixes_v2 = cli(
        "registry", "prefixes", "--task", "sentiment", "--json", "--home", s.home
    ).out
    return s


def test_train_summaries_name_the_registered_prefix(story: Story) -> None:
    for task in TASKS:
        out = story.trained[task]
        assert out["task"] == task and out["version"] == 1 and out["steps"] == STEPS
        assert out["mlflow_run_id"], "registration should have mirrored the run to MLflow"
        assert Path(out["prefix_path"]).is_file()
        assert sha256(Path(out["prefix_path"])) == out["prefix_sha256"]


def test_registry_tasks_lists_both_in_order_of_arrival(story: Story) -> None:
    assert [t["name"] for t in story.tasks["tasks"]] == list(TASKS)
    assert all(t["kind"] == "classification" for t in story.tasks["tasks"])


@pytest.mark.parametrize("task", TASKS)
def test_registry_show_gives_metrics_artifact_sha256_and_run(story: Story, task: str) -> None:
    shown, trained = story.shown[task], story.trained[task]
    current = shown["current"]
    assert shown["task"]["name"] == task and shown["versions"] == 1
    assert current["version"] == 1 and current["is_current"] and current["status"] == "ok"
    artifact = story.home / current["artifact_path"]
    assert artifact == Path(trained["prefix_path"])
    assert current["sha256"] == trained["prefix_sha256"] == sha256(artifact)
    assert shown["mlflow_run_id"] == current["mlflow_run_id"] == trained["mlflow_run_id"]
    metrics = {m["metric"]: m for m in shown["metrics"]}
    assert metrics["accuracy"]["value"] == pytest.approx(trained["score"])
    assert metrics["accuracy"]["n"] == trained["n_eval"]
    assert current["train"]["steps"] == STEPS
    assert current["train"]["final_loss"] == pytest.approx(trained["final_loss"])


@pytest.mark.parametrize("task", TASKS)
def test_mlflow_holds_the_run_with_metrics_loss_per_step_and_artifact(
    story: Story, task: str, tmp_path: Path
) -> None:
    client, trained = mlflow_client(story.home), story.trained[task]
    run = client.get_run(trained["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["continual.task"] == task
    assert run.data.tags["continual.sha256"] == trained["prefix_sha256"]
    assert run.data.tags["continual.backbone_fingerprint"] == trained["backbone_fingerprint"]
    assert run.data.params["task"] == task and run.data.params["version"] == "1"
    assert run.data.params["seed"] == "0" and run.data.params["steps"] == str(STEPS)
    assert run.data.metrics["accuracy"] == pytest.approx(trained["score"])
    assert run.data.metrics["final_loss"] == pytest.approx(trained["final_loss"])
    loss = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in loss] == list(range(STEPS))
    assert loss[0].value == pytest.approx(trained["first_loss"])
    assert sum(m.value for m in loss[-10:]) / 10 == pytest.approx(trained["final_loss"])
    local = Path(client.download_artifacts(run.info.run_id, "prefix", str(tmp_path)))
    assert sha256(local / "prefix.safetensors") == trained["prefix_sha256"]


def test_each_prefix_is_a_registered_model_version_aliased_current(story: Story) -> None:
    client = mlflow_client(story.home)
    # "opinion" was never retrained: its alias still points at version 1.
    mv = client.get_model_version_by_alias("opinion", "current")
    assert str(mv.version) == "1" and mv.run_id == story.trained["opinion"]["mlflow_run_id"]
    assert mv.tags["prefix_id"] == str(story.trained["opinion"]["prefix_id"])
    v1 = client.get_model_version("sentiment", "1")
    assert v1.run_id == story.trained["sentiment"]["mlflow_run_id"]
    assert v1.tags["prefix_version"] == "1"


def test_training_twice_without_new_version_fails_with_one_line(story: Story) -> None:
    r = story.refused
    assert r.rc == 2
    assert len(r.err) == 1, r.err
    line = r.err[0]
    assert line.startswith("error: task sentiment already exists") and "--new-version" in line
    assert "Traceback" not in line
    assert r.out == {"error": line.removeprefix("error: "), "type": "ConfigError"}


def test_refused_training_writes_nothing(story: Story) -> None:
    assert story.after_refusal == story.before_refusal
    assert story.runs_after_refusal == story.runs_before_refusal == len(TASKS)


def test_new_version_becomes_current_and_the_alias_moves(story: Story) -> None:
    v2 = story.v2
    assert v2["version"] == 2 and v2["mlflow_run_id"] != story.trained["sentiment"]["mlflow_run_id"]
    shown = story.shown_v2
    assert shown["versions"] == 2 and shown["current"]["version"] == 2
    assert (
        shown["current"]["id"] == v2["prefix_id"] and shown["mlflow_run_id"] == v2["mlflow_run_id"]
    )
    listed = [(p["version"], p["is_current"]) for p in story.prefixes_v2["prefixes"]]
    assert listed == [(2, True), (1, False)]

    client = mlflow_client(story.home)
    mv = client.get_model_version_by_alias("sentiment", "current")
    assert str(mv.version) == "2" and mv.run_id == v2["mlflow_run_id"]
    assert mv.tags["prefix_id"] == str(v2["prefix_id"])
    assert "current" not in client.get_model_version("sentiment", "1").aliases
    assert n_runs(story.home) == len(TASKS) + 1
