"""Where things live: the workspace (a user's work) and the asset cache (shared downloads)."""

from __future__ import annotations

import os
from pathlib import Path

from tasks.assets import cache_root


def workspace(home: str | os.PathLike | None = None) -> Path:
    """`--home DIR`, else `CONTINUAL_HOME`, else `./.continual`.

    Not created here: whatever first writes into it (the registry) creates it, so a command
    refused for bad input leaves no folder behind.
    """
    return Path(home or os.environ.get("CONTINUAL_HOME") or ".continual").expanduser().resolve()


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
