"""Step 3 of an arrival with `--tune N`: search the prefix's length, learning rate, width and
start (`pipelines.tune`), then evaluate the best trial's prefix, which alone is registered.

The task embedding and routing keys are computed once per arrival, and the earlier tasks a
similarity start draws on are read once, not per trial. Idle workers may help (`Search.help`,
`continual worker` does by default): they add trials to the same study, kept in the shared
storage, and the arrival's worker waits for them, then trains the winner again from its seed
if another worker ran it. With short trials (`trial_steps`) the winner's options are always
trained again, for the arrival's steps (`refit_steps` in the summary).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from continual.backbones import Backbone
from continual.inference import evaluate
from continual.init import InitContext, Start, needs_sources, start_module
from continual.modules.prefix import prefix_config_for
from continual.routing import arrival_embeddings
from continual.similarity import embedding_method
from continual.train import train
from pipelines.arrival.plan import context_room
from pipelines.tune import search, storage_for, study_name
from registry import Registry
from tasks.spec import TaskData


class Search:
    """One arriving task's search: its study's name, how a trial trains and is scored, and
    the two ways to take part (`run`: the arrival's own, which waits for every trial and
    returns the winner to register; `help`: another worker's, which only adds trials)."""

    def __init__(
        self,
        reg: Registry,
        backbone: Backbone,
        data: TaskData,
        plan: Any,
        *,
        say: Callable[[str], None],
        bars: bool,
        worker: str = "",
    ) -> None:
        self.reg, self.backbone, self.data, self.plan = reg, backbone, data, plan
        self.say, self.bars, self.worker = say, bars, worker
        self.space, self.config = plan.tune, plan.config
        self._vectors: dict[str, Any] | None = None
        self._sources: list[Any] | None = None

    @property
    def vectors(self) -> dict[str, Any]:
        """The task embedding and routing keys: computed once, when first needed."""
        if self._vectors is None:
            self._vectors = arrival_embeddings(self.backbone, self.data)
        return self._vectors

    @property
    def name(self) -> str:
        settings = json.dumps(
            {
                "config": self.config.to_dict(),
                "positions": self.plan.positions,
                "backbone": self.backbone.fingerprint,
            },
            sort_keys=True,
        )
        digest = hashlib.sha256(settings.encode()).hexdigest()
        return study_name(self.data.spec.name, self.data.fingerprint, self.space, digest)

    def start_for(self, pconfig: Any) -> Start:
        """The trial's start; the earlier tasks a similarity start draws on are read once."""
        if needs_sources(pconfig.init) and self._sources is None:
            from pipelines.similar import sources_for

            query = self.vectors[embedding_method(self.backbone)]
            self._sources = sources_for(self.reg, self.backbone, query, exclude=self.data.spec.name)
        ctx = InitContext(self.backbone, self.data.spec, pconfig, {"sources": self._sources or []})
        return start_module(pconfig.init, ctx)

    @property
    def refits(self) -> bool:
        """Whether trials are shorter than the arrival's steps (the winner is trained again)."""
        short = self.space.trial_steps
        return short is not None and short < self.config.steps

    def trial_config(self, lr: float) -> Any:
        """A trial's training options: the arrival's, with the trial's learning rate and, for
        short trials, their steps and at least four validations for the pruner."""
        config = self.config.with_(lr=lr)
        if not self.refits:
            return config
        short = int(self.space.trial_steps)
        return config.with_(steps=short, eval_every=min(config.eval_every, max(1, short // 4)))

    def run_trial(
        self,
        params: dict[str, Any],
        on_validation: Callable[[int, float], bool],
        *,
        refit: bool = False,
    ) -> Any:
        pconfig = prefix_config_for(self.backbone, params["prefix_length"], self.plan.positions)
        pconfig = pconfig.with_(init=params["init"], reparam_hidden=params["reparam_hidden"])
        planned = self.start_for(pconfig)
        result = train(
            self.backbone,
            self.data,
            pconfig,
            self.config.with_(lr=params["lr"]) if refit else self.trial_config(params["lr"]),
            init=planned.tensors,
            progress=self.bars,
            on_validation=on_validation,
        )
        return result, pconfig, planned

    def score_of(self, what: Any) -> tuple[float, int]:
        result = what[0]
        values = dict(result.validations)
        if not values:
            from tasks.errors import ConfigError

            raise ConfigError(
                f"tune: task {self.data.spec.name} has no validation split to search on "
                f"({len(self.data.train)} training examples); give more training data or drop "
                "--tune"
            )
        return values.get(result.best_step, max(values.values())), result.steps

    def defaults(self, lengths: tuple[int, ...]) -> dict[str, Any] | None:
        """The arrival's own options as a trial, if the space holds them (tried first)."""
        sp = self.space
        width = prefix_config_for(self.backbone, 1, self.plan.positions).reparam_hidden
        mine = {
            "prefix_length": self.plan.prefix_length,
            "lr": self.config.lr,
            "reparam_hidden": width,
            "init": self.plan.init,
        }
        fits = (
            mine["prefix_length"] in lengths
            and sp.lr_min <= mine["lr"] <= sp.lr_max
            and width in sp.widths
            and mine["init"] in sp.starts
        )
        return mine if fits else None

    def _search(self, *, helper: bool) -> Any:
        room = context_room(self.backbone, self.plan.positions, self.config.max_length)
        lengths = self.space.capped(room)  # before the study exists: a bad space writes nothing
        if len(lengths) < len(self.space.lengths) and not helper:
            dropped = sorted(set(self.space.lengths) - set(lengths))
            self.say(f"tune: prefix lengths {dropped} do not fit the context (at most {room})")
        url = self.reg.db.engine.url.render_as_string(hide_password=False)
        return search(
            self.space,
            lengths=lengths,
            study_name=self.name,
            storage=storage_for(url, self.reg.workspace),
            run_trial=self.run_trial,
            score_of=self.score_of,
            say=self.say,
            worker=self.worker,
            helper=helper,
            warmup=self.trial_config(self.config.lr).steps // 2,
            first=self.defaults(lengths),
        )

    def help(self) -> None:
        """Add trials to the study while it has fewer than it asks for (another worker's
        arrival is running it); returns when none is left to start."""
        self._search(helper=True)

    def run(self, prefix_starts: Callable[..., Any] | None = None) -> dict[str, Any]:
        """The search and its winner: `result`, `evaluation`, `pconfig`, `planned` (its start),
        `embeddings`, `starts` (when `prefix_starts` is given), `summary` (for the run) and
        `config` (the winner's training options)."""
        found = self._search(helper=False)
        summary = found.summary()
        if self.refits:  # short trials: the winner's options trained for the arrival's steps
            self.say(f"tune: training the winner {found.best.params} for {self.config.steps} steps")
            result, pconfig, planned = self.run_trial(
                found.best.params, lambda s, v: True, refit=True
            )
            summary["refit_steps"] = result.steps
        else:
            # the winner's weights are in memory unless it ran in another process (before a
            # restart, or on a worker that helped): then train it again here from its seed
            result, pconfig, planned = found.best_run or self.run_trial(
                found.best.params, lambda s, v: True
            )
        config = self.config
        ev = evaluate(self.backbone, result.task, self.data.eval, batch_size=config.eval_batch_size)
        starts = None
        if prefix_starts is not None:
            starts = prefix_starts(self.backbone, self.data, pconfig, config, planned.tensors)
        return {
            "result": result,
            "evaluation": ev,
            "pconfig": pconfig,
            "planned": planned,
            "embeddings": self.vectors,
            "starts": starts,
            "summary": summary,
            "config": config.with_(lr=found.best.params["lr"]),
        }


def help_a_search(
    reg: Registry,
    running: list[Any],
    helped: set[tuple[int, int]],
    worker: str,
    backbone_for: Callable[[str, str], Backbone],
    say: Callable[[str], None],
) -> bool:
    """An idle worker's turn: add trials to the first search among `running` jobs (their
    phase says they are searching) not helped before; True if one was. Best effort: a failure
    here is said and left, the arrival's own worker runs whatever trials are left."""
    from pipelines.arrival.plan import ArrivalJob

    for job in running:
        key = (job.id, job.attempts)
        phase = str((job.progress or {}).get("phase", ""))
        if key in helped or "· search" not in phase:
            continue
        if job.payload.get("plan", {}).get("tune") is None:
            continue
        helped.add(key)
        arrival = ArrivalJob.from_dict(job.payload)
        if arrival.data_sha256 is None:
            continue
        say(f"worker {worker}: helping job {job.id}'s search ({job.task})")
        try:
            backbone = backbone_for(arrival.backbone, job.stream)
            data = reg.data.get(arrival.data_sha256)
            Search(reg, backbone, data, arrival.plan, say=say, bars=False, worker=worker).help()
        except Exception as e:  # noqa: BLE001
            say(f"worker {worker}: could not help job {job.id}'s search: {e!r}")
        return True
    return False
