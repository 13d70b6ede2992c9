"""How an arrival re-evaluates the earlier tasks of its stream: `--reeval full|audit|proof`.

Re-scoring every earlier task after every arrival costs T(T-1)/2 evaluations for a stream of T
tasks. The backbone is frozen and every module is a hashed file, so most of that work can be
proven instead of repeated: when the backbone's fingerprint and a module's sha256 are those of
the task's last measurement (and its eval data is content-addressed), the evaluation would give
the same predictions, bit for bit, on the deterministic CPU runtime.

- `full`: re-score every earlier task (the registry holds a measured R);
- `audit`: verify the backbone and every earlier module's sha256, and re-score a rotating
  sample of `k` earlier tasks: those measured longest ago (ties broken by a seeded hash), so a
  task waits at most ceil(T/k) arrivals between two measurements;
- `proof`: verify the hashes only.

Under `audit` and `proof` a task whose current module is not the one of its last measurement in
the stream (a new version was registered since) is always re-scored: a proof carries a score only
for the same module. `auto` (the default) is `full` for the first `AUTO_FULL_UP_TO` arrivals of a
stream and `audit` after. The report fills each unmeasured cell of R with the task's last measured
score and marks it carried; a hash that does not match is an IntegrityError (the arrival fails).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from continual.inference import EvalResult, evaluate
from pipelines import ledger
from pipelines.jobs import task_prefix_from_registry
from registry import EvaluationRecord, PrefixRecord, Registry
from registry.artifacts import REPAIR_HINT
from tasks.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from continual.backbones import Backbone
    from pipelines.arrival.book import TaskBook

MODES = ("full", "audit", "proof")
AUTO = "auto"
CHOICES = (AUTO, *MODES)
#: Streams of up to 20 tasks re-score everything (190 evaluations at 20 tasks); longer ones audit.
AUTO_FULL_UP_TO = 20
#: Four re-scored tasks per arrival: every task measured again at least every ceil(T/4) arrivals.
AUDIT_K = 4


def check_reeval(mode: str, k: int, where: str) -> None:
    if mode not in CHOICES:
        raise ConfigError(f"{where}: reeval must be one of {', '.join(CHOICES)}, not {mode!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"{where}: audit_k must be a whole number of at least 1, got {k!r}")


def mode_for(requested: str, position: int) -> str:
    """The mode an arrival at `position` (0-based) runs: `auto` resolved by the stream's length."""
    if requested in MODES:
        return requested
    return "full" if position + 1 <= AUTO_FULL_UP_TO else "audit"


def last_measured(
    scores: dict[str, list[EvaluationRecord]], tasks: Iterable[str], method: str, before: int
) -> dict[str, EvaluationRecord]:
    """Each task's latest measured score of `method` at a position before `before`."""
    out: dict[str, EvaluationRecord] = {}
    for t in tasks:
        for e in scores.get(t, []):
            if e.method == method and e.position is not None and e.position < before:
                if t not in out or e.position > out[t].position:  # type: ignore[operator]
                    out[t] = e
    return out


def rotation(earlier: Sequence[str], last: dict[str, int], k: int, seed: int) -> list[str]:
    """The `k` earlier tasks measured longest ago (a task never measured first), ties broken by
    a hash of (seed, task): the same registry state always gives the same sample, so a redone
    arrival re-scores the same tasks. Returned in stream order."""

    def key(task: str) -> tuple[int, str]:
        tie = hashlib.sha256(f"{seed}:{task}".encode()).hexdigest()
        return (last.get(task, -1), tie)

    chosen = set(sorted(earlier, key=key)[:k])
    return [t for t in earlier if t in chosen]


def choose(
    mode: str,
    earlier: Sequence[str],
    last: dict[str, EvaluationRecord],
    current: dict[str, PrefixRecord],
    *,
    k: int,
    seed: int,
) -> tuple[list[str], list[str]]:
    """(tasks to re-score, tasks whose scores a proof carries) for an arrival in `mode`."""
    if mode == "full":
        return list(earlier), []
    changed = {
        t
        for t in earlier
        if t not in last or t not in current or last[t].prefix_id != current[t].id
    }
    sampled: set[str] = set()
    if mode == "audit":
        rest = [t for t in earlier if t not in changed]
        positions = {t: last[t].position or 0 for t in rest}
        sampled = set(rotation(rest, positions, k, seed))
    measure = [t for t in earlier if t in changed or t in sampled]
    return measure, [t for t in earlier if t not in changed and t not in sampled]


def arrange(
    reg: Registry,
    backbone: Backbone,
    stream: str,
    earlier: list[str],
    *,
    requested: str,
    k: int,
    seed: int,
) -> tuple[list[str], dict[str, Any] | None]:
    """For an arrival (`requested` mode, `k` and `seed` of its plan) after the `earlier` tasks
    of `stream`: which earlier tasks to re-score, and (unless `full`) the
    record of the proof that carries the others, the backbone and every earlier module having
    been verified by their hashes now."""
    position = len(earlier)
    mode = mode_for(requested, position)
    if mode == "full":
        return list(earlier), None
    current = reg.current_prefixes(earlier)
    last = last_measured(ledger.scores(reg, stream), earlier, ledger.PREFIX, position)
    measure, carried = choose(mode, earlier, last, current, k=k, seed=seed)
    verified = prove(
        reg,
        backbone.fingerprint,
        backbone.unchanged(),
        [current[t] for t in earlier if t in current],
    )
    doc = {"mode": mode, "measured": measure, "carried": len(carried), **verified}
    return measure, {**doc, "k": k} if mode == "audit" else doc


def rescore(
    reg: Registry,
    backbone: Backbone,
    book: TaskBook,
    stream: str,
    task: str,
    position: int,
    say: Callable[[str], None],
) -> EvalResult:
    """Re-score `task`'s current module at `position` of `stream` and record it (once: a redone
    write keeps the row there), with the batching of its own arrival (batch size, order,
    padding), so its predictions hash must equal the one at its arrival; a difference is said
    loudly here and flagged by the report."""
    info = book.task(reg, task)
    loaded = task_prefix_from_registry(reg, task, backbone)
    examples = book.data(reg, task).eval
    ev = evaluate(backbone, loaded, examples, batch_size=info.config.eval_batch_size)
    ledger.record(reg, task, ledger.PREFIX, position, ev, stream)
    if ev.predictions_sha256 != info.predictions_sha256:
        say(
            f"!!! {task}: predictions at position {position} differ from those at its "
            f"arrival (sha256 {ev.predictions_sha256[:12]}… vs "
            f"{str(info.predictions_sha256)[:12]}…); the report flags it"
        )
    return ev


def prove(
    reg: Registry, backbone_fingerprint: str, unchanged: bool, records: Sequence[PrefixRecord]
) -> dict[str, Any]:
    """Verify the backbone and every module of `records` (their files re-hashed now); returns
    what was verified. Any mismatch is an IntegrityError naming the task and what to do."""
    if not unchanged:
        raise IntegrityError(
            "the frozen backbone's weights were written in place since they were loaded "
            "(version counters): no score can be carried; this is a bug"
        )
    digest = hashlib.sha256()
    for r in records:
        where = f"task {r.task}: prefix v{r.version} (id {r.id})"
        if r.backbone_fingerprint != backbone_fingerprint:
            raise IntegrityError(
                f"{where} was trained on backbone fingerprint {r.backbone_fingerprint[:12]}…, "
                f"not the stream's {backbone_fingerprint[:12]}…; its score cannot be carried"
            )
        actual = reg.artifacts.hash_of(r.artifact_path)
        if actual != r.sha256:
            found = "is missing" if actual is None else f"has sha256 {actual[:12]}…"
            raise IntegrityError(
                f"{where}: its file {r.artifact_path} {found}, expected {r.sha256[:12]}…; "
                f"{REPAIR_HINT}"
            )
        digest.update(f"{r.task}\t{r.id}\t{r.sha256}\n".encode())
    return {
        "backbone_fingerprint": backbone_fingerprint,
        "modules": len(records),
        "modules_sha256": digest.hexdigest(),
    }
