"""Content-addressed safetensors files: atomic writes, verified loads, check and repair."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from registry_testkit import FINGERPRINT, register

from registry import Registry
from registry.artifacts import ArtifactStore
from tasks.errors import IntegrityError


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _age(path: Path, seconds: float = 3600) -> None:
    old = path.stat().st_mtime - seconds
    os.utime(path, (old, old))


def test_files_are_content_addressed_safetensors(reg: Registry) -> None:
    record = register(reg, "trec")
    path = reg.workspace / record.artifact_path
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == record.sha256
    assert record.artifact_path == f"artifacts/{record.sha256[:2]}/{record.sha256}.safetensors"
    assert record.n_bytes == len(data)
    assert not data.startswith(b"\x80")  # not a pickle
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert meta["backbone_fingerprint"] == FINGERPRINT and meta["task"] == "trec"
    assert '"length": 4' in meta["prefix_config"]


def test_a_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(tmp_path)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put(b"some bytes")
    assert list(store.files()) == []  # neither the target nor the temporary file


def test_a_flipped_byte_is_reported_and_refused(reg: Registry) -> None:
    record = register(reg, "trec")
    path = reg.workspace / record.artifact_path
    _flip_one_byte(path)
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    report = reg.check()
    assert not report.ok and [p.prefix_id for p in report.corrupt] == [record.id]
    assert report.corrupt[0].actual_sha256 == actual
    with pytest.raises(IntegrityError) as e:
        reg.load_prefix("trec", FINGERPRINT)
    message = str(e.value)
    assert "\n" not in message
    for part in (str(path), record.sha256, actual, "continual registry check --repair"):
        assert part in message


def test_a_backbone_mismatch_is_refused(reg: Registry) -> None:
    register(reg, "trec")
    with pytest.raises(IntegrityError, match=f"fingerprint {FINGERPRINT}, not other"):
        reg.load_prefix("trec", "other")


def test_repair_removes_orphans_and_marks_broken_rows(reg: Registry) -> None:
    good = register(reg, "good", seed=1)
    lost = register(reg, "lost", seed=2, optimizer=True)
    rotten = register(reg, "rotten", seed=3)
    register(reg, "rotten", seed=4, new_version=True)  # v2 current; v1 goes bad below
    (reg.workspace / lost.artifact_path).unlink()
    _flip_one_byte(reg.workspace / rotten.artifact_path)
    orphan = reg.artifacts.put(b"nobody points here")
    stray = reg.workspace / "artifacts" / "ab" / ".tmp-crashed.part"
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"half")
    fresh = reg.artifacts.put(b"a registration in flight")
    for rel in (orphan.path, f"artifacts/ab/{stray.name}"):
        _age(reg.workspace / rel)

    report = reg.check()
    assert not report.ok and not report.repaired
    assert [p.task for p in report.missing] == ["lost"]
    assert [(p.task, p.version) for p in report.corrupt] == [("rotten", 1)]
    assert set(report.orphans) == {orphan.path, f"artifacts/ab/{stray.name}"}
    assert report.recent_orphans == (fresh.path,)
    assert (reg.workspace / orphan.path).exists()  # check alone changes nothing

    repaired = reg.check(repair=True)
    assert repaired.repaired and set(repaired.removed) == set(report.orphans)
    assert set(repaired.marked_broken) == {lost.id, rotten.id}
    assert not (reg.workspace / orphan.path).exists() and not stray.exists()
    assert (reg.workspace / fresh.path).exists()
    statuses = {(p.task, p.version): (p.status, p.is_current) for p in reg.prefixes()}
    assert statuses == {
        ("good", 1): ("ok", True),
        ("lost", 1): ("broken", True),
        ("rotten", 1): ("broken", False),
        ("rotten", 2): ("ok", True),
    }
    tensors, _ = reg.load_prefix("good", FINGERPRINT)  # good prefixes untouched
    assert torch.equal(tensors["prefix"], reg.load_prefix(good.id, FINGERPRINT)[0]["prefix"])
    with pytest.raises(IntegrityError, match="marked broken"):
        reg.load_prefix("lost", FINGERPRINT)
    after = reg.check()
    assert after.ok and not after.missing and not after.corrupt


def test_a_bad_optimizer_file_drops_only_the_resume_state(reg: Registry) -> None:
    record = register(reg, "trec", optimizer=True)
    _flip_one_byte(reg.workspace / record.optimizer_path)
    with pytest.raises(IntegrityError, match="corrupt"):
        reg.load_optimizer_state("trec")
    report = reg.check(repair=True)
    assert [p.kind for p in report.corrupt] == ["optimizer"]
    assert report.dropped_optimizer == (record.id,) and report.marked_broken == ()
    assert reg.load_optimizer_state("trec") is None
    assert reg.prefix("trec").status == "ok"
    # The dropped optimizer file is unreferenced now, but young: spared by the grace period.
    assert reg.check().recent_orphans == (record.optimizer_path,) and reg.check().ok
    assert reg.check(grace_s=0).orphans == (record.optimizer_path,)


def test_a_restored_file_makes_a_broken_prefix_ok_again(reg: Registry) -> None:
    record = register(reg, "trec")
    path = reg.workspace / record.artifact_path
    kept = path.read_bytes()
    path.unlink()
    assert reg.check(repair=True).marked_broken == (record.id,)
    path.write_bytes(kept)
    assert reg.check(repair=True).restored == (record.id,)
    assert reg.load_prefix("trec", FINGERPRINT)[1].status == "ok"
