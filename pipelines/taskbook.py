"""What the registry keeps about each task of the stream: enough to rebuild and re-score it.

A task's arrival registers its prefix with a run config holding, under `stream`, its position,
the data arguments it was loaded with (file paths made absolute) and the data's fingerprint.
From those a later process rebuilds the exact eval split, refusing data that changed since.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from continual.backbones import Backbone
from continual.modules import DEFAULT_KIND, ModuleConfig, config_from_dict
from continual.train import TrainConfig
from pipelines import ledger
from pipelines.jobs import DataArgs, load_data
from pipelines.stream import ArrivalPlan
from registry import EvaluationRecord, Registry
from tasks.errors import ContinualError, IntegrityError
from tasks.spec import TaskData


@dataclass(frozen=True)
class StreamTask:
    """A task as its arrival registered it."""

    name: str
    position: int
    prefix_id: int
    predictions_sha256: str | None
    config: TrainConfig
    prefix_config: ModuleConfig
    data: DataArgs
    data_fingerprint: str


def run_info(plan: ArrivalPlan, data: TaskData, position: int, backbone: Backbone) -> dict:
    """The `stream` part of the run config registered with an arriving task's prefix."""
    return {
        "position": position,
        "data_args": asdict(plan.data),
        "data_fingerprint": data.fingerprint,
        "backbone_bytes": backbone.n_bytes,
    }


def known(reg: Registry, task: str) -> bool:
    try:
        reg.show(task)
    except ContinualError:
        return False
    return True


def registered_at(reg: Registry, task: str, position: int) -> EvaluationRecord | None:
    """The registration score of `task` at `position`, if an earlier run registered it there."""
    if not known(reg, task):
        return None
    found = ledger.find(reg.history(task), ledger.PREFIX, position)
    if found is None or found.prefix_id is None:
        return None
    run = reg.run(reg.prefix(found.prefix_id).run_id)
    if run.config.get("stream", {}).get("position") != position:
        return None
    return found


class TaskBook:
    """Stream tasks and their data, read from the registry once per process."""

    def __init__(self) -> None:
        self._tasks: dict[str, StreamTask] = {}
        self._data: dict[str, TaskData] = {}

    def remember(self, data: TaskData) -> None:
        """Keep data just loaded for an arrival (it is the data the arrival registers)."""
        self._data[data.spec.name] = data

    def task(self, reg: Registry, name: str) -> StreamTask:
        if name in self._tasks:
            return self._tasks[name]
        tasks = ledger.stream_tasks(reg)
        position = tasks.index(name) if name in tasks else len(tasks)
        own = ledger.find(reg.history(name), ledger.PREFIX, position)
        if own is None or own.prefix_id is None:
            raise IntegrityError(f"task {name}: no registered score at its arrival {position}")
        run = reg.run(reg.prefix(own.prefix_id).run_id).config
        stream: dict[str, Any] = run.get("stream") or {}
        if not stream:
            raise IntegrityError(f"task {name}: its prefix was not registered by an arrival")
        info = StreamTask(
            name=name,
            position=position,
            prefix_id=own.prefix_id,
            predictions_sha256=own.predictions_sha256,
            config=TrainConfig.from_dict(run["train"]),
            prefix_config=config_from_dict(DEFAULT_KIND, run["prefix"]),
            data=DataArgs(**stream["data_args"]),
            data_fingerprint=stream["data_fingerprint"],
        )
        self._tasks[name] = info
        return info

    def data(self, reg: Registry, name: str) -> TaskData:
        """The task's data, rebuilt from what its arrival recorded and checked unchanged."""
        if name in self._data:
            return self._data[name]
        info = self.task(reg, name)
        data = load_data(info.data, name)
        if data.fingerprint != info.data_fingerprint:
            raise IntegrityError(
                f"task {name}: its data changed since it arrived (fingerprint "
                f"{data.fingerprint[:12]}… vs {info.data_fingerprint[:12]}…); restore the "
                f"files it was trained on ({info.data.train or info.data.dataset})"
            )
        self._data[name] = data
        return data
