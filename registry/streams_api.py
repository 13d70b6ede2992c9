"""The registry's task embeddings (and routing keys) and its generation. A mixin of
`registry.api.Registry`, kept apart to keep files small (streams and their arrivals are
`registry.streams.StreamBook`, `reg.streams`).

Embeddings are little-endian float32 bytes in the database and come back as read-only float32
numpy views of those bytes: no Python float per value (a task's routing keys are 256 x 2,304
values on minilm).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from registry.records import TaskEmbeddingRecord, embedding_stamp
from registry.repository import aware
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
            eid = uow.arrivals.add_embedding(
                task_id=t.id, method=method, dim=len(values), vector=pack_vector(values)
            )
            row, name = uow.arrivals.embeddings(method, t.id)[0]
            assert row.id == eid
            return embedding_record(row, name, unpack_vector(row.vector))

        return self.db.write(write)

    def embeddings(self, method: str) -> list[TaskEmbeddingRecord]:
        """The newest embedding of every task under `method` (older ones are not read)."""

        def read(uow: UnitOfWork) -> list[TaskEmbeddingRecord]:
            return [
                embedding_record(row, name, unpack_vector(row.vector))
                for row, name in uow.arrivals.newest_embeddings(method)
            ]

        return self.db.read(read)

    def embedding_ids(self, method: str) -> dict[str, tuple[int, str]]:
        """Task name -> (row id, a stamp unique to that row) of its newest embedding under
        `method`, vectors not read: what tells a cache built on embeddings (the ridge router's
        statistics) what changed. The stamp (id and creation time) tells a row from the row
        of a registry made again from nothing, whose ids start over."""
        found = self.db.read(lambda uow: uow.arrivals.newest_embedding_ids(method))
        return {t: (i, embedding_stamp(i, aware(created))) for t, (i, created) in found.items()}

    def embeddings_by_id(self, ids: Sequence[int]) -> list[TaskEmbeddingRecord]:
        """The embeddings with these row ids (in id order; ids no longer stored are left out)."""

        def read(uow: UnitOfWork) -> list[TaskEmbeddingRecord]:
            return [
                embedding_record(row, name, unpack_vector(row.vector))
                for row, name in uow.arrivals.embeddings_by_id(list(ids))
            ]

        return self.db.read(read) if ids else []

    def generation(self) -> str:
        """A token that changes whenever tasks, prefixes (versions, current, status) or
        embeddings change: what a cache of anything fitted on them (the router) is keyed by.
        Read in one query from row counts and ids; no schema of its own."""
        counts = self.db.read(lambda uow: uow.arrivals.generation())
        url = self.db.engine.url.render_as_string(hide_password=True)
        return hashlib.sha256(f"{url}|{counts}".encode()).hexdigest()[:32]


def _float32(vector: Any) -> np.ndarray:
    """A flat float32 array of any sequence, array or (CPU or not) tensor."""
    if hasattr(vector, "detach"):  # a torch tensor, without importing torch here
        vector = vector.detach().to("cpu").float().numpy()
    return np.asarray(vector, dtype=np.float32).reshape(-1)
