"""The blob store behind an fsspec URL: a real S3-compatible server (moto's server mode, started
here on 127.0.0.1) and a shared folder as `file://`. Prefix files and stored task data round-trip,
a second workspace sharing the database and the store reads them, nothing is written to the
workspace's own folder, and a flipped byte in the store is caught on read and by `check`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from registry_testkit import FINGERPRINT, register, tensors

from registry import NullTracker, Registry
from tasks.errors import IntegrityError
from tasks.spec import Example, TaskData, TaskSpec
from tasks.split import fingerprint


@pytest.fixture(params=["s3", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, object]:
    """A store URL and an fsspec filesystem to tamper with it behind the registry's back."""
    import fsspec

    if request.param == "file":
        url = (tmp_path / "shared-mount" / "continual").as_uri()
        return url, fsspec.filesystem("file")
    url = request.getfixturevalue("s3_bucket")
    return f"{url}/team", fsspec.filesystem("s3", skip_instance_cache=True)


def _data() -> TaskData:
    spec = TaskSpec(name="tickets", kind="classification", labels=("yes", "no"))
    train = tuple(Example(f"train row {i}", ("yes", "no")[i % 2]) for i in range(8))
    ev = tuple(Example(f"eval row {i}", ("yes", "no")[i % 2]) for i in range(4))
    return TaskData(spec=spec, train=train, eval=ev, fingerprint=fingerprint(train, ev))


def _object(fs, url: str, rel: str) -> str:
    return f"{url.split('://', 1)[1]}/{rel}" if url.startswith("s3://") else f"{url[7:]}/{rel}"


def test_files_and_data_round_trip_and_a_flipped_byte_is_caught(
    store: tuple[str, object], tmp_path: Path
) -> None:
    url, fs = store
    ws = tmp_path / "ws"
    with Registry.open(ws, tracker=NullTracker(), store=url) as reg:
        record = register(reg, "trec", seed=3)
        loaded, _ = reg.load_prefix("trec", FINGERPRINT)
        assert torch.equal(loaded["prefix"], tensors(3)["prefix"])
        stored = reg.data.put(_data())
        assert reg.data.get(stored.sha256) == _data()
        assert reg.check().ok and reg.check().checked_files >= 1
    assert not (ws / "artifacts").exists()  # the workspace keeps the database only
    assert fs.exists(_object(fs, url, record.artifact_path))  # type: ignore[attr-defined]

    # another machine: its own folder, the same database and the same store
    other = tmp_path / "other"
    db = f"sqlite:///{ws / 'registry.db'}"
    with Registry.open(other, url=db, tracker=NullTracker(), store=url) as reg:
        loaded, _ = reg.load_prefix("trec", FINGERPRINT)
        assert torch.equal(loaded["prefix"], tensors(3)["prefix"])
        assert reg.data.get(stored.sha256) == _data()

    path = _object(fs, url, record.artifact_path)
    blob = bytearray(fs.cat_file(path))  # type: ignore[attr-defined]
    blob[len(blob) // 2] ^= 0x01
    fs.pipe_file(path, bytes(blob))  # type: ignore[attr-defined]
    with Registry.open(ws, tracker=NullTracker(), store=url) as reg:
        with pytest.raises(IntegrityError, match="is corrupt: expected sha256"):
            reg.load_prefix("trec", FINGERPRINT)
        report = reg.check()
        assert not report.ok and [p.prefix_id for p in report.corrupt] == [record.id]
        fs.rm_file(path)  # type: ignore[attr-defined]
        with pytest.raises(IntegrityError, match="is missing"):
            reg.load_prefix("trec", FINGERPRINT)
        assert [p.prefix_id for p in reg.check().missing] == [record.id]


def test_a_store_url_without_its_package_is_one_clear_line(tmp_path: Path) -> None:
    from tasks.errors import ConfigError

    with pytest.raises(ConfigError, match=r"store nosuchfs://x: .*check the URL"):
        Registry.open(tmp_path / "ws", tracker=NullTracker(), store="nosuchfs://x")
