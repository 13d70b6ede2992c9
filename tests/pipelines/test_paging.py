"""Commands that need every row read every row: `registry similar --method prefix` compares with
all tasks, and the registry's backbone is found among all current prefixes, however many."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipelines.serve import registry_backbone
from pipelines.similar import task_neighbours
from registry import NullTracker, Registry, orm
from tasks.errors import ConfigError


def _testkit() -> Any:
    if "registry_testkit" not in sys.modules:
        path = Path(__file__).parents[1] / "registry" / "registry_testkit.py"
        spec = importlib.util.spec_from_file_location("registry_testkit", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["registry_testkit"] = module
        spec.loader.exec_module(module)
    return sys.modules["registry_testkit"]


@pytest.fixture
def reg(tmp_path: Path):
    with Registry.open(tmp_path / "ws", tracker=NullTracker()) as r:
        yield r


def test_similar_by_prefix_compares_with_every_task(reg: Registry) -> None:
    kit = _testkit()
    for i in range(105):
        kit.register(reg, f"t{i:03d}", seed=i, evaluation=None)
    fake = SimpleNamespace(name="tiny-random", fingerprint=kit.FINGERPRINT)
    found = task_neighbours(reg, fake, "t104", method="prefix", top=None)  # type: ignore[arg-type]
    assert len(found) == 104 and {n.task for n in found} == {f"t{i:03d}" for i in range(104)}


def test_the_registry_backbone_is_found_among_all_current_prefixes(reg: Registry) -> None:
    kit = _testkit()
    kit.register(reg, "old", fingerprint="a" * 64)
    newer = kit.register(reg, "new", fingerprint="b" * 64)

    def many_versions(uow: Any) -> None:  # 1,000 newer versions of "new", all on backbone b
        row = uow.session.get(orm.Prefix, newer.id)
        uow.session.add_all(
            orm.Prefix(
                task_id=row.task_id,
                version=v,
                is_current=False,
                status="ok",
                backbone_id=row.backbone_id,
                run_id=row.run_id,
                config=row.config,
                artifact_path=row.artifact_path,
                sha256=row.sha256,
                n_bytes=row.n_bytes,
                n_trainable=row.n_trainable,
                n_stored=row.n_stored,
                train_steps=1,
                train_seconds=0.0,
                losses=[],
            )  # fmt: skip
            for v in range(2, 1002)
        )

    reg.db.write(many_versions)
    assert reg.count_prefixes() == 1002
    with pytest.raises(ConfigError, match=r"use 2 backbones .*pass --backbone NAME"):
        registry_backbone(reg, None)
