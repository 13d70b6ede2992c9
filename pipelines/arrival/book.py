"""What the registry keeps about each task of a stream: enough to rebuild and re-score it.

A task's arrival in a stream is its `prefix` score at its position there, pointing at the
prefix version that arrived. That prefix's run holds its training and module configuration,
and the prefix points at the data it was trained and evaluated on, stored in the registry's
data store: a re-evaluation reads the eval split from there, never from the user's files.

A prefix registered before the data store existed has no stored data: its first
re-evaluation rebuilds the data from the arguments its run recorded (refusing data that
changed since), stores it and points the prefix at it, so the user's files are read once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from continual.modules import DEFAULT_KIND, ModuleConfig, config_from_dict
from continual.train import TrainConfig
from pipelines import ledger
from registry import Registry
from registry.streams import DEFAULT_STREAM
from tasks.errors import IntegrityError
from tasks.load import DataArgs, load_data
from tasks.spec import TaskData


@dataclass(frozen=True)
class StreamTask:
    """A task as its arrival in a stream registered it."""

    name: str
    position: int
    prefix_id: int
    predictions_sha256: str | None
    config: TrainConfig
    prefix_config: ModuleConfig
    data_sha256: str | None
    data_args: DataArgs | None
    data_fingerprint: str


class TaskBook:
    """A stream's tasks and their data, read from the registry once per process."""

    def __init__(self, stream: str = DEFAULT_STREAM) -> None:
        self.stream = stream
        self._tasks: dict[str, StreamTask] = {}
        self._data: dict[str, TaskData] = {}

    def remember(self, data: TaskData) -> None:
        """Keep data just loaded for an arrival (it is the data the arrival registers)."""
        self._data[data.spec.name] = data

    def task(self, reg: Registry, name: str) -> StreamTask:
        if name in self._tasks:
            return self._tasks[name]
        arrival = ledger.arrival_of(reg, ledger.PREFIX, name, self.stream)
        if arrival is None:
            raise IntegrityError(f"task {name} has not arrived in stream {self.stream}")
        own = ledger.find(
            ledger.scores(reg, self.stream).get(name, []), ledger.PREFIX, arrival.position
        )
        if own is None or own.prefix_id is None:
            raise IntegrityError(
                f"task {name}: no registered score at its arrival {arrival.position} in "
                f"stream {self.stream}"
            )
        prefix = reg.prefix(own.prefix_id)
        run: dict[str, Any] = reg.run(prefix.run_id).config if prefix.run_id else {}
        if "train" not in run:
            raise IntegrityError(f"task {name}: its prefix has no training run to read")
        stream = run.get("stream") or {}
        args = stream.get("data_args")
        info = StreamTask(
            name=name,
            position=arrival.position,
            prefix_id=own.prefix_id,
            predictions_sha256=own.predictions_sha256,
            config=TrainConfig.from_dict(run["train"]),
            prefix_config=config_from_dict(prefix.kind or DEFAULT_KIND, run["prefix"]),
            data_sha256=prefix.data_sha256,
            data_args=DataArgs.from_dict(args) if args else None,
            data_fingerprint=stream.get("data_fingerprint") or run.get("data_fingerprint", ""),
        )
        self._tasks[name] = info
        return info

    def data(self, reg: Registry, name: str) -> TaskData:
        """The task's data, from the registry's data store."""
        if name in self._data:
            return self._data[name]
        info = self.task(reg, name)
        if info.data_sha256 is not None:
            data = reg.data.get(info.data_sha256)
        else:
            data = self._from_recorded_args(reg, info)
        self._data[name] = data
        return data

    def _from_recorded_args(self, reg: Registry, info: StreamTask) -> TaskData:
        if info.data_args is None:
            raise IntegrityError(
                f"task {info.name}: its prefix has neither stored data nor recorded data "
                "arguments; re-register it with `continual train --new-version`"
            )
        data = load_data(info.data_args, info.name)
        if data.fingerprint != info.data_fingerprint:
            raise IntegrityError(
                f"task {info.name}: its data changed since it arrived (fingerprint "
                f"{data.fingerprint[:12]}… vs {info.data_fingerprint[:12]}…); restore the "
                f"files it was trained on ({info.data_args.train or info.data_args.dataset})"
            )
        reg.data.attach(info.prefix_id, data)
        return data
