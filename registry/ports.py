"""What the registry's services (registration, exchange, integrity, the MLflow mirror) need of a
registry: a protocol `registry.api.Registry` satisfies, so the services never import the facade
that calls them (no import circle between `api` and its helpers)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from registry.artifacts import ArtifactStore
    from registry.blobs import FsspecStore
    from registry.records import PrefixRecord
    from registry.tracking import Tracker
    from registry.uow import Database


class RegistryCore(Protocol):
    """The parts of a registry its services use."""

    workspace: Path
    db: Database
    artifacts: ArtifactStore | FsspecStore
    tracker: Tracker

    def prefix(self, ref: str | int, version: int | None = None) -> PrefixRecord: ...

    def load_prefix(
        self, ref: str | int, expected_backbone_fingerprint: str, *, version: int | None = None
    ) -> tuple[dict[str, torch.Tensor], PrefixRecord]: ...

    def register_prefix(self, **kwargs: Any) -> PrefixRecord: ...
