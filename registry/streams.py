"""Named streams and what they record: arrivals and the scores at each stream position.

    reg.streams.ensure("nightly")
    a = reg.streams.start_arrival(stream="nightly", position=0, task="trec", method="prefix")
    reg.streams.finish_arrival(a.id, "done")
    reg.streams.evaluations("nightly")          # every score of the stream, in one query

A registry holds many streams; positions are per stream. The one implicit stream of a
workspace made before streams existed is `default`. Arrival rows are unique per (stream,
method, position) and (stream, method, task): starting an arrival that a killed run already
started returns that row.
"""

from __future__ import annotations

from typing import Any

from registry.records import ArrivalRecord, EvaluationRecord, StreamRecord
from registry.uow import Database, UnitOfWork
from tasks.spec import check_name

DEFAULT_STREAM = "default"


def check_stream(name: str) -> str:
    """A stream name: the same rules as a task name (letters, digits, `_`, `-`, `.`)."""
    return check_name(name, "stream name")


class StreamBook:
    """Streams, their arrivals and positioned scores, over one registry database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def ensure(self, name: str, description: str = "") -> StreamRecord:
        check_stream(name)
        self.db.write(lambda uow: uow.streams.ensure(name, description), retry_conflicts=True)
        return self.get(name)

    def get(self, name: str) -> StreamRecord:
        check_stream(name)
        found = [s for s in self.list() if s.name == name]
        if not found:
            self.db.read(lambda uow: uow.streams.get(name))  # raises the clear error
        return found[0]

    def list(self) -> list[StreamRecord]:
        return self.db.read(lambda uow: uow.streams.all())

    def start_arrival(
        self, *, position: int, task: str, method: str, stream: str = DEFAULT_STREAM
    ) -> ArrivalRecord:
        """The arrival row of `task` at `position` (status running), or the one there."""

        def write(uow: UnitOfWork) -> int:
            t = uow.tasks.get(check_name(task))
            return uow.arrivals.add_arrival(
                stream_id=uow.streams.ensure(check_stream(stream)),
                position=position,
                task_id=t.id,
                method=method,
                status="running",
            )

        arrival_id = self.db.write(write, retry_conflicts=True)
        return next(a for a in self.arrivals(method, stream) if a.id == arrival_id)

    def finish_arrival(
        self, arrival_id: int, status: str, reeval: dict[str, Any] | None = None
    ) -> ArrivalRecord:
        """Mark the arrival `status`, with how its earlier tasks were re-evaluated (`reeval`)."""
        from registry.orm import utcnow

        self.db.write(lambda uow: uow.arrivals.finish_arrival(arrival_id, status, utcnow(), reeval))
        return next(a for a in self.arrivals(None) if a.id == arrival_id)

    def arrivals(self, method: str | None = None, stream: str | None = None) -> list[ArrivalRecord]:
        """Arrivals by stream, method and position (all streams when `stream` is None)."""

        def read(uow: UnitOfWork) -> list[ArrivalRecord]:
            sid = None if stream is None else uow.streams.find(check_stream(stream))
            if stream is not None and sid is None:
                return []
            return uow.arrivals.arrivals(method, sid)

        return self.db.read(read)

    def evaluations_mark(self, stream: str) -> tuple[Any, ...] | None:
        """A cheap token that changes whenever `evaluations(stream)` would (None: no stream)."""

        def read(uow: UnitOfWork) -> tuple[Any, ...] | None:
            sid = uow.streams.find(check_stream(stream))
            return None if sid is None else uow.evaluations.mark(sid)

        return self.db.read(read)

    def evaluations(self, stream: str) -> list[EvaluationRecord]:
        """Every score recorded at a position of `stream`, oldest first."""

        def read(uow: UnitOfWork) -> list[EvaluationRecord]:
            sid = uow.streams.find(check_stream(stream))
            return [] if sid is None else uow.evaluations.in_stream(sid)

        return self.db.read(read)
