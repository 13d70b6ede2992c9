"""Errors a user causes through the environment are one `error:` line, and a broken import of a
command module is loud (never a command silently missing from the CLI)."""

from __future__ import annotations

import sys

import pytest

from pipelines.cli import build_parser, main


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("CONTINUAL_HOME", "CONTINUAL_REGISTRY_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("value", ["x", "0", "-2", "1.5"])
def test_bad_continual_threads_is_one_error_line(value, tmp_path, monkeypatch, capfd) -> None:
    monkeypatch.setenv("CONTINUAL_THREADS", value)
    home = tmp_path / "home"
    code = main(["report", "--home", str(home)])
    out, err = capfd.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: CONTINUAL_THREADS")
    assert "whole number" in lines[0] and "unset" in lines[0]
    assert not home.exists()  # refused before anything is written


def test_bad_continual_threads_with_json_is_one_object(tmp_path, monkeypatch, capfd) -> None:
    import json

    monkeypatch.setenv("CONTINUAL_THREADS", "many")
    assert main(["report", "--home", str(tmp_path / "h"), "--json"]) == 2
    doc = json.loads(capfd.readouterr().out)
    assert doc["type"] == "ConfigError" and "CONTINUAL_THREADS" in doc["error"]


def test_a_broken_stream_module_fails_loudly(monkeypatch) -> None:
    # None in sys.modules makes `import pipelines.cli_stream` raise ImportError.
    monkeypatch.setitem(sys.modules, "pipelines.cli_stream", None)
    with pytest.raises(ImportError):
        build_parser()


def test_the_stream_commands_are_there() -> None:
    parser = build_parser()
    for argv in (["learn", "--help"], ["stream", "--help"], ["report", "--help"]):
        with pytest.raises(SystemExit) as done:
            parser.parse_args(argv)
        assert done.value.code == 0
