"""The fitted router, cached: fit once per registry generation, not once per `predict --auto`.

Fitting the router (a logistic regression over every task's routing keys) took most of a
`predict --auto` call. A fitted router only depends on the routing keys, which only change when
the registry does, so it is kept under a key made of the registry's `generation()` (changed by
any new task, prefix version, repair or embedding), the backbone's routing method and the tasks
asked for: in memory for the process, and on disk at `<workspace>/cache/router-<key>.npz` (plain
arrays, `allow_pickle=False`; written to a temporary file and renamed into place) for the next
process. A file from an older generation is removed when a newer one is written; one that fails
to load is ignored and refitted.

From `ROUTE_RIDGE_FROM` tasks on the router is the closed-form ridge router, solved from sums
over tasks (`RidgeStats`). Those sums are kept too (`ridge_stats`): in memory and in
`<workspace>/cache/ridge-<scope>.npz` with a stamp of each task's keys' registry row (its id and
creation time), so the next fit reads and adds only the keys that are new (a new task, a new
version's keys) and takes out those that went, instead of reading every task's keys again: at
T = 1,000 on minilm, with 256 keys per task, 2.4 GB not read per arrival. A `scope` (the
stream, or all tasks) keeps one file per set of tasks routed among.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from continual.backbones import Backbone
from continual.routing import RidgeStats, Router, route_method
from registry import Registry, TaskEmbeddingRecord

CACHE_DIR = "cache"
_MEMORY: dict[tuple[str, str], Router] = {}
_MEMORY_MAX = 8
T = TypeVar("T")
_STATS: dict[tuple[str, str, str], RidgeStats] = {}
_STATS_MAX = 4
_LOCK = threading.Lock()
KEY_CHUNK = 64  # keys read per query when statistics are (re)built


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
    """Drop the in-memory routers and statistics (as a new process starts without them)."""
    _MEMORY.clear()
    _STATS.clear()


def keys_by_id(reg: Registry, ids: dict[str, int]) -> dict[str, np.ndarray]:
    """Routing keys (`[rows, dim]`) of the tasks in `ids` (task -> registry row id)."""
    return {t: e.vector.reshape(-1, e.dim) for t, e in _rows(reg, ids).items()}


def _rows(reg: Registry, ids: dict[str, int]) -> dict[str, TaskEmbeddingRecord]:
    found = {e.task: e for e in reg.embeddings_by_id(sorted(ids.values()))}
    return {t: found[t] for t in ids if t in found and found[t].id == ids[t]}


def ridge_stats(
    reg: Registry, backbone: Backbone, ids: dict[str, tuple[int, str]], scope: str
) -> RidgeStats:
    """The ridge router's statistics over exactly the tasks of `ids` (task -> (key row id,
    its stamp): `Registry.embedding_ids`),
    updated from the last ones kept for `scope`: keys of tasks gone or changed are taken out
    (rebuilt from nothing if their old rows are gone), keys of tasks new or changed added."""
    method = route_method(backbone)
    tag = hashlib.sha256(f"{method}|{scope}".encode()).hexdigest()[:16]
    where = (str(reg.workspace), method, tag)
    path = reg.workspace / CACHE_DIR / f"ridge-{tag}.npz"
    kept = _STATS.get(where) or _load_stats(path)
    stats = _update(reg, kept, ids) if kept is not None else None
    if stats is None:
        stats = _update(reg, None, ids)
    if stats is None:
        raise ValueError("no routing keys to build the router's statistics from")
    if stats.ids != (kept.ids if kept is not None else None):
        _save_stats(path, stats)
    with _LOCK:  # the service builds routers from several threads
        _STATS.pop(where, None)
        while len(_STATS) >= _STATS_MAX:  # 42 MB each on minilm: keep the few in use
            _STATS.pop(next(iter(_STATS)))
        _STATS[where] = stats
    return stats


def _update(
    reg: Registry, kept: RidgeStats | None, ids: dict[str, tuple[int, str]]
) -> RidgeStats | None:
    """`kept` (None: nothing) brought to `ids`, as a new object; None if an old row is gone."""
    stamps = {t: stamp for t, (_, stamp) in ids.items()}
    stale = {} if kept is None else {t: s for t, s in kept.ids.items() if stamps.get(t) != s}
    if kept is not None and not stale and kept.ids.keys() == ids.keys():
        return kept
    stats = None
    if kept is not None:
        stats = RidgeStats(kept.dim)
        stats.gram, stats.sums, stats.ids = kept.gram.copy(), dict(kept.sums), dict(kept.ids)
        wanted = {t: int(stamp.split("@")[0]) for t, stamp in stale.items()}
        old = _rows(reg, wanted) if stale else {}
        if {t: e.stamp for t, e in old.items()} != stale:  # gone, or another registry's row
            return None
        for t in sorted(stale):
            stats.remove(t, old[t].vector.reshape(-1, old[t].dim))
    new = sorted(t for t in ids if stats is None or t not in stats.ids)
    for start in range(0, len(new), KEY_CHUNK):
        chunk = {t: ids[t] for t in new[start : start + KEY_CHUNK]}
        for t, keys in keys_by_id(reg, {t: i for t, (i, _) in chunk.items()}).items():
            if stats is None:
                stats = RidgeStats(keys.shape[-1])
            stats.add(t, keys, chunk[t][1])
    return stats


def _load_stats(path: Path) -> RidgeStats | None:
    return _read(path, RidgeStats.restore)


def _save_stats(path: Path, stats: RidgeStats) -> None:
    try:
        _write(path, stats.state())
    except OSError:
        pass  # a read-only workspace still routes; it only rebuilds next time


def _load(path: Path) -> Router | None:
    return _read(path, Router.restore)


def _read(path: Path, restore: Callable[[dict[str, np.ndarray]], T]) -> T | None:
    """What `restore` makes of the arrays in `path`; None if there is no such file, or if it
    is damaged (then it is removed: the caller rebuilds it)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return restore({k: data[k] for k in data.files})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        path.unlink(missing_ok=True)
        return None


def _save(path: Path, router: Router, generation: str) -> None:
    """Write atomically; then remove routers of other generations (they can never match)."""
    try:
        _write(path, router.state())
        for old in path.parent.glob("router-*.npz"):
            if not old.name.startswith(f"router-{generation}-"):
                old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only workspace still routes; it only refits next time


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """`arrays` as an .npz at `path`, written to a temporary file and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz.part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
