"""The `continual registry ...` handlers, driven through argparse as the CLI drives them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from registry_testkit import register

from pipelines.cli_registry import add_registry_commands
from registry import Registry


def _run(argv: list[str]) -> dict[str, Any]:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS)
    common.add_argument("--registry-url", default=argparse.SUPPRESS)
    common.add_argument("--tracking-uri", default=argparse.SUPPRESS)
    root = argparse.ArgumentParser(prog="continual", parents=[common])
    add_registry_commands(root.add_subparsers(dest="command", required=True), common)
    args = root.parse_args(argv)
    result = args.func(args)
    json.dumps(result)  # JSON-able
    return result


@pytest.fixture
def cli(reg: Registry, db_url: str | None) -> Any:
    def run(*argv: str) -> dict[str, Any]:
        opts = ["--home", str(reg.workspace), "--tracking-uri", "none"]
        if db_url:
            opts += ["--registry-url", db_url]
        return _run(["registry", *argv, *opts])

    return run


def test_queries(reg: Registry, cli: Any) -> None:
    v1 = register(reg, "trec")
    register(reg, "trec", new_version=True, lineage=[(v1.id, 1.0, "continue")])
    register(reg, "sst2")
    assert [t["name"] for t in cli("tasks", "--limit", "1", "--offset", "1")["tasks"]] == ["sst2"]
    listed = cli("prefixes", "--task", "trec")["prefixes"]
    assert [p["version"] for p in listed] == [2, 1]
    shown = cli("show", "trec")
    assert shown["current"]["version"] == 2 and shown["versions"] == 2
    assert cli("history", "trec")["evaluations"][0]["metric"] == "accuracy"
    assert cli("lineage", "trec")["lineage"][0]["source_version"] == 1


def test_export_import_check_sync_upgrade(reg: Registry, cli: Any, tmp_path: Path) -> None:
    record = register(reg, "trec")
    out = tmp_path / "exported"
    assert cli("export", "trec", "--format", "peft", "--out", str(out))["format"] == "peft"
    imported = cli("import", str(out), "--new-version")["imported"]
    assert imported["version"] == 2
    assert cli("check")["ok"] is True and "_exit_code" not in cli("check")
    (reg.workspace / record.artifact_path).unlink()
    failing = cli("check")
    assert failing["ok"] is False and failing["_exit_code"] == 1
    # The round trip gives back the very bytes (headers are canonical), so v2 shares v1's
    # content-addressed file, and both are broken by its loss.
    assert imported["sha256"] == record.sha256
    assert cli("check", "--repair")["marked_broken"] == [record.id, imported["id"]]
    assert cli("sync-mlflow") == {"tracking": "none", "synced": [], "failed": []}
    assert cli("upgrade")["after"] == cli("upgrade")["head"]


def test_errors_are_continual_errors(cli: Any) -> None:
    from tasks.errors import ContinualError

    with pytest.raises(ContinualError, match="not in the registry"):
        cli("show", "missing")
