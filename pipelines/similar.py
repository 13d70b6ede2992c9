"""Similar earlier tasks, from the registry: what `registry similar` lists and what the
`nearest`, `weighted` and `auto` inits start from.

A task's embedding is computed at its arrival and stored with its prefix (one unit of work),
under a method name that carries the backbone's fingerprint: only tasks on the same backbone
weights are compared.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from continual.backbones import Backbone
from continual.init import InitContext, Source, Start, needs_sources, start_module
from continual.modules import ModuleConfig, split_tensors
from continual.routing import arrival_embeddings
from continual.similarity import (
    Neighbour,
    embedding_method,
    module_vector,
    rank,
)
from registry import Registry
from tasks.errors import ConfigError
from tasks.spec import TaskData

METHODS = ("embedding", "prefix")


def stored_embeddings(reg: Registry, backbone: Backbone) -> dict[str, np.ndarray]:
    """Every task's newest embedding on this backbone."""
    return {e.task: e.vector for e in reg.embeddings(embedding_method(backbone))}


def _prefix_vectors(reg: Registry, backbone: Backbone, names: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        view = reg.show(name)
        if view.current is None:
            continue
        tensors, _ = reg.load_prefix(name, backbone.fingerprint)
        out[name] = module_vector(split_tensors(tensors)[0])
    return out


def neighbours(
    reg: Registry,
    backbone: Backbone,
    query: np.ndarray,
    *,
    exclude: str | None = None,
    top: int | None = None,
) -> list[Neighbour]:
    """Earlier tasks on `backbone` by decreasing embedding similarity to `query`."""
    keys = {k: v for k, v in stored_embeddings(reg, backbone).items() if k != exclude}
    return rank(query, keys, "embedding", top)


def task_neighbours(
    reg: Registry, backbone: Backbone, task: str, *, method: str, top: int | None
) -> list[Neighbour]:
    """The tasks nearest to registered `task`, by its stored embedding or (SPoT) its prefix."""
    if method not in METHODS:
        raise ConfigError(f"unknown similarity method {method!r}; choose one of {METHODS}")
    if method == "embedding":
        stored = stored_embeddings(reg, backbone)
        if task not in stored:
            raise ConfigError(
                f"task {task} has no task embedding on backbone {backbone.name} (imported "
                "tasks, and tasks registered before embeddings existed, have none: it is "
                "computed from the training data); use --method prefix"
            )
        return neighbours(reg, backbone, stored[task], exclude=task, top=top)
    names = [t.name for t in reg.tasks()]
    vectors = _prefix_vectors(reg, backbone, names)
    if task not in vectors:
        raise ConfigError(f"task {task} has no usable prefix in the registry")
    query = vectors.pop(task)
    return rank(query, vectors, "prefix", top)


def sources_for(
    reg: Registry, backbone: Backbone, query: np.ndarray, *, exclude: str | None
) -> list[Source]:
    """Earlier tasks' current prefixes with their similarity to `query`, for the init
    strategies (prefixes of another shape are skipped by the strategies themselves)."""
    out = []
    for n in neighbours(reg, backbone, query, exclude=exclude):
        view = reg.show(n.task)
        if view.current is None:
            continue
        tensors, record = reg.load_prefix(n.task, backbone.fingerprint)
        out.append(Source(n.task, record.id, n.score, split_tensors(tensors)[0]))
    return out


__all__ = [
    "METHODS",
    "arrival_embeddings",
    "plan_start",
    "start_info",
    "neighbours",
    "sources_for",
    "stored_embeddings",
    "task_neighbours",
]


def plan_start(
    reg: Registry, backbone: Backbone, data: TaskData, pconfig: ModuleConfig
) -> tuple[Start, dict[str, Any]]:
    """Where the arriving task's prefix starts (strategy `pconfig.init`, drawing on the
    registry's earlier tasks where it needs them) and the embeddings to store with it."""
    vectors = arrival_embeddings(backbone, data)
    sources: list[Source] = []
    if needs_sources(pconfig.init):
        query = vectors[embedding_method(backbone)]
        sources = sources_for(reg, backbone, query, exclude=data.spec.name)
    ctx = InitContext(backbone, data.spec, pconfig, {"sources": sources})
    return start_module(pconfig.init, ctx), vectors


def start_info(start: Start) -> dict[str, Any]:
    """What the run's config records of the start (the lineage holds the same sources)."""
    return {"strategy": start.strategy, "sources": [list(s) for s in start.sources]}
