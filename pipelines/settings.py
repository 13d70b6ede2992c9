"""Where things live: the workspace (a user's work) and the asset cache (shared downloads)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from registry import Registry

from pipelines.threads import ThreadChoice, pick_threads, user_threads
from tasks.assets import cache_root

__all__ = [
    "RegistryArgs",
    "ThreadChoice",
    "asset_cache",
    "pick_threads",
    "quiet_libraries",
    "user_threads",
    "workspace",
]


def workspace(home: str | os.PathLike | None = None) -> Path:
    """`--home DIR`, else `CONTINUAL_HOME`, else `./.continual`.

    Not created here: whatever first writes into it (the registry) creates it, so a command
    refused for bad input leaves no folder behind.
    """
    return Path(home or os.environ.get("CONTINUAL_HOME") or ".continual").expanduser().resolve()


def stream_home(home: Path, stream: str) -> Path:
    """Where a stream keeps its files in the workspace (baseline weights, backbone evidence,
    its report): the workspace itself for `default` (where a workspace made before named
    streams keeps them), else `<home>/streams/<name>`."""
    return home if stream == "default" else home / "streams" / stream


def asset_cache() -> Path:
    """`CONTINUAL_CACHE`, else `~/.cache/continual`: backbones and datasets, never in a workspace."""
    return cache_root()


def quiet_libraries() -> None:
    """Keep library chatter off stdout/stderr: progress is ours, errors are ours."""
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", category=FutureWarning)
    # Library UserWarnings are noise here; ours (e.g. registry.tracking's) stay visible.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|torch|mlflow)")
    for name in ("transformers", "datasets", "huggingface_hub", "alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)


@dataclass(frozen=True)
class RegistryArgs:
    """Where the registry lives: the workspace, a database URL, an MLflow tracking URI and the
    store of its files (an fsspec URL; None: the workspace folder)."""

    home: Path
    url: str | None = None
    tracking_uri: str | None = None
    store: str | None = None

    @classmethod
    def from_namespace(cls, args: Any) -> RegistryArgs:
        """From parsed CLI options: `--home`, `--registry-url` (else $CONTINUAL_REGISTRY_URL),
        `--tracking-uri` (else MLflow's own $MLFLOW_TRACKING_URI, else the workspace), `--store`
        (else $CONTINUAL_STORE, else the workspace folder)."""
        return cls(
            home=workspace(getattr(args, "home", None)),
            url=getattr(args, "registry_url", None)
            or os.environ.get("CONTINUAL_REGISTRY_URL")
            or None,
            tracking_uri=getattr(args, "tracking_uri", None),
            store=getattr(args, "store", None) or os.environ.get("CONTINUAL_STORE") or None,
        )

    def open(self, *, migrate: bool = True) -> Registry:
        """The registry; `migrate=False` refuses one whose schema is behind (workers)."""
        from registry import Registry

        return Registry.open(
            self.home,
            url=self.url,
            tracking_uri=self.tracking_uri,
            migrate=migrate,
            store=self.store,
        )
