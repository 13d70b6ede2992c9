"""`continual train --resume TASK` continues the stored prefix (and optimizer moments): its first
loss is near where the earlier run ended, not where a fresh run starts, and it registers as
version 2 with a lineage edge (method "resume") to version 1."""

from __future__ import annotations

from typing import Any

import pytest

TASK = "sentiment"
# Validation only at the last step, so the stored training state is the last step's.
OPTS = ("--lr", "1e-2", "--eval-every", "1000", "--tracking-uri", "none")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cli, train_argv, task_files, tiny_encoder_dir) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("resume") / "home"
    first = cli(*train_argv(tiny_encoder_dir, task_files, TASK, home, "--steps", "40", *OPTS))
    assert first.rc == 0, first.err
    resumed = cli(
        *train_argv(tiny_encoder_dir, task_files, TASK, home, "--steps", "10", *OPTS),
        "--resume",
        TASK,
    )
    assert resumed.rc == 0, resumed.err
    lineage = cli("registry", "lineage", TASK, "--json", "--home", home)
    shown = cli("registry", "show", TASK, "--json", "--home", home)
    return {
        "home": home,
        "first": first.out,
        "resumed": resumed.out,
        "lineage": lineage.out,
        "shown": shown.out,
    }


def test_resumed_run_starts_where_the_earlier_one_ended(runs) -> None:
    first, resumed = runs["first"], runs["resumed"]
    fresh_start, earlier_end = first["first_loss"], first["final_loss"]
    # Training made progress, so "where it ended" and "a fresh start" are far apart.
    assert earlier_end < 0.7 * fresh_start
    # Both runs draw the same first batch (same seed): the resumed loss on it is the trained
    # prefix's, much closer to the earlier run's last losses than to the fresh start.
    start = resumed["first_loss"]
    assert abs(start - earlier_end) < abs(start - fresh_start)
    assert start < 0.7 * fresh_start
    assert resumed["final_loss"] < fresh_start


def test_resumed_prefix_is_version_2_with_a_resume_lineage_edge(runs) -> None:
    first, resumed = runs["first"], runs["resumed"]
    assert (first["version"], resumed["version"]) == (1, 2)
    assert resumed["prefix_id"] != first["prefix_id"]
    assert resumed["prefix_sha256"] != first["prefix_sha256"]
    [edge] = runs["lineage"]["lineage"]
    assert edge["method"] == "resume" and edge["depth"] == 1
    assert (edge["version"], edge["source_version"]) == (2, 1)
    assert edge["source_prefix_id"] == first["prefix_id"]
    assert edge["prefix_id"] == resumed["prefix_id"]
    shown = runs["shown"]
    assert shown["current"]["version"] == 2 and shown["versions"] == 2
    assert [e["method"] for e in shown["lineage"]] == ["resume"]


def test_resume_of_an_unknown_task_is_one_clear_line(
    cli, train_argv, task_files, tiny_encoder_dir, tmp_path
) -> None:
    home = tmp_path / "home"
    r = cli(*train_argv(tiny_encoder_dir, task_files, TASK, home, *OPTS), "--resume", TASK)
    assert r.rc == 2 and len(r.err) == 1
    assert r.err[0] == f"error: --resume {TASK}: no such task in the registry"
    assert not (home / "artifacts").exists()
