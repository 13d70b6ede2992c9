"""What the reliability drills (tests/chaos) found, pinned at unit level: deterministic file
bytes, no file left by a failed write, case-twin names refused, a lost connection retried."""

from __future__ import annotations

import itertools

import pytest
import torch
from registry_testkit import register
from sqlalchemy import exc as sa_exc

from registry import Registry
from registry import uow as uow_module
from registry.artifacts import tensors_to_bytes, undone_on_error
from tasks.errors import ConfigError


def test_the_same_tensors_and_metadata_give_the_same_bytes_in_any_order() -> None:
    from safetensors.torch import load

    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, 2)}
    meta = {"z": "1", "a": "2", "m": "3", "q": "x"}
    outs = {
        tensors_to_bytes(dict(t), dict(m))
        for t in itertools.permutations(tensors.items())
        for m in itertools.permutations(meta.items())
    }
    assert len(outs) == 1
    (data,) = outs
    assert (8 + int.from_bytes(data[:8], "little")) % 8 == 0  # the data stays 8-byte aligned
    back = load(data)
    assert torch.equal(back["a"], tensors["a"]) and torch.equal(back["b"], tensors["b"])


def test_a_failed_block_removes_the_files_it_created_and_nothing_else(reg: Registry) -> None:
    kept = register(reg, "kept")  # its file is referenced by a committed row
    pre = reg.artifacts.put(b"there before", suffix=".bin")
    before = set(reg.artifacts.files())
    with pytest.raises(RuntimeError), undone_on_error(reg.artifacts, reg.db) as written:
        written.append(reg.artifacts.put(b"new bytes", suffix=".bin"))
        written.append(reg.artifacts.put(b"there before", suffix=".bin"))
        raise RuntimeError("the disk filled up")
    assert set(reg.artifacts.files()) == before  # the new file went; the older one stayed
    assert pre.path in before
    # A file the block wrote again after it went missing stays if a committed row uses it.
    data = (reg.workspace / kept.artifact_path).read_bytes()
    (reg.workspace / kept.artifact_path).unlink()
    with pytest.raises(RuntimeError), undone_on_error(reg.artifacts, reg.db) as written:
        restored = reg.artifacts.put(data)
        assert restored.created and restored.path == kept.artifact_path
        written.append(restored)
        raise RuntimeError
    assert (reg.workspace / kept.artifact_path).is_file()


def test_a_name_differing_only_in_case_is_refused(reg: Registry) -> None:
    register(reg, "trec")
    with pytest.raises(ConfigError, match="differs from the registered task trec only in case"):
        register(reg, "TREC")
    with pytest.raises(ConfigError, match="only in case"):
        reg.has_task("Trec")
    assert reg.has_task("trec") and not reg.has_task("imdb")
    assert [t.name for t in reg.tasks()] == ["trec"]


def test_a_lost_connection_is_retried_and_a_bad_statement_is_not(
    reg: Registry, monkeypatch
) -> None:
    monkeypatch.setattr(uow_module.time, "sleep", lambda s: None)
    calls = []

    def flaky(uow) -> int:
        calls.append(1)
        if len(calls) < 3:
            raise sa_exc.OperationalError(
                "SELECT 1", {}, Exception("connection failed: the database system is shutting down")
            )
        return 42

    assert reg.db.read(flaky) == 42 and len(calls) == 3

    def broken(uow) -> int:
        calls.append(1)
        raise sa_exc.OperationalError("SELEC 1", {}, Exception("syntax error at or near SELEC"))

    calls.clear()
    with pytest.raises(sa_exc.OperationalError):
        reg.db.read(broken)
    assert len(calls) == 1


@pytest.mark.parametrize("landed", [True, False], ids=["committed", "aborted"])
def test_a_commit_whose_answer_was_lost_is_asked_about_not_repeated(
    reg: Registry, monkeypatch, landed: bool
) -> None:
    """The connection drops during COMMIT: after the server committed (the answer lost) or
    before. The server is asked what became of the transaction: an evaluation outside a stream
    (no unique key would stop a second row) is written exactly once either way."""
    if reg.db.engine.dialect.name != "postgresql":
        pytest.skip("a local SQLite file has no connection to lose")
    register(reg, "trec")
    before = len(reg.history("trec"))
    monkeypatch.setattr(uow_module.time, "sleep", lambda s: None)
    real, lost = uow_module.UnitOfWork.commit, []

    def commit(self) -> None:
        if not lost:
            lost.append(1)
            if landed:
                real(self)
            raise sa_exc.OperationalError(
                "COMMIT", {}, Exception("server closed the connection unexpectedly")
            )
        real(self)

    monkeypatch.setattr(uow_module.UnitOfWork, "commit", commit)
    record = reg.record_evaluation(task="trec", metric="accuracy", value=0.25, n=8)
    assert lost and record.value == 0.25
    rows = reg.history("trec")
    assert len(rows) == before + 1 and sum(e.value == 0.25 for e in rows) == 1
