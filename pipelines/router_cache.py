"""The fitted router, cached: fit once per registry generation, not once per `predict --auto`.

Fitting the router (a logistic regression over every task's routing keys) took most of a
`predict --auto` call. A fitted router only depends on the routing keys, which only change when
the registry does, so it is kept under a key made of the registry's `generation()` (changed by
any new task, prefix version, repair or embedding), the backbone's routing method and the tasks
asked for: in memory for the process, and on disk at `<workspace>/cache/router-<key>.npz` (plain
arrays, `allow_pickle=False`; written to a temporary file and renamed into place) for the next
process. A file from an older generation is removed when a newer one is written; one that fails
to load is ignored and refitted.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from continual.backbones import Backbone
from continual.routing import Router, route_method
from registry import Registry

CACHE_DIR = "cache"
_MEMORY: dict[tuple[str, str], Router] = {}
_MEMORY_MAX = 8


def cache_key(generation: str, method: str, tasks: Sequence[str] | None) -> str:
    """`<generation>-<hash of method and tasks>`: the generation first, so old files are found."""
    wanted = "*" if tasks is None else ",".join(sorted(tasks))
    return f"{generation}-{hashlib.sha256(f'{method}|{wanted}'.encode()).hexdigest()[:16]}"


def router_path(workspace: Path, key: str) -> Path:
    return workspace / CACHE_DIR / f"router-{key}.npz"


def cached_router(
    reg: Registry,
    backbone: Backbone,
    tasks: Sequence[str] | None,
    fit: Callable[[], Router],
) -> Router:
    """The router for `tasks` (None: all) on `backbone`, from memory, else from the workspace's
    cache file, else `fit()` (then kept in both)."""
    generation = reg.generation()
    key = cache_key(generation, route_method(backbone), tasks)
    where = (str(reg.workspace), key)
    if where in _MEMORY:
        return _MEMORY[where]
    path = router_path(reg.workspace, key)
    router = _load(path)
    if router is None:
        router = fit()
        _save(path, router, generation)
    if len(_MEMORY) >= _MEMORY_MAX:
        _MEMORY.pop(next(iter(_MEMORY)))
    _MEMORY[where] = router
    return router


def forget_memory() -> None:
    """Drop the in-memory routers (as a new process starts without them)."""
    _MEMORY.clear()


def _load(path: Path) -> Router | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            return Router.restore({k: data[k] for k in data.files})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # damaged: refit
        path.unlink(missing_ok=True)
        return None


def _save(path: Path, router: Router, generation: str) -> None:
    """Write atomically; then remove routers of other generations (they can never match)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".router-", suffix=".npz.part")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **router.state())
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        for old in path.parent.glob("router-*.npz"):
            if not old.name.startswith(f"router-{generation}-"):
                old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only workspace still routes; it only refits next time
