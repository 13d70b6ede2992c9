"""`continual registry similar`: the earlier tasks nearest to a registered task, or to new
data given as files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from continual.similarity import task_embedding
from pipelines.jobs import stored_backbone
from pipelines.serve import registry_backbone
from pipelines.settings import RegistryArgs
from pipelines.similar import neighbours, task_neighbours
from tasks.errors import ConfigError
from tasks.load import DataArgs, load_data


def run_similar(
    *,
    registry: RegistryArgs,
    task: str | None,
    data_args: DataArgs,
    backbone: str | None,
    method: str,
    top: int,
) -> dict[str, Any]:
    """`continual registry similar`: the earlier tasks nearest to a registered task or to
    new data given as files (embedding method only: new data has no prefix yet)."""
    if top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    if (task is None) == (data_args.train is None and data_args.dataset is None):
        raise ConfigError("give either TASK (a task in the registry) or --train FILE (new data)")
    with registry.open() as reg:
        if task is not None:
            bb = stored_backbone(reg, task, backbone)
            found = task_neighbours(reg, bb, task, method=method, top=None)
            query = task
        else:
            if method != "embedding":
                raise ConfigError("new data has no prefix yet: use --method embedding")
            data = load_data(data_args, data_args_name(data_args))
            bb = registry_backbone(reg, backbone)
            emb = task_embedding(bb, data.spec, data.train, seed=data.spec.seed)
            found = neighbours(reg, bb, emb, top=None)
            query = data.spec.name
    found, left = found[:top], len(found) - min(top, len(found))
    lines = [f"tasks nearest to {query} on {bb.name} ({method} similarity):"]
    lines += [f"  {n.score:6.3f}  {n.task}" for n in found] or ["  (no other task to compare)"]
    if left:
        lines.append(f"  {left} more, use --top {top + left} to list them all")
    return {
        "query": query,
        "backbone": bb.name,
        "method": method,
        "similar": [{"task": n.task, "score": n.score, "method": n.method} for n in found],
        "_human": "\n".join(lines),
    }


def data_args_name(args: DataArgs) -> str:
    """A name for query data given as files (its file's stem, made a valid task name)."""
    if args.dataset:
        return args.dataset
    stem = Path(str(args.train)).stem.lower()
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in stem).strip("_-")
    return cleaned or "query"
