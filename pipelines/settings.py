"""Where things live: the workspace (a user's work) and the asset cache (shared downloads)."""

from __future__ import annotations

import os
from pathlib import Path

from tasks.assets import cache_root


def workspace(home: str | os.PathLike | None = None) -> Path:
    """`--home DIR`, else `CONTINUAL_HOME`, else `./.continual` (created on demand)."""
    path = Path(home or os.environ.get("CONTINUAL_HOME") or ".continual").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def asset_cache() -> Path:
    """`CONTINUAL_CACHE`, else `~/.cache/continual`: backbones and datasets, never in a workspace."""
    return cache_root()


def quiet_libraries() -> None:
    """Keep library chatter off stdout/stderr: progress is ours, errors are ours."""
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for name in ("transformers", "datasets", "huggingface_hub", "alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
