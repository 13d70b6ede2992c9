"""Loaded prefixes kept between arrivals (`pipelines.prefix_cache`): a kept prefix is handed
back without reading its file again, equal to a fresh load; a new version, a registry made
again from nothing, a record marked broken and a backbone of another fingerprint are never
served from what was kept; the bytes kept are bounded."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipelines import prefix_cache
from pipelines.jobs import task_prefix_from_registry
from registry import NullTracker, Registry
from tasks.errors import IntegrityError
from tests.pipelines.test_router_cache import BACKBONE, _testkit, add_task


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The prefix ids whose files are read (`Registry.load_prefix`); an empty cache."""
    got: list[int] = []
    real = Registry.load_prefix

    def counting(self, ref, fingerprint, **kw):
        got.append(ref)
        return real(self, ref, fingerprint, **kw)

    monkeypatch.setattr(Registry, "load_prefix", counting)
    prefix_cache.forget()
    yield got
    prefix_cache.forget()


def same(a, b) -> bool:
    return a.spec == b.spec and all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def test_a_kept_prefix_is_not_read_again_and_equals_a_fresh_load(
    tmp_path: Path, reads: list[int]
) -> None:
    with Registry.open(tmp_path / "ws", tracker=NullTracker()) as reg:
        add_task(reg, "alpha", seed=0)
        add_task(reg, "beta", seed=1)
        first = prefix_cache.load(reg, "alpha", BACKBONE)  # type: ignore[arg-type]
        again = prefix_cache.load(reg, "alpha", BACKBONE)  # type: ignore[arg-type]
        assert again is first and len(reads) == 1
        fresh = task_prefix_from_registry(reg, "alpha", BACKBONE)  # type: ignore[arg-type]
        assert same(first, fresh) and first.spec.name == "alpha"
        assert not same(prefix_cache.load(reg, "beta", BACKBONE), first)  # type: ignore[arg-type]
        assert prefix_cache.kept()[0] == 2

        v2 = _testkit().register(reg, "alpha", seed=7, new_version=True)
        reads.clear()
        newer = prefix_cache.load(reg, "alpha", BACKBONE)  # type: ignore[arg-type]
        assert reads == [v2.id] and not same(newer, first)
        assert same(newer, task_prefix_from_registry(reg, "alpha", BACKBONE))  # type: ignore[arg-type]


def test_a_broken_record_or_another_backbone_is_refused_though_kept(
    tmp_path: Path, reads: list[int]
) -> None:
    with Registry.open(tmp_path / "ws", tracker=NullTracker()) as reg:
        add_task(reg, "alpha", seed=0)
        kept = prefix_cache.load(reg, "alpha", BACKBONE)  # type: ignore[arg-type]
        other = SimpleNamespace(name="tiny-random", fingerprint="e" * 64)
        with pytest.raises(IntegrityError, match="fingerprint"):
            prefix_cache.load(reg, "alpha", other)  # type: ignore[arg-type]
        path = reg.workspace / reg.prefix("alpha").artifact_path
        path.unlink()
        assert prefix_cache.load(reg, "alpha", BACKBONE) is kept  # type: ignore[arg-type]
        assert reg.check(repair=True).marked_broken  # now the record says broken
        with pytest.raises(IntegrityError, match="marked broken"):
            prefix_cache.load(reg, "alpha", BACKBONE)  # type: ignore[arg-type]


def test_a_registry_made_again_from_nothing_is_not_served_the_old_prefixes(
    tmp_path: Path, reads: list[int]
) -> None:
    """Same workspace path, same task name and row id, another prefix."""
    ws = tmp_path / "ws"
    with Registry.open(ws, tracker=NullTracker()) as reg:
        add_task(reg, "alpha", seed=0)
        old = prefix_cache.load(reg, "alpha", BACKBONE)  # type: ignore[arg-type]
        old_id = reg.prefix("alpha").id
    shutil.rmtree(ws)
    with Registry.open(ws, tracker=NullTracker()) as reg:
        add_task(reg, "alpha", seed=5)
        assert reg.prefix("alpha").id == old_id
        now = prefix_cache.load(reg, "alpha", BACKBONE)  # type: ignore[arg-type]
        assert now is not old and not same(now, old)
        assert same(now, task_prefix_from_registry(reg, "alpha", BACKBONE))  # type: ignore[arg-type]


def test_the_bytes_kept_are_bounded_least_recently_used_out_first(
    tmp_path: Path, reads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Registry.open(tmp_path / "ws", tracker=NullTracker()) as reg:
        for i, name in enumerate(("alpha", "beta", "gamma")):
            add_task(reg, name, seed=i)
        one = prefix_cache.size_of(task_prefix_from_registry(reg, "alpha", BACKBONE))  # type: ignore[arg-type]
        monkeypatch.setattr(prefix_cache, "LIMIT_BYTES", 2 * one)
        for name in ("alpha", "beta", "alpha", "gamma"):  # beta is the least recently used
            prefix_cache.load(reg, name, BACKBONE)  # type: ignore[arg-type]
        assert prefix_cache.kept() == (2, 2 * one)
        reads.clear()
        prefix_cache.load(reg, "alpha", BACKBONE)  # type: ignore[arg-type]
        prefix_cache.load(reg, "gamma", BACKBONE)  # type: ignore[arg-type]
        assert reads == []
        prefix_cache.load(reg, "beta", BACKBONE)  # type: ignore[arg-type]
        assert len(reads) == 1
