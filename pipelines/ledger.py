"""What the registry says about a task stream.

A registry holds many named streams (`default` unless one is named); every function here reads
or writes one of them. A stream is defined by the prefix method's arrivals: the task at
position p is the one whose `prefix` arrival at p is done. Every method (ours and each baseline) has its own arrivals and
its evaluations carry `method` and `position`, so the accuracy matrix of a method is read
straight from the registry: `R[i][j]` = its score on task j recorded at position i.

Scores of the starting points (for forward transfer) are evaluations of the arriving task under
the methods `<method>/untrained-init` and `<method>/untrained-random` at its own position.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from continual.inference import EvalResult
from registry import ArrivalRecord, EvaluationRecord, Registry
from registry.streams import DEFAULT_STREAM

PREFIX = "prefix"
UNTRAINED = ("init", "random")
# The task-agnostic evaluation of the prefixes (the task inferred by routing): the end-to-end
# score per task, and the fraction of its inputs routed to it.
ROUTED = "prefix/routed"
ROUTING = "prefix/routing"


def untrained_method(method: str, which: str) -> str:
    """The method name under which `method`'s untrained starting point is recorded."""
    assert which in UNTRAINED
    return f"{method}/untrained-{which}"


def done_arrivals(reg: Registry, method: str, stream: str = DEFAULT_STREAM) -> list[ArrivalRecord]:
    """The finished arrivals of `method` in the stream, by position."""
    return [a for a in reg.streams.arrivals(method, stream) if a.status == "done"]


def arrival_of(
    reg: Registry, method: str, task: str, stream: str = DEFAULT_STREAM
) -> ArrivalRecord | None:
    """`task`'s arrival row for `method` in the stream (done or not), if it has one."""
    return next((a for a in reg.streams.arrivals(method, stream) if a.task == task), None)


def stream_tasks(reg: Registry, stream: str = DEFAULT_STREAM) -> list[str]:
    """The task at each position of the stream, in order (the prefix method's done arrivals);
    a gap (a missing position) ends the stream there."""
    tasks = []
    for p, a in enumerate(done_arrivals(reg, PREFIX, stream)):
        if a.position != p:
            break
        tasks.append(a.task)
    return tasks


def methods_in(reg: Registry, stream: str = DEFAULT_STREAM) -> list[str]:
    """Every method with an arrival in the stream: `prefix` first, then the baselines."""
    found = {a.method for a in reg.streams.arrivals(None, stream)}
    return ([PREFIX] if PREFIX in found else []) + sorted(found - {PREFIX})


_SCORES: dict[tuple[str, str], tuple[Any, dict[str, list[EvaluationRecord]]]] = {}
_SCORES_LOCK = threading.Lock()  # the service reads scores from several threads


def scores(reg: Registry, stream: str = DEFAULT_STREAM) -> dict[str, list[EvaluationRecord]]:
    """Every score recorded in the stream, by task, oldest first. Read in one query, and kept
    while the stream's scores are unchanged (a one-row query says so): an arrival asks several
    times, and at T = 1,000 a stream holds tens of thousands of scores."""
    where = (reg.url, stream)
    mark = reg.streams.evaluations_mark(stream)
    kept = _SCORES.get(where)
    if kept is None or kept[0] != mark or mark is None:
        out: dict[str, list[EvaluationRecord]] = {}
        for e in reg.streams.evaluations(stream):
            out.setdefault(e.task, []).append(e)
        kept = (mark, out)
        with _SCORES_LOCK:
            while len(_SCORES) >= 16:
                _SCORES.pop(next(iter(_SCORES)))
            _SCORES[where] = kept
    return {task: list(rows) for task, rows in kept[1].items()}


def find(
    evaluations: Sequence[EvaluationRecord], method: str, position: int
) -> EvaluationRecord | None:
    """The first evaluation of `method` at `position` among one task's evaluations."""
    for e in evaluations:
        if e.method == method and e.position == position:
            return e
    return None


@dataclass(frozen=True)
class MethodView:
    """One method's view of the stream: its matrix and starting-point scores, with hashes."""

    method: str
    tasks: tuple[str, ...]
    R: list[list[float | None]]
    sha: list[list[str | None]]
    init: list[float | None]
    random: list[float | None]
    # carried[i][j]: R[i][j] was not re-scored at arrival i but carried from R[i-1][j] by a
    # proof (the backbone's and the module's hashes verified: `--reeval audit|proof`)
    carried: list[list[bool]] | None = None


def method_view(
    method: str,
    tasks: Sequence[str],
    evaluations: dict[str, list[EvaluationRecord]],
    n_done: int,
    proven: Sequence[bool] = (),
) -> MethodView:
    """The method's T x T matrix over its first `n_done` positions (None where not recorded);
    `proven[i]`: arrival i verified the earlier tasks' hashes, so the scores it did not measure
    are carried from the row above (and marked in `carried`)."""
    T = min(n_done, len(tasks))
    R: list[list[float | None]] = [[None] * T for _ in range(T)]
    sha: list[list[str | None]] = [[None] * T for _ in range(T)]
    for j, task in enumerate(tasks[:T]):
        for i in range(j, T):
            e = find(evaluations.get(task, []), method, i)
            if e is not None:
                R[i][j], sha[i][j] = e.value, e.predictions_sha256
    starts: dict[str, list[float | None]] = {}
    for which in UNTRAINED:
        starts[which] = []
        for j, task in enumerate(tasks[:T]):
            e = find(evaluations.get(task, []), untrained_method(method, which), j)
            starts[which].append(e.value if e is not None else None)
    carried = carry(R, sha, proven) if any(proven) else None
    return MethodView(method, tuple(tasks[:T]), R, sha, starts["init"], starts["random"], carried)


def carry(
    R: list[list[float | None]],
    sha: list[list[str | None]],
    proven: Sequence[bool],
) -> list[list[bool]]:
    """Fill, in place, each unmeasured cell R[i][j] (j < i) of an arrival `i` whose record says
    a proof covered the earlier tasks, with R[i-1][j] (itself measured or carried); returns which
    cells were carried."""
    T = len(R)
    carried = [[False] * T for _ in range(T)]
    for i in range(1, T):
        if i >= len(proven) or not proven[i]:
            continue
        for j in range(i):
            if R[i][j] is None and R[i - 1][j] is not None:
                R[i][j], sha[i][j] = R[i - 1][j], sha[i - 1][j]
                carried[i][j] = True
    return carried


def read_stream(reg: Registry, stream: str = DEFAULT_STREAM) -> dict[str, Any]:
    """Tasks, every task's evaluations in the stream, the stream's arrivals, and per method its
    done-arrival count and view: three queries, whatever the stream's length."""
    arrivals = reg.streams.arrivals(None, stream)
    done: dict[str, list[ArrivalRecord]] = {}
    for a in arrivals:
        if a.status == "done":
            done.setdefault(a.method, []).append(a)
    tasks = []
    for p, a in enumerate(done.get(PREFIX, [])):
        if a.position != p:
            break
        tasks.append(a.task)
    by_task = scores(reg, stream)
    evaluations = {t: by_task.get(t, []) for t in tasks}
    methods = ([PREFIX] if PREFIX in done else []) + sorted(set(done) - {PREFIX})
    methods += sorted({a.method for a in arrivals} - set(methods))
    proven = [a.reeval is not None for a in done.get(PREFIX, [])]
    views = {
        m: method_view(m, tasks, evaluations, len(done.get(m, [])), proven if m == PREFIX else ())
        for m in methods
    }
    return {"tasks": tasks, "evaluations": evaluations, "views": views, "arrivals": arrivals}


# --- writing scores -----------------------------------------------------------------------------


def ev_dict(ev: EvalResult) -> dict[str, Any]:
    """An evaluation as the plain dict that is recorded (and saved in a baseline's log)."""
    return {
        "metric": ev.metric,
        "value": ev.score,
        "n": ev.n,
        "predictions_sha256": ev.predictions_sha256,
    }


def record(
    reg: Registry,
    task: str,
    method: str,
    position: int,
    ev: EvalResult | dict[str, Any],
    stream: str = DEFAULT_STREAM,
) -> None:
    """Record one score of `task` by `method` at `position` of the stream (once: a repeated
    write keeps the row already there)."""
    d = ev_dict(ev) if isinstance(ev, EvalResult) else ev
    reg.record_evaluation(
        task=task,
        metric=d["metric"],
        value=d["value"],
        n=d["n"],
        position=position,
        method=method,
        predictions_sha256=d["predictions_sha256"],
        stream=stream,
    )
