"""Loaded prefixes kept in the process between arrivals, for the routed (task-agnostic) paths.

Under the ridge router the routed evaluation loads the prefix of every task an input was routed
to. The more tasks, the more distinct ones (161 at T = 310 in `bench.scale`, whose synthetic
tasks share their inputs), and each load read the task's whole view (lineage included), the
prefix record again, re-hashed the file and rebuilt the tensors: about 20 ms each, 3.3 s of an
arrival, at every arrival, in a worker that had loaded the same prefixes a minute before. Kept
here, a prefix costs one query (its task's current record) after its first load.

The key is the workspace, the backbone fingerprint and the prefix record (id, sha256, creation
time): a new version is a new record; a registry made again from nothing reuses ids, not
creation times; a record `check --repair` marks broken is refused on its status, read each
time. What is handed back are the tensors verified (sha256) when first loaded; the stream's
audit re-hashes every stored file at each arrival on its own. The tensors are shared between
callers, so only inference may use them (nothing here is trained in place). At most
`LIMIT_BYTES` are kept; the least recently used go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from continual.backbones import Backbone
from continual.inference import TrainedTask
from pipelines.jobs import current_view, trained_task
from registry import PrefixRecord, Registry
from tasks.errors import ConfigError

LIMIT_BYTES = 512 * 2**20
_KEPT: OrderedDict[tuple[Any, ...], tuple[TrainedTask, int]] = OrderedDict()
_LOCK = threading.Lock()
_BYTES = [0]


def _key(reg: Registry, record: PrefixRecord, fingerprint: str) -> tuple[Any, ...]:
    return (str(reg.workspace), fingerprint, record.id, record.sha256, record.created_at)


def size_of(task: TrainedTask) -> int:
    """Bytes held by a loaded task: its module's tensors and its head's parameters."""
    n = sum(t.numel() * t.element_size() for t in task.tensors.values())
    if task.head is not None:
        n += sum(p.numel() * p.element_size() for p in task.head.parameters())
    return n


def load(reg: Registry, task: str, backbone: Backbone) -> TrainedTask:
    """`task`'s current prefix on `backbone`, for inference: from memory when this process has
    loaded that record before, else from the registry (verified) and kept."""
    try:
        record: PrefixRecord | None = reg.prefix(task)
    except ConfigError:  # no current prefix: the full path below says so in its own words
        record = None
    if (
        record is not None
        and record.status == "ok"
        and record.backbone_fingerprint == backbone.fingerprint
    ):
        key = _key(reg, record, backbone.fingerprint)
        with _LOCK:
            hit = _KEPT.get(key)
            if hit is not None:
                _KEPT.move_to_end(key)
                return hit[0]
    view = current_view(reg, task)
    loaded = trained_task(reg, view, backbone)  # refuses a broken or foreign record
    keep(_key(reg, view.current, backbone.fingerprint), loaded)  # type: ignore[arg-type]
    return loaded


def keep(key: tuple[Any, ...], loaded: TrainedTask) -> None:
    n = size_of(loaded)
    if n > LIMIT_BYTES:
        return
    with _LOCK:
        if key in _KEPT:
            return
        _KEPT[key] = (loaded, n)
        _BYTES[0] += n
        while _BYTES[0] > LIMIT_BYTES:
            _, (_, gone) = _KEPT.popitem(last=False)
            _BYTES[0] -= gone


def kept() -> tuple[int, int]:
    """(prefixes kept, bytes kept)."""
    with _LOCK:
        return len(_KEPT), _BYTES[0]


def forget() -> None:
    with _LOCK:
        _KEPT.clear()
        _BYTES[0] = 0
