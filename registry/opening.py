"""Opening a registry: its database (migrated to the newest schema, waiting out SQLite's lock
when two processes open a new workspace at once) and its MLflow tracker."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from registry import migrate
from registry.db import make_engine, resolve_url
from registry.tracking import MlflowTracker, NullTracker, Tracker
from tasks.errors import ConfigError


def open_database(
    workspace: Path | str, url: str | None, *, migrate_schema: bool = True
) -> tuple[Path, Engine, tuple[str | None, str]]:
    """The workspace folder (created), an engine on its database migrated to head, and the
    (before, after) schema revisions; an unreachable database is one clear ConfigError.
    `migrate_schema=False` (a worker) migrates nothing: a schema behind is a ConfigError."""
    ws = Path(workspace).expanduser().resolve()
    ws.mkdir(parents=True, exist_ok=True)
    engine = make_engine(resolve_url(ws, url))
    try:
        if migrate_schema:
            revisions = _upgrade_waiting_for_locks(engine)
        else:
            revisions = _at_head(engine)
    except sa_exc.OperationalError as e:
        engine.dispose()
        where = engine.url.render_as_string(hide_password=True)
        raise ConfigError(
            f"cannot open the registry database {where}: {str(e.orig).strip().splitlines()[0]}"
            "; check --registry-url and that the server is running"
        ) from None
    except BaseException:
        engine.dispose()
        raise
    return ws, engine, revisions


def _at_head(engine: Engine) -> tuple[str | None, str]:
    revision = migrate.current(engine)
    if revision != migrate.head():
        where = engine.url.render_as_string(hide_password=True)
        raise ConfigError(
            f"registry database {where} is at schema revision {revision or 'none (empty)'}, "
            f"this code needs {migrate.head()}; workers migrate nothing: run `continual registry "
            "upgrade` once (same --home/--registry-url), then start the workers"
        )
    return revision, revision


def _upgrade_waiting_for_locks(engine: Engine, attempts: int = 8) -> tuple[str | None, str]:
    """Migrate, retrying while another process holds SQLite's lock (two processes opening a new
    workspace at once: switching to WAL and creating the schema both need it, and the busy
    timeout does not cover every step)."""
    for attempt in range(attempts):
        try:
            return migrate.upgrade(engine)
        except sa_exc.OperationalError as e:
            locked = "locked" in str(e.orig).lower() or "busy" in str(e.orig).lower()
            if engine.dialect.name != "sqlite" or not locked or attempt == attempts - 1:
                raise
            engine.dispose()
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def default_tracker(workspace: Path, tracking_uri: str | None) -> Tracker:
    """MLflow at `tracking_uri`, else $MLFLOW_TRACKING_URI, else SQLite in the workspace."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if uri.lower() == "none":
        return NullTracker()
    if not uri:
        uri = f"sqlite:///{workspace / 'mlflow.db'}"
    local = not uri.startswith(("http://", "https://", "databricks"))
    location = (workspace / "mlartifacts").as_uri() if local else None
    return MlflowTracker(tracking_uri=uri, artifact_location=location)
