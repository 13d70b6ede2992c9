"""The registry's exchange and upkeep: export and import of prefixes, the integrity check and
its repair, the MLflow catch-up. A mixin of `registry.api.Registry`, kept apart to keep files
small; the work is done by `registry.exchange`, `registry.integrity` and `registry.mirror`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from registry import exchange, integrity, mirror
from registry.records import CheckReport, ExportRecord, PrefixRecord, SyncReport
from tasks.spec import TaskSpec


class Exchange:
    """Export, import, check and sync; `self` is the registry (a `registry.ports.RegistryCore`)."""

    def export(self, task: str, fmt: str, out: Path, *, version: int | None = None) -> ExportRecord:
        """Write the prefix to `out` as a PEFT adapter ('peft') or our own files ('safetensors')."""
        return exchange.export(self, task, fmt, Path(out), version=version)

    def import_(
        self,
        path: Path,
        *,
        backbone_fingerprint: str | None = None,
        task: TaskSpec | None = None,
        new_version: bool = False,
        backbone: dict[str, Any] | None = None,
        verify: Callable[[str, dict[str, Any], dict[str, Any], TaskSpec], None] | None = None,
    ) -> PrefixRecord:
        """Register a module exported by `export` (either format) or a PEFT adapter. `task`:
        the spec of an adapter that carries none; `backbone`: the record (`Backbone.info()`) of
        the backbone it was trained on; `verify(kind, config, tensors, spec)` may refuse it
        before anything is written."""
        return exchange.import_(
            self,
            Path(path),
            backbone_fingerprint=backbone_fingerprint,
            task=task,
            new_version=new_version,
            backbone=backbone,
            verify=verify,
        )

    def check(
        self, repair: bool = False, *, grace_s: float = integrity.GRACE_S, mlflow: bool = False
    ) -> CheckReport:
        """Find rows without files, files without rows and hash mismatches; with `repair`,
        remove orphan files and mark broken rows (never deleting a good prefix). With `mlflow`,
        check (and repair) each prefix's MLflow copy too."""
        return integrity.check(self, repair=repair, grace_s=grace_s, mlflow=mlflow)

    def sync_mlflow(self) -> SyncReport:
        """Mirror to MLflow every prefix (and evaluation) that has no MLflow run yet."""
        return mirror.sync(self)
