"""A stored prefix: exact round trip, atomic replacement, and refusal of anything altered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from continual import checkpoint
from continual.heads import ClassificationHead
from continual.inference import TrainedTask
from continual.modules.prefix import PrefixConfig
from continual.objectives import TextLimits
from tasks.assets import sha256_file
from tasks.errors import ConfigError, IntegrityError
from tasks.spec import TaskSpec

FINGERPRINT = "ab" * 32
META = {
    "backbone": {"name": "tiny-bert", "fingerprint": FINGERPRINT, "source": "/x"},
    "metrics": {"accuracy": 0.5},
}


def make_task(*, head: bool) -> TrainedTask:
    gen = torch.Generator().manual_seed(0)
    config = PrefixConfig(
        length=3,
        layers=2,
        kv_heads=2,
        head_dim=8,
        hidden_size=32,
        positions="shifted",
        init="nearest",
    )
    spec = TaskSpec(
        name="sentiment",
        kind="classification",
        labels=("positive", "negative"),
        description="Classify",
        source="files:x.jsonl",
        seed=7,
        extra=(("eval_split", "seeded 20%"),),
    )
    h = None
    if head:
        h = ClassificationHead(32, 2, dropout=0.0)
        with torch.no_grad():
            h.linear.weight.normal_(generator=gen)
            h.linear.bias.normal_(generator=gen)
    return TrainedTask(
        spec=spec,
        config=config,
        tensors={"prefix": torch.randn(3, config.flat_dim, generator=gen)},
        head=h,
        limits=TextLimits(max_length=64, max_target_length=8),
    )


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, TrainedTask]:
    task = make_task(head=True)
    return checkpoint.save(tmp_path / "prefixes" / "sentiment", task, META), task


@pytest.mark.parametrize("head", [True, False])
def test_round_trip_is_exact(tmp_path: Path, head: bool) -> None:
    task = make_task(head=head)
    folder = checkpoint.save(tmp_path / "p", task, META)
    loaded, doc = checkpoint.load(folder, backbone_fingerprint=FINGERPRINT)
    assert loaded.tensors.keys() == task.tensors.keys() == {"prefix"}
    assert torch.equal(loaded.tensors["prefix"], task.tensors["prefix"])
    assert loaded.tensors["prefix"].dtype == torch.float32
    assert loaded.spec == task.spec and loaded.config == task.config
    assert loaded.limits == task.limits
    if head:
        assert torch.equal(loaded.head.linear.weight, task.head.linear.weight)
        assert torch.equal(loaded.head.linear.bias, task.head.linear.bias)
        assert not loaded.head.training
    else:
        assert loaded.head is None
    assert doc["sha256"] == sha256_file(folder / checkpoint.TENSORS)
    assert doc["backbone"] == META["backbone"] and doc["metrics"] == META["metrics"]
    assert doc["format"] == checkpoint.FORMAT and set(doc["packages"]) >= {"torch", "transformers"}
    assert doc["module_kind"] == "prefix"
    assert checkpoint.load(folder)[0].spec == task.spec  # no fingerprint given: not checked


def test_save_replaces_atomically(stored: tuple[Path, TrainedTask]) -> None:
    folder, task = stored
    newer = TrainedTask(
        spec=task.spec,
        config=task.config,
        tensors={"prefix": task.tensors["prefix"] + 1},
        head=task.head,
        limits=task.limits,
    )
    checkpoint.save(folder, newer, META)
    assert torch.equal(checkpoint.load(folder)[0].tensors["prefix"], newer.tensors["prefix"])
    assert sorted(p.name for p in folder.parent.iterdir()) == ["sentiment"]  # no temp left
    assert sorted(p.name for p in folder.iterdir()) == [checkpoint.META, checkpoint.TENSORS]


def test_one_flipped_byte_is_refused(stored: tuple[Path, TrainedTask]) -> None:
    folder, _ = stored
    path = folder / checkpoint.TENSORS
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        checkpoint.load(folder)
    message = str(err.value)
    assert str(path) in message and "sha256" in message and "corrupt" in message
    assert "\n" not in message


def test_another_backbone_is_refused(stored: tuple[Path, TrainedTask]) -> None:
    folder, _ = stored
    with pytest.raises(IntegrityError, match="tiny-bert") as err:
        checkpoint.load(folder, backbone_fingerprint="cd" * 32)
    assert str(folder) in str(err.value) and FINGERPRINT[:12] in str(err.value)


def test_incomplete_or_foreign_folders_are_refused(
    stored: tuple[Path, TrainedTask], tmp_path: Path
) -> None:
    folder, _ = stored
    with pytest.raises(ConfigError, match="not a prefix folder"):
        checkpoint.load(tmp_path)
    meta = folder / checkpoint.META
    doc = json.loads(meta.read_text())
    meta.write_text(json.dumps({**doc, "format": "something-else/9"}))
    with pytest.raises(ConfigError, match="format 'something-else/9' is not a prefix folder"):
        checkpoint.load(folder)
    meta.write_text("{not json")
    with pytest.raises(IntegrityError, match="not valid JSON"):
        checkpoint.load(folder)
    meta.write_text(json.dumps({**doc, "prefix_config": {**doc["prefix_config"], "length": 4}}))
    with pytest.raises(ConfigError, match="shape"):
        checkpoint.load(folder)
    (folder / checkpoint.TENSORS).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        checkpoint.load(folder)
