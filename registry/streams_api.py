"""The registry's stream records: task embeddings (and routing keys), arrivals, and the
registry's generation. A mixin of `registry.api.Registry`, kept apart to keep files small.

Embeddings are little-endian float32 bytes in the database and come back as read-only float32
numpy views of those bytes: no Python float per value (a task's routing keys are 256 x 2,304
values on minilm).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from registry.records import ArrivalRecord, TaskEmbeddingRecord
from registry.stream_repository import embedding_record, pack_vector, unpack_vector
from registry.uow import UnitOfWork
from tasks.spec import check_name

if TYPE_CHECKING:
    from registry.uow import Database


class StreamRecords:
    """Embeddings, arrivals and the generation, over `self.db`."""

    db: Database

    def put_embedding(self, task: str, method: str, vector: Any) -> TaskEmbeddingRecord:
        """Store a task embedding (any 1-D float sequence, array or tensor) under `method`."""
        values = _float32(vector)

        def write(uow: UnitOfWork) -> TaskEmbeddingRecord:
            t = uow.tasks.get(check_name(task))
            eid = uow.streams.add_embedding(
                task_id=t.id, method=method, dim=len(values), vector=pack_vector(values)
            )
            row, name = uow.streams.embeddings(method, t.id)[0]
            assert row.id == eid
            return embedding_record(row, name, unpack_vector(row.vector))

        return self.db.write(write)

    def embeddings(self, method: str) -> list[TaskEmbeddingRecord]:
        """The newest embedding of every task under `method` (older ones are not read)."""

        def read(uow: UnitOfWork) -> list[TaskEmbeddingRecord]:
            return [
                embedding_record(row, name, unpack_vector(row.vector))
                for row, name in uow.streams.newest_embeddings(method)
            ]

        return self.db.read(read)

    def generation(self) -> str:
        """A token that changes whenever tasks, prefixes (versions, current, status) or
        embeddings change: what a cache of anything fitted on them (the router) is keyed by.
        Read in one query from row counts and ids; no schema of its own."""
        counts = self.db.read(lambda uow: uow.streams.generation())
        url = self.db.engine.url.render_as_string(hide_password=True)
        return hashlib.sha256(f"{url}|{counts}".encode()).hexdigest()[:32]

    def start_arrival(self, *, position: int, task: str, method: str) -> ArrivalRecord:
        def write(uow: UnitOfWork) -> int:
            t = uow.tasks.get(check_name(task))
            return uow.streams.add_arrival(
                position=position, task_id=t.id, method=method, status="running"
            )

        arrival_id = self.db.write(write)
        return next(a for a in self.arrivals(method) if a.id == arrival_id)

    def finish_arrival(self, arrival_id: int, status: str) -> ArrivalRecord:
        from registry.orm import utcnow

        self.db.write(lambda uow: uow.streams.finish_arrival(arrival_id, status, utcnow()))
        return next(a for a in self.arrivals(None) if a.id == arrival_id)

    def arrivals(self, method: str | None = None) -> list[ArrivalRecord]:
        return self.db.read(lambda uow: uow.streams.arrivals(method))


def _float32(vector: Any) -> np.ndarray:
    """A flat float32 array of any sequence, array or (CPU or not) tensor."""
    if hasattr(vector, "detach"):  # a torch tensor, without importing torch here
        vector = vector.detach().to("cpu").float().numpy()
    return np.asarray(vector, dtype=np.float32).reshape(-1)
