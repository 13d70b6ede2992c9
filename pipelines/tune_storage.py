"""Where a search's study lives: Optuna's RDB storage beside the registry (`pipelines.tune`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HEARTBEAT_S = 30


def storage_for(registry_url: str, home: Path) -> Any:
    """Optuna's RDB storage beside the registry (see the module's docstring)."""
    import optuna
    from sqlalchemy import create_engine, text

    if registry_url.startswith("sqlite"):
        home.mkdir(parents=True, exist_ok=True)
        url, kwargs = f"sqlite:///{home / 'studies.db'}", {}
    else:
        engine = create_engine(registry_url)
        try:
            with engine.begin() as c:
                c.execute(text("CREATE SCHEMA IF NOT EXISTS optuna"))
        finally:
            engine.dispose()
        url, kwargs = registry_url, {"connect_args": {"options": "-csearch_path=optuna"}}
    import warnings

    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=kwargs,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=3 * HEARTBEAT_S,
        )
