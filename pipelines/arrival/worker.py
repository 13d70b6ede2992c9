"""A worker: takes arrival jobs from the registry's queue and runs them, under a lease.

    continual worker [--until-empty] [--max-jobs N] [--stream S ...]

Plain `learn` and `stream run` queue their jobs and run them in-process through the same
`Worker`, so there is one path. While a job runs, a heartbeat thread renews its lease every
third of the lease; a worker that is killed stops renewing, and once the lease has expired
another worker takes the job and finishes it (every step tolerates what an earlier attempt
wrote). A worker that finds its own lease lost stops the job at the next step.

Failures: a user error (bad data, a name taken: `ContinualError`) fails the job at once; any
other exception fails the attempt and the job is queued again until its attempts run out. The
first SIGINT/SIGTERM lets the running job finish and then stops; a second stops at once (the
job is handed back to the queue).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from continual.backbones import Backbone, fingerprint, load_backbone
from pipelines import ledger
from pipelines.arrival.book import TaskBook
from pipelines.arrival.live import JobProgress
from pipelines.arrival.plan import ArrivalJob
from pipelines.arrival.steps import LeaseLost, StreamArrival
from pipelines.baseline_runner import BaselineRunner, wanted
from pipelines.jobs import runtime as run_environment
from pipelines.progress import Progress, to_stderr
from pipelines.settings import RegistryArgs, pick_threads, stream_home
from registry import JobRecord, Registry
from registry.queue import lease_seconds
from tasks.errors import ConfigError, ContinualError, IntegrityError

TERMINAL = ("done", "failed", "cancelled")


def worker_id() -> str:
    """`host:pid:random`: unique per worker process, readable in `continual jobs`. The host part
    is $CONTINUAL_WORKER_NAME where set (a pod's or node's name)."""
    host = os.environ.get("CONTINUAL_WORKER_NAME") or socket.gethostname()
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def gone(worker: str) -> bool:
    """Whether `worker` (an id from `worker_id`) was a process of this machine that no longer
    runs: its job need not wait for the lease to expire. Other machines' workers: never."""
    host, _, rest = worker.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """A killed child not yet reaped still answers kill(0); /proc says it is a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class Heartbeat:
    """Renews a job's lease from a thread until stopped; `alive()` turns False once the lease
    was found lost (another worker took the job)."""

    def __init__(self, reg: Registry, job_id: int, worker: str, lease_s: float) -> None:
        self.reg, self.job_id, self.worker, self.lease_s = reg, job_id, worker, lease_s
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def alive(self) -> bool:
        return not self._lost.is_set()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                if not self.reg.queue.heartbeat(self.job_id, self.worker, lease_s=self.lease_s):
                    self._lost.set()
                    return
            except Exception:  # noqa: BLE001 - a database hiccup: try again next beat
                continue


class Worker:
    """Runs jobs from one registry; keeps each backbone it loads for the next job."""

    def __init__(
        self,
        *,
        registry: RegistryArgs,
        progress: bool = True,
        say: Callable[[str], None] = to_stderr,
        lease_s: float | None = None,
        poll_s: float = 1.0,
        report: bool = True,
        name: str | None = None,
        migrate: bool = True,
        help_searches: bool = False,
    ) -> None:
        self.registry = registry
        self.bars = progress
        self.say = say
        self.log = Progress(say)
        self.lease_s = lease_s or lease_seconds()
        self.poll_s = poll_s
        self.report = report
        self.id = name or worker_id()
        self.migrate = migrate  # False: a schema behind is refused (`continual worker`)
        # (stream, backbone name) -> a function that re-scores tasks elsewhere: Ray tasks
        self.fan_out: Callable[[str, str], Callable[[list[str], int], dict]] | None = None
        self._backbones: dict[str, Backbone] = {}
        self._books: dict[str, TaskBook] = {}
        self._route_cache: dict[str, Any] = {}
        self._stopping = threading.Event()
        # idle, add trials to other workers' running searches (`continual worker` does)
        self.help_searches = help_searches
        self._helped: set[tuple[int, int]] = set()

    # ----------------------------------------------------------------------------- the loop

    def serve(
        self,
        *,
        streams: list[str] | None = None,
        until_empty: bool = False,
        max_jobs: int | None = None,
        until_jobs: tuple[int, ...] = (),
        raise_errors: bool = False,
    ) -> list[dict[str, Any]]:
        """Take and run jobs until told to stop: nothing runnable is left (`until_empty`),
        `max_jobs` ran, or every job of `until_jobs` has ended. Returns each job's outcome."""
        outcomes: list[dict[str, Any]] = []
        with self.registry.open(migrate=self.migrate) as reg:
            while not self._stopping.is_set():
                if until_jobs and all(reg.queue.get(j).state in TERMINAL for j in until_jobs):
                    break
                job = reg.queue.claim(self.id, lease_s=self.lease_s, streams=streams, dead=gone)
                if job is None:
                    if self.help_searches and self._help(reg, streams):
                        continue
                    if until_empty and reg.queue.runnable(streams) == 0:
                        break
                    if until_jobs and self._blocked(reg, until_jobs):
                        break
                    time.sleep(self.poll_s)
                    continue
                outcomes.append(self.run(reg, job, raise_errors=raise_errors))
                if max_jobs is not None and len(outcomes) >= max_jobs:
                    break
        return outcomes

    def stop(self) -> None:
        """Stop after the running job (if any); the loop ends at its next look at the queue."""
        self._stopping.set()

    def stop_on_signals(self) -> None:
        """First SIGINT/SIGTERM: finish the running job, then stop. Second: stop now."""

        def handler(signum: int, frame: Any) -> None:
            if self._stopping.is_set():
                raise KeyboardInterrupt
            self._stopping.set()
            self.say(f"worker {self.id}: stopping after the running job (again to stop now)")

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    @staticmethod
    def _blocked(reg: Registry, jobs: tuple[int, ...]) -> bool:
        """Whether a job we wait for can never run: its stream's head failed."""
        for j in jobs:
            job = reg.queue.get(j)
            if job.state in TERMINAL:
                continue
            heads = [h for h in reg.queue.list(stream=job.stream, state="failed")]
            if heads and heads[0].id < job.id:
                return True
        return False

    # ------------------------------------------------------------------------------ one job

    def run(self, reg: Registry, job: JobRecord, *, raise_errors: bool = False) -> dict[str, Any]:
        """Run one claimed job to its end and settle it in the queue."""
        began = time.perf_counter()
        self.say(f"job {job.id} · {job.task} in stream {job.stream} (attempt {job.attempts})")
        try:
            with Heartbeat(reg, job.id, self.id, self.lease_s) as beat:
                outcome = self._arrival(reg, job, beat.alive, JobProgress(reg, job.id, self.id))
        except LeaseLost:
            self.say(f"job {job.id}: lease lost; another worker finishes it")
            return {"job": job.id, "task": job.task, "stream": job.stream, "state": "lost"}
        except ContinualError as e:
            reg.queue.fail(job.id, self.id, error=f"{type(e).__name__}: {e}", retry=False)
            if raise_errors:
                raise
            self.say(f"job {job.id} failed: {e}")
            return {"job": job.id, "task": job.task, "stream": job.stream, "state": "failed"}
        except Exception as e:
            after = reg.queue.fail(job.id, self.id, error=traceback.format_exc(), retry=True)
            if raise_errors:
                raise
            self.say(f"job {job.id}: attempt {job.attempts} failed ({e!r}); now {after.state}")
            return {"job": job.id, "task": job.task, "stream": job.stream, "state": after.state}
        except BaseException:  # interrupted: hand the job back at once rather than at expiry
            reg.db.write(lambda uow: uow.jobs.settle(job.id, state="queued", worker_id=self.id))
            raise
        outcome["seconds"] = round(time.perf_counter() - began, 2)
        if not reg.queue.complete(job.id, self.id, result=outcome, position=outcome["position"]):
            self.say(f"job {job.id}: finished, but another worker had taken it over")
        return {"job": job.id, "state": "done", **outcome}

    def _arrival(
        self, reg: Registry, job: JobRecord, alive: Callable[[], bool], live: JobProgress
    ) -> dict[str, Any]:
        arrival = ArrivalJob.from_dict(job.payload)
        log = Progress(self.say, on_phase=live.phase)
        stream = job.stream
        choice = pick_threads(busy=bool(self._backbones))
        self.say(
            f"[{stream}] {arrival.plan.name} · {choice.threads} torch thread(s): {choice.reason}"
        )
        backbone = self._backbone(reg, arrival.backbone, stream)
        runtime = {
            "worker": self.id,
            **run_environment(backbone),
            "thread_choice": choice.to_dict(),
        }
        book = self._books.setdefault(stream, TaskBook(stream))
        step = StreamArrival(
            reg=reg,
            backbone=backbone,
            job=arrival,
            stream=stream,
            book=book,
            log=log,
            bars=self.bars,
            runtime=runtime,
            route_cache=self._route_cache.setdefault(stream, {}),
            alive=alive,
            observe=live.step,
            fan_out=self.fan_out(stream, arrival.backbone) if self.fan_out else None,
        )
        tag = f"[{stream} {step.position() + 1}] {arrival.plan.name}"
        prefix = step.run(tag)
        position = prefix.pop("position")
        outcome: dict[str, Any] = {
            "task": arrival.plan.name,
            "stream": stream,
            "position": position,
            "status": "done",
            "runtime": runtime,
            ledger.PREFIX: prefix,
        }
        home = stream_home(self.registry.home, stream)
        runner = BaselineRunner(
            home=home,
            backbone=backbone,
            book=book,
            progress=log,
            bars=self.bars,
            stream=stream,
        )
        for method, options in wanted(reg, home, arrival.baselines, stream).items():
            if not alive():
                raise LeaseLost(f"job {job.id}: lease lost")
            outcome[method] = runner.catch_up(reg, method, options, tag)
        self._evidence(backbone, home, position, arrival.plan.name)
        if self.report:
            from pipelines.report import write_report

            with log.step(tag, "report"):
                report = write_report(reg, stream=stream)
            outcome["report"] = report
        return outcome

    def catch_up(self, stream: str, backbone_name: str, baselines: Any) -> None:
        """Run the stream's baselines over every task they have not learnt (a baseline added
        after the stream's arrivals ran), outside any job."""
        with self.registry.open() as reg:
            backbone = self._backbone(reg, backbone_name, stream)
            home = stream_home(self.registry.home, stream)
            book = self._books.setdefault(stream, TaskBook(stream))
            runner = BaselineRunner(
                home=home,
                backbone=backbone,
                book=book,
                progress=self.log,
                bars=self.bars,
                stream=stream,
            )
            for method, options in wanted(reg, home, baselines, stream).items():
                runner.catch_up(reg, method, options, f"[{stream}] catch-up")

    def _help(self, reg: Registry, streams: list[str] | None) -> bool:
        """Add trials to a search another worker's arrival is running; True if one was."""
        from pipelines.arrival.tuned import help_a_search

        def backbone_for(name: str, stream: str) -> Backbone:
            pick_threads(busy=bool(self._backbones))
            return self._backbone(reg, name, stream)

        running = reg.queue.list(state="running", limit=50)
        mine = [j for j in running if not streams or j.stream in streams]
        return help_a_search(reg, mine, self._helped, self.id, backbone_for, self.say)

    # ------------------------------------------------------------------------------ plumbing

    def _backbone(self, reg: Registry, name: str, stream: str) -> Backbone:
        if name not in self._backbones:
            self._backbones[name] = load_backbone(name)
        backbone = self._backbones[name]
        tasks = ledger.stream_tasks(reg, stream)
        if tasks:
            book = self._books.setdefault(stream, TaskBook(stream))
            used = reg.prefix(book.task(reg, tasks[0]).prefix_id).backbone_fingerprint
            if used != backbone.fingerprint:
                raise ConfigError(
                    f"stream {stream} runs on another backbone (fingerprint {used[:12]}…) "
                    f"than {name}; use its backbone, or another stream"
                )
        return backbone

    @staticmethod
    def _evidence(backbone: Backbone, home: Any, position: int, task: str) -> None:
        """Check the frozen backbone is unchanged and keep the evidence; a change is a bug.

        On CPU float32 the weights are hashed again where they live (no copy); elsewhere (a GPU,
        another dtype) the check is torch's per-tensor version counters, bumped by every
        in-place write: no copy of the weights to the CPU after every arrival."""
        import json

        rehash = backbone.runtime.deterministic
        unchanged = backbone.unchanged()
        now = fingerprint(backbone.model) if rehash else backbone.fingerprint
        if not unchanged:
            now = "changed in place since load (version counters)"
        folder = home / "stream" / "evidence"
        folder.mkdir(parents=True, exist_ok=True)
        doc = {
            "position": position,
            "task": task,
            "backbone": backbone.name,
            "fingerprint_at_load": backbone.fingerprint,
            "fingerprint_after_arrival": now,
            "checked_by": "sha256 of the weights" if rehash else "version counters",
            "runtime": backbone.runtime.to_dict(),
            "equal": now == backbone.fingerprint,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        tmp = folder / f".{position:04d}.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, folder / f"{position:04d}.json")
        if now != backbone.fingerprint:
            raise IntegrityError(
                f"the frozen backbone {backbone.name} changed during arrival {position} ({task}): "
                f"fingerprint {now[:12]}… vs {backbone.fingerprint[:12]}… at load; this is a bug"
            )
