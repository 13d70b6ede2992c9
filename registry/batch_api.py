"""Reads of many rows at once, for whatever must not cost one query per task (a stream's report
refreshed after every arrival would otherwise grow quadratically with the stream). A mixin of
`registry.api.Registry`, kept apart to keep files small.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from registry.records import LineageEdge, PrefixRecord, RunRecord, TaskRecord
from registry.uow import UnitOfWork

if TYPE_CHECKING:
    from registry.uow import Database

_LINEAGE_DEPTH = 64


class BatchReads:
    """Tasks, prefixes, runs and lineages by the batch, over `self.db`."""

    db: Database

    def tasks_named(self, names: Iterable[str]) -> dict[str, TaskRecord]:
        """The tasks with these names (missing names are left out)."""
        return self.db.read(lambda uow: uow.tasks.named(names))

    def prefixes_by_id(self, ids: Iterable[int]) -> dict[int, PrefixRecord]:
        return self.db.read(lambda uow: uow.prefixes.many(ids))

    def current_prefixes(self, names: Iterable[str]) -> dict[str, PrefixRecord]:
        """Each named task's current prefix (tasks with none are left out)."""

        def read(uow: UnitOfWork) -> dict[str, PrefixRecord]:
            tasks = uow.tasks.named(names)
            by_id = uow.prefixes.current_of(t.id for t in tasks.values())
            return {name: by_id[t.id] for name, t in tasks.items() if t.id in by_id}

        return self.db.read(read)

    def runs_by_id(self, ids: Iterable[int]) -> dict[int, RunRecord]:
        return self.db.read(lambda uow: uow.runs.many(ids))

    def lineages(self, prefix_ids: Iterable[int]) -> dict[int, list[LineageEdge]]:
        """The ancestry of each prefix, as `Registry.lineage` gives it (depth 1 = direct
        sources), read one depth at a time for all of them together."""

        def read(uow: UnitOfWork) -> dict[int, list[LineageEdge]]:
            roots = sorted(set(prefix_ids))
            out: dict[int, list[LineageEdge]] = {r: [] for r in roots}
            frontier = {r: [r] for r in roots}  # root -> prefixes at the current depth
            seen = {r: {r} for r in roots}
            for depth in range(1, _LINEAGE_DEPTH + 1):
                wanted = sorted({p for ps in frontier.values() for p in ps})
                if not wanted:
                    break
                edges: dict[int, list[LineageEdge]] = {}
                for e in uow.prefixes.lineage(wanted):
                    edges.setdefault(e.prefix_id, []).append(e)
                nxt: dict[int, list[int]] = {}
                for root, ps in frontier.items():
                    found = [replace(e, depth=depth) for p in ps for e in edges.get(p, [])]
                    out[root] += found
                    seen[root].update(ps)
                    nxt[root] = sorted({e.source_prefix_id for e in found} - seen[root])
                frontier = {r: ps for r, ps in nxt.items() if ps}
            return out

        return self.db.read(read)
