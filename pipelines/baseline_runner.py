"""Baselines on the stream: each one learns every task of the stream, in order, catching up on
whatever it has not learnt yet (normally just the arriving task).

For a baseline, an arrival is done when its arrival row is done. The learner's weights and the
scores they give are saved together (`continual.baselines.save_learner`, atomic) before anything
is recorded; a rerun finds either the previous saved state (and trains again, seeded, to the same
weights) or the new one (and replays its scores into the registry, skipping rows already there).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from continual.backbones import Backbone
from continual.baselines import Learner, create_learner, load_learner, save_learner
from pipelines import ledger
from pipelines.arrival.book import TaskBook
from pipelines.arrival.plan import BaselinePlan
from pipelines.progress import Progress
from registry import Registry
from registry.streams import DEFAULT_STREAM
from tasks.errors import IntegrityError


def saved_baselines(home: Path) -> list[str]:
    """Baselines with saved state in the stream's home (`settings.stream_home`)."""
    root = home / "baselines"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "CURRENT").exists())


def wanted(
    reg: Registry,
    home: Path,
    requested: Sequence[BaselinePlan],
    stream: str = DEFAULT_STREAM,
) -> dict[str, dict]:
    """Baselines to run, with the options to create them with: those already in the stream
    (they always continue) and those requested (whose options apply only when they start)."""
    out: dict[str, dict] = {
        m: {} for m in ledger.methods_in(reg, stream) if m != ledger.PREFIX and "/" not in m
    }
    out.update({m: {} for m in saved_baselines(home)})
    for b in requested:
        out[b.name] = dict(b.options)
    return dict(sorted(out.items()))


class BaselineRunner:
    """Runs baselines on one stream with a loaded backbone; their weights live under `home`
    (the stream's home)."""

    def __init__(
        self,
        *,
        home: Path,
        backbone: Backbone,
        book: TaskBook,
        progress: Progress,
        bars: bool = True,
        stream: str = DEFAULT_STREAM,
    ) -> None:
        self.home = home
        self.backbone = backbone
        self.book = book
        self.progress = progress
        self.bars = bars
        self.stream = stream

    def catch_up(
        self, reg: Registry, method: str, options: dict[str, Any], tag: str
    ) -> dict[str, Any]:
        """Learn and record every stream task `method` has not finished; returns the last one's
        score and training summary."""
        tasks = ledger.stream_tasks(reg, self.stream)
        done = [a.task for a in ledger.done_arrivals(reg, method, self.stream)]
        if done != tasks[: len(done)]:
            raise IntegrityError(
                f"baseline {method} learnt {done}, which is not the start of the stream {tasks}"
            )
        root = self.home / "baselines" / method
        learner = load_learner(root, method, self.backbone)
        if learner is None:
            first = self.book.task(reg, tasks[0])
            learner = create_learner(method, self.backbone, first.prefix_config, options)
        elif options and options != {k: learner.options.get(k) for k in options}:
            self.progress.say(f"{tag} · {method} · keeps its saved options {learner.options}")
        if len(learner.tasks) < len(done):
            raise IntegrityError(
                f"{root}: the saved {method} state has {len(learner.tasks)} task(s) but the "
                f"registry records {len(done)}; remove its arrivals or restore the state"
            )
        summary: dict[str, Any] = {}
        for position in range(len(done), len(tasks)):
            task = tasks[position]
            if len(learner.tasks) == position:
                self._learn(reg, learner, root, position, task, tag)
            elif learner.tasks[position] != task:
                raise IntegrityError(
                    f"{root}: saved {method} state learnt {learner.tasks[position]} at "
                    f"position {position}, the stream has {task}"
                )
            entry = learner.log[position]
            self._replay(reg, method, entry)
            summary = {"score": entry["scores"][task]["value"], **entry["train"]}
        return summary

    def _learn(
        self, reg: Registry, learner: Learner, root: Path, position: int, task: str, tag: str
    ) -> None:
        """Train on `task`, score every task learnt so far, save weights and scores together."""
        method, info = learner.method, self.book.task(reg, task)
        data = self.book.data(reg, task)
        step = self.progress.step
        with step(tag, f"{method} · starting points"):
            init, rand = learner.starting_points(data, info.config)
        with step(tag, f"{method} · train ({info.config.steps} steps)"):
            trained = learner.learn(data, info.config, progress=self.bars)
        scores = {}
        with step(tag, f"{method} · evaluate {position + 1} task(s)"):
            for t in learner.tasks:
                t_info, t_data = self.book.task(reg, t), self.book.data(reg, t)
                ev = learner.evaluate(
                    t_data.spec,
                    t_data.eval,
                    batch_size=t_info.config.eval_batch_size,
                    limits=t_info.config.limits,
                )
                scores[t] = ledger.ev_dict(ev)
        learner.log.append(
            {
                "position": position,
                "task": task,
                "train": trained,
                "scores": scores,
                "untrained": {"init": ledger.ev_dict(init), "random": ledger.ev_dict(rand)},
            }
        )
        with step(tag, f"{method} · checkpoint"):
            save_learner(root, learner)

    def _replay(self, reg: Registry, method: str, entry: dict[str, Any]) -> None:
        """Record a saved step in the registry (each row once: a replay adds nothing twice)."""
        position, task, s = entry["position"], entry["task"], self.stream
        arrival = reg.streams.start_arrival(stream=s, position=position, task=task, method=method)
        for t, ev in entry["scores"].items():
            ledger.record(reg, t, method, position, ev, s)
        for which in ledger.UNTRAINED:
            name = ledger.untrained_method(method, which)
            ledger.record(reg, task, name, position, entry["untrained"][which], s)
        reg.streams.finish_arrival(arrival.id, "done")
