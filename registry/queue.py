"""The job queue: arrivals as rows with a state, attempts and a lease, in the registry database.

    job = reg.queue.enqueue(stream="nightly", task="trec", payload={...})
    job = reg.queue.claim("host:pid:uuid", lease_s=60)       # None when nothing can run now
    reg.queue.heartbeat(job.id, worker, lease_s=60)          # False: the job is no longer ours
    reg.queue.complete(job.id, worker, result={...}, position=3)

A worker holds a running job while its lease lasts and renews it by heartbeats. A worker that
is killed or loses its machine stops renewing; once the lease has expired any worker may take
the job again (its attempt counts), and because every write an arrival makes tolerates the
rows a previous attempt left, the retaken job finishes the same way an uninterrupted one does.

Order: the jobs of a stream run one at a time, oldest first. Only a stream's head (its oldest
job not done or cancelled) can be taken, so a stream whose head failed waits until that job is
retried or cancelled; different streams run in parallel. Clocks: leases are compared with the
clock of the worker that reads them; keep workers' clocks in sync (NTP) to well within a lease.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import exc as sa_exc

from registry.orm import JOB_STATES, utcnow
from registry.records import JobRecord
from registry.streams import check_stream
from registry.uow import Database, UnitOfWork
from tasks.errors import ConfigError
from tasks.spec import check_name

#: A lease this long survives a slow step between heartbeats; a dead worker's job waits at
#: most this long before another worker takes it ($CONTINUAL_LEASE_S overrides it).
LEASE_S = 60.0
MAX_PAGE = 10_000


def lease_seconds() -> float:
    """The lease workers take: $CONTINUAL_LEASE_S, else `LEASE_S`."""
    import os

    raw = os.environ.get("CONTINUAL_LEASE_S")
    if not raw:
        return LEASE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"CONTINUAL_LEASE_S={raw!r} must be a number of seconds above 0")
    return value


class JobQueue:
    """Jobs in one registry database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---------------------------------------------------------------------------- producers

    def enqueue(
        self,
        *,
        stream: str,
        task: str,
        payload: dict[str, Any],
        kind: str = "arrival",
        dataset: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Queue `task`'s arrival in `stream`. A task has one live job per stream: enqueuing it
        again is refused with the job that holds it. `dataset` (a `DataStore.stage` row whose
        file is already stored) is recorded in the same unit of work as the job."""
        check_stream(stream)
        check_name(task)

        def write(uow: UnitOfWork) -> int:
            if dataset is not None:
                uow.datasets.add(**dataset)
            sid = uow.streams.ensure(stream)
            held = uow.jobs.live_for(sid, task)
            if held is not None:
                raise ConfigError(
                    f"task {task} already has job {held.id} ({held.state}) in stream {stream}; "
                    f"see `continual jobs --stream {stream}`"
                )
            return uow.jobs.add(stream_id=sid, kind=kind, task=task, payload=payload)

        try:
            job_id = self.db.write(write, retry_conflicts=False)
        except sa_exc.IntegrityError:  # another producer queued the same task just now
            raise ConfigError(
                f"task {task} was just queued in stream {stream} by another process; "
                f"see `continual jobs --stream {stream}`"
            ) from None
        return self.get(job_id)

    def live(self, *, stream: str, task: str) -> JobRecord | None:
        """`task`'s job in `stream` that is not cancelled, if any (a task has one per stream)."""

        def read(uow: UnitOfWork) -> JobRecord | None:
            sid = uow.streams.find(check_stream(stream))
            return None if sid is None else uow.jobs.live_for(sid, check_name(task))

        return self.db.read(read)

    def cancel(self, job_id: int) -> JobRecord:
        """Cancel a queued job (a running one belongs to its worker; a failed one that never
        took a stream position may be cancelled too, to unblock its stream)."""
        job = self.get(job_id)

        def write(uow: UnitOfWork) -> bool:
            if job.state == "failed" and job.position is None:
                return uow.jobs.settle(job_id, state="cancelled", from_states=("failed",))
            return uow.jobs.settle(job_id, state="cancelled", from_states=("queued",))

        if not self.db.write(write):
            now = self.get(job_id)
            why = (
                "it registered its task at a stream position; retry it instead"
                if now.state == "failed"
                else "only queued jobs can be cancelled"
            )
            raise ConfigError(f"job {job_id} is {now.state}: {why}")
        return self.get(job_id)

    def retry(self, job_id: int) -> JobRecord:
        """Queue a failed job again, with fresh attempts."""
        moved = self.db.write(
            lambda uow: uow.jobs.settle(
                job_id, state="queued", from_states=("failed",), attempts=0, finished_at=None
            )
        )
        if not moved:
            raise ConfigError(
                f"job {job_id} is {self.get(job_id).state}: only a failed job retries"
            )
        return self.get(job_id)

    # ------------------------------------------------------------------------------ workers

    def claim(
        self,
        worker_id: str,
        *,
        lease_s: float = LEASE_S,
        streams: list[str] | None = None,
        dead: Callable[[str], bool] | None = None,
    ) -> JobRecord | None:
        """Take the oldest job that may run now (a stream's head that is queued, or running
        under an expired lease), or None. A job whose worker was lost `max_attempts` times is
        failed instead of taken again. `dead(worker_id)` may say that a running job's worker
        is known to be gone (e.g. a process of this machine that no longer exists): its lease
        counts as expired at once."""

        def write(uow: UnitOfWork) -> int | None:
            now = utcnow()
            sids = None
            if streams is not None:
                sids = [s for s in (uow.streams.find(check_stream(n)) for n in streams) if s]
            for head in uow.jobs.heads(sids):
                if head.state == "failed":
                    continue  # the stream waits for a retry or a cancel
                gone = head.worker_id is not None and dead is not None and dead(head.worker_id)
                if head.state == "running" and not (gone or _expired(head, now)):
                    continue
                if head.state == "running" and head.attempts >= head.max_attempts:
                    uow.jobs.settle(
                        head.id,
                        state="failed",
                        error=f"its worker was lost {head.attempts} time(s) (lease expired); "
                        f"last: {head.worker_id}",
                    )
                    continue
                if uow.jobs.take(head.id, worker_id, now, lease_s, force=gone):
                    return head.id
            return None

        job_id = self.db.write(write)
        return None if job_id is None else self.get(job_id)

    def heartbeat(self, job_id: int, worker_id: str, *, lease_s: float = LEASE_S) -> bool:
        return self.db.write(lambda uow: uow.jobs.renew(job_id, worker_id, utcnow(), lease_s))

    def progress(self, job_id: int, worker_id: str, progress: dict[str, Any]) -> bool:
        """Record what our running job is doing now; False if it is no longer ours."""
        return self.db.write(lambda uow: uow.jobs.report(job_id, worker_id, progress))

    def complete(
        self, job_id: int, worker_id: str, *, result: dict[str, Any], position: int | None
    ) -> bool:
        """Mark our job done; False if it was no longer ours (its lease expired and another
        worker took it: that worker finishes it, and every write we made is one it tolerates)."""
        return self.db.write(
            lambda uow: uow.jobs.settle(
                job_id,
                state="done",
                worker_id=worker_id,
                result=result,
                position=position,
                error=None,
            )
        )

    def fail(
        self, job_id: int, worker_id: str, *, error: str, retry: bool, position: int | None = None
    ) -> JobRecord:
        """Record a failed attempt: back to queued while attempts remain and the error may pass
        (`retry`), else failed."""

        def write(uow: UnitOfWork) -> None:
            job = uow.jobs.get(job_id)
            if job is None:
                return
            again = retry and job.attempts < job.max_attempts
            extra = {"position": position} if position is not None else {}
            uow.jobs.settle(
                job_id,
                state="queued" if again else "failed",
                worker_id=worker_id,
                error=error[-4000:],
                **extra,
            )

        self.db.write(write)
        return self.get(job_id)

    # ------------------------------------------------------------------------------ queries

    def get(self, job_id: int) -> JobRecord:
        found = self.db.read(lambda uow: uow.jobs.get(job_id))
        if found is None:
            raise ConfigError(f"job {job_id} is not in the registry; `continual jobs` lists them")
        return found

    def list(
        self,
        *,
        stream: str | None = None,
        state: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobRecord]:
        if state is not None and state not in JOB_STATES:
            raise ConfigError(f"--state {state!r} is not one of {', '.join(JOB_STATES)}")
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise ConfigError(f"--limit must be 1-{MAX_PAGE} and --offset 0 or more")

        def read(uow: UnitOfWork) -> list[JobRecord]:
            sid = None if stream is None else uow.streams.get(check_stream(stream))
            return uow.jobs.page(sid, state, limit, offset)

        return self.db.read(read)

    def count(self, *, stream: str | None = None, states: tuple[str, ...] = ()) -> int:
        def read(uow: UnitOfWork) -> int:
            sid = None if stream is None else uow.streams.find(check_stream(stream))
            if stream is not None and sid is None:
                return 0
            return uow.jobs.count(sid, states)

        return self.db.read(read)

    def runnable(self, streams: list[str] | None = None) -> int:
        """Jobs that a worker could still run: queued or running (a running one may be lost
        and retaken). A stream blocked by a failed head counts nothing behind it."""

        def read(uow: UnitOfWork) -> int:
            sids = None
            if streams is not None:
                sids = [s for s in (uow.streams.find(check_stream(n)) for n in streams) if s]
            return sum(1 for h in uow.jobs.heads(sids) if h.state in ("queued", "running"))

        return self.db.read(read)


def _expired(job: JobRecord, now: datetime) -> bool:
    return job.lease_expires_at is None or job.lease_expires_at < now
