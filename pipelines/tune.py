"""Per-task search of prefix length, learning rate, reparameterization width and start.

`--tune N` runs N trials of an Optuna study (TPE sampler, seeded; its first third random,
`startup`) for one arriving task. Each
trial trains on the training split and is scored on the validation split carved from the
training data (`continual.train.data.split_validation`): the eval split, whose score is what
gets reported, is never seen by the search. A trial reports each validation to the study's
pruner, which stops a trial whose curve is below the median of the others at the same step
(`median`) or outside the top third of its rung (`halving`, successive halving). Only the best
trial's prefix is registered; the study's summary goes into its run (`tune`). A new study
tries the arrival's own options first (when the space holds them), so the search always weighs
the defaults; no trial is pruned in the first half of its steps (early validations of a slow
task sit at the label prior and rank nothing).

The space, and why each default:
- prefix length 4, 8, 16, 32, 64 (capped by the backbone's context): the Prefix-Tuning paper
  found about 10 best for table-to-text and about 200 for summarization; on the catalog's
  classification tasks 16 is within a point of 64 (bench.prefix_quality), so the choices
  bracket the default both ways without reaching lengths that cost more than they can gain on
  short inputs;
- learning rate log-uniform in [1e-4, 1e-2]: the default 1e-3 in the middle, one decade each
  way (the rates in the Prefix-Tuning paper, 5e-5 to 8e-5, are for a reparameterized prefix on
  GPT-2 medium with 5-10 epochs; ours train a few hundred steps);
- reparameterization width 256 or 512 (512 in the paper and our default);
- start `random` or `auto` (a similarity-weighted mix of similar earlier tasks' prefixes,
  random when none is similar enough): which helps depends on the registry, so it is searched.
- trial steps: by default each trial trains the arrival's steps and the winner's prefix is the
  one registered. With `trial_steps` below them, trials are short and the winner's options are
  trained again for the arrival's steps (a refit): a search of N short trials then costs
  N x trial_steps + steps, not N x steps. Short trials favour options that learn fast; the
  refit is what lets their choice pay at the full budget (bench.tune: 8 trials of 200 steps,
  the 200-step winner registered as it was, lost 5.3 points on trec to the defaults trained
  for 1,600 steps).

The study lives beside the registry: in `<home>/studies.db` for SQLite, in the `optuna` schema
of the registry's PostgreSQL database otherwise (Optuna keeps its own alembic version table,
which would collide with the registry's in one schema). A study is named by the task, its data
and the space, so a search that was killed resumes: trials finished before are kept, the
remaining ones run, and a trial that was running when its process died is marked failed after
its heartbeat stops. Other workers may add trials to a running search (`search(helper=True)`,
`pipelines.arrival.tuned.help_a_search`). A resumed search, or a helper, seeds its sampler
afresh (the seed plus the number of trials already there, and a helper's worker id), so it does
not draw the options of the trials before it again.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pipelines.tune_storage import HEARTBEAT_S as HEARTBEAT_S
from pipelines.tune_storage import storage_for as storage_for
from tasks.errors import ConfigError

LENGTHS = (4, 8, 16, 32, 64)
LR_RANGE = (1e-4, 1e-2)
WIDTHS = (256, 512)
STARTS = ("random", "auto")
PRUNERS = ("median", "halving", "none")


@dataclass(frozen=True)
class TuneSpace:
    """How many trials, over which choices (see the module's docstring for the defaults)."""

    trials: int
    lengths: tuple[int, ...] = LENGTHS
    lr_min: float = LR_RANGE[0]
    lr_max: float = LR_RANGE[1]
    widths: tuple[int, ...] = WIDTHS
    starts: tuple[str, ...] = STARTS
    pruner: str = "median"
    seed: int = 0
    trial_steps: int | None = None  # None: each trial trains the arrival's steps, no refit

    def __post_init__(self) -> None:
        where = "tune"
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(
                f"{where}: trials must be a whole number of at least 1, got {self.trials!r}"
            )
        for name, values in (
            ("lengths", self.lengths),
            ("widths", self.widths),
            ("starts", self.starts),
        ):
            if not values:
                raise ConfigError(f"{where}: {name} is empty; give at least one choice")
        bad = [n for n in (*self.lengths, *self.widths) if not isinstance(n, int) or n < 1]
        if bad:
            raise ConfigError(
                f"{where}: lengths and widths must be whole numbers of at least 1, got {bad}"
            )
        if not 0 < self.lr_min <= self.lr_max:
            raise ConfigError(
                f"{where}: the learning-rate bounds must be positive and in order (min <= max), "
                f"got {self.lr_min:g} to {self.lr_max:g}"
            )
        unknown = [s for s in self.starts if s not in STARTS]
        if unknown:
            raise ConfigError(
                f"{where}: unknown start(s) {unknown}; choose from {', '.join(STARTS)}"
            )
        if self.trial_steps is not None and (
            isinstance(self.trial_steps, bool)
            or not isinstance(self.trial_steps, int)
            or self.trial_steps < 1
        ):
            raise ConfigError(
                f"{where}: trial_steps must be a whole number of at least 1, "
                f"got {self.trial_steps!r}"
            )
        if self.pruner not in PRUNERS:
            raise ConfigError(
                f"{where}: pruner must be one of {', '.join(PRUNERS)}, not {self.pruner!r}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | int, where: str = "tune") -> TuneSpace:
        """From a stream entry's or an HTTP arrival's `tune:` (a mapping, or just N)."""
        if isinstance(d, int) and not isinstance(d, bool):
            d = {"trials": d}
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: give the number of trials, or a mapping with trials: N")
        known = {"trials", "lengths", "lr", "widths", "starts", "pruner", "seed", "trial_steps"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {unknown}; known: {', '.join(sorted(known))}"
            )
        if "trials" not in d:
            raise ConfigError(f"{where}: trials is required")
        lr = d.get("lr", list(LR_RANGE))
        if not (isinstance(lr, list | tuple) and len(lr) == 2):
            raise ConfigError(f"{where}: lr must be [min, max], got {lr!r}")
        try:
            return cls(
                trials=d["trials"],
                lengths=tuple(d.get("lengths", LENGTHS)),
                lr_min=float(lr[0]),
                lr_max=float(lr[1]),
                widths=tuple(d.get("widths", WIDTHS)),
                starts=tuple(d.get("starts", STARTS)),
                pruner=d.get("pruner", "median"),
                seed=int(d.get("seed", 0)),
                trial_steps=d.get("trial_steps"),
            )
        except ConfigError as e:  # name the entry, not just `tune`
            raise ConfigError(str(e).replace("tune:", f"{where}:", 1)) from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """The `tune:` mapping `from_dict` reads back (`trial_steps` only when set, so the
        studies of searches that never set it keep their names)."""
        d = {
            "trials": self.trials,
            "lengths": list(self.lengths),
            "lr": [self.lr_min, self.lr_max],
            "widths": list(self.widths),
            "starts": list(self.starts),
            "pruner": self.pruner,
            "seed": self.seed,
        }
        if self.trial_steps is not None:
            d["trial_steps"] = self.trial_steps
        return d

    def capped(self, max_length: int) -> tuple[int, ...]:
        """The lengths the backbone's context leaves room for (one clear line if none)."""
        fit = tuple(n for n in self.lengths if n <= max_length)
        if not fit:
            raise ConfigError(
                f"tune: no prefix length in {list(self.lengths)} fits this backbone's context; "
                f"give lengths of at most {max_length} (--tune-lengths, or lengths: in tune:)"
            )
        return fit

    def digest(self) -> str:
        """The space without its number of trials: a rerun asking for more trials, or the
        same number after a kill, continues the same study."""
        d = {k: v for k, v in self.to_dict().items() if k != "trials"}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TrialOutcome:
    """One trial as the search saw it."""

    number: int
    params: dict[str, Any]
    state: str  # complete | pruned
    value: float | None  # the best validation value (higher is better)
    steps: int
    worker: str | None = None  # the worker that ran it (a search may have several)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    """The study's outcome: every trial, the best one's parameters and what it trained."""

    trials: list[TrialOutcome]
    best: TrialOutcome
    best_run: Any  # the best trial's (TrainResult, module config), as `run_trial` returned it
    study: str

    def summary(self) -> dict[str, Any]:
        steps = sum(t.steps for t in self.trials)
        full = sum(t.steps for t in self.trials if t.state == "complete")
        pruned = [t for t in self.trials if t.state == "pruned"]
        return {
            "study": self.study,
            "trials": [t.to_dict() for t in self.trials],
            "best": self.best.to_dict(),
            "steps": steps,
            "pruned": len(pruned),
            "steps_of_complete_trials": full,
        }


def _pruner(name: str, warmup: int) -> Any:
    """The pruner; no trial is pruned before step `warmup` (a validation curve still at the
    label prior says nothing: bench.tune's halving pruner, with none, stopped a held-out
    task's every trial at its first validation and kept one that never left the prior)."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, warmup) if warmup else "auto", reduction_factor=3
        )
    return optuna.pruners.NopPruner()


class Surplus(Exception):
    """A trial started when the study already had its trials (finished or running): it fails
    at once and is not counted."""


def search(
    space: TuneSpace,
    *,
    lengths: tuple[int, ...],
    study_name: str,
    storage: Any,
    run_trial: Callable[[dict[str, Any], Callable[[int, float], bool]], Any],
    score_of: Callable[[Any], tuple[float, int]],
    say: Callable[[str], None] = lambda _: None,
    worker: str = "",
    helper: bool = False,
    wait_s: float = 1.0,
    warmup: int = 0,
    first: dict[str, Any] | None = None,
) -> SearchResult | None:
    """Run the study's remaining trials (of `space.trials`) and return every trial's outcome.

    `run_trial(params, on_validation)` trains one trial (params: length, lr, width, start),
    calling `on_validation(step, value)` at each validation; it returns what it trained.
    `score_of(what)` is (best validation value, steps run). A pruned trial is stopped at once.

    Several processes may take part in one study (the storage is shared): each runs trials
    while the study has fewer than `space.trials` finished or running, one at a time; a trial
    numbered past that many is surplus (it fails at once, uncounted). The arrival's own search
    then waits for the others' running trials (a participant that died is failed by its
    stopped heartbeat, and its trial run again) and returns; a `helper` returns at once, with
    None. Each trial records the `worker` that ran it. `warmup`: no pruning before that step.
    `first`: options a new study tries first (the arrival's own defaults), so the search
    always weighs them.
    """
    import time
    import warnings
    import zlib

    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=space.seed, n_startup_trials=startup(space.trials))
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=_pruner(space.pruner, warmup),
        load_if_exists=True,
    )
    # the sampler's random draws are seeded; a search joining trials run before (a resumed
    # one, or another worker's helper) draws from another seed, not the same sequence again
    already = len(study.get_trials(deepcopy=False))
    if already or helper:
        salt = zlib.crc32(worker.encode()) % 1_000_003 if helper else 0
        study.sampler = optuna.samplers.TPESampler(
            seed=space.seed + already + salt, n_startup_trials=startup(space.trials)
        )
    if first is not None and not already and not helper:
        study.enqueue_trial(first)
    kept: dict[int, Any] = {}

    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)

    def objective(trial: optuna.Trial) -> float:
        before = study.get_trials(deepcopy=False, states=live)
        if sum(t.number < trial.number for t in before) >= space.trials:
            trial.set_user_attr("surplus", True)
            raise Surplus
        trial.set_user_attr("worker", worker)
        params = {
            "prefix_length": trial.suggest_categorical("prefix_length", list(lengths)),
            "lr": trial.suggest_float("lr", space.lr_min, space.lr_max, log=True),
            "reparam_hidden": trial.suggest_categorical("reparam_hidden", list(space.widths)),
            "init": trial.suggest_categorical("init", list(space.starts)),
        }
        pruned = False

        def on_validation(step: int, value: float) -> bool:
            nonlocal pruned
            trial.report(value, step)
            pruned = trial.should_prune()
            return not pruned

        what = run_trial(params, on_validation)
        value, steps = score_of(what)
        trial.set_user_attr("steps", steps)
        if pruned:
            raise optuna.TrialPruned()
        best = study.best_value if _any_complete(study) else -math.inf
        if value >= best:
            kept.clear()
            kept[trial.number] = what
        say(f"tune: trial {trial.number} {params} -> {value:.4f} in {steps} steps")
        return value

    counted = (TrialState.COMPLETE, TrialState.PRUNED)  # a failed (killed) trial is redone
    while True:
        trials = study.get_trials(deepcopy=False, states=live)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if len(trials) < space.trials:
            study.optimize(objective, n_trials=1, catch=(Surplus,))
        elif helper or running == 0:
            break
        else:  # another participant's trials are still running
            with warnings.catch_warnings():  # "experimental" in Optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            time.sleep(wait_s)
    if helper:
        return None
    finished = [t for t in study.get_trials(deepcopy=False) if t.state in counted]
    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}
    outcomes = [
        TrialOutcome(
            number=t.number,
            params=dict(t.params),
            state=states[t.state],
            value=t.value if t.state == TrialState.COMPLETE else None,
            steps=int(t.user_attrs.get("steps", 0)),
            worker=t.user_attrs.get("worker"),
        )
        for t in finished
    ]
    if not _any_complete(study):
        raise ConfigError(
            f"tune: none of the {len(outcomes)} trials completed (all pruned or failed); "
            "give more trials or --tune-pruner none"
        )
    top = study.best_trial
    best = next(o for o in outcomes if o.number == top.number)
    return SearchResult(trials=outcomes, best=best, best_run=kept.get(top.number), study=study_name)


def startup(trials: int) -> int:
    """Random trials before TPE models the others: a third of the budget, at least 2 and at
    most Optuna's default 10. With Optuna's default a search of fewer than 10 trials (8 in
    bench.tune) was random search throughout."""
    return max(2, min(10, math.ceil(trials / 3)))


def _any_complete(study: Any) -> bool:
    from optuna.trial import TrialState

    return any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


def study_name(task: str, data_sha256: str, space: TuneSpace, config_digest: str) -> str:
    """One study per (task, its data, the space, the training options)."""
    return f"{task}-{data_sha256[:12]}-{space.digest()}-{config_digest[:12]}"
