"""What arrives: a task's plan (data, module and training options), the baselines beside it,
and the job payload a worker anywhere can run (the data by the hash it is stored under).

Defaults live in one place each: training options in `continual.train.TrainConfig` (with the
reason for each beside it), the prefix length here (`PREFIX_LENGTH`), the init strategy here
(`INIT`). `train`, `learn`, stream files and the job queue all build an `ArrivalPlan`, so a
default cannot drift between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from continual.backbones import Backbone, context_positions
from continual.init import strategies
from continual.modules import DEFAULT_KIND, module_kind
from continual.modules.prefix import prefix_config_for
from continual.train import TrainConfig
from pipelines.arrival.reeval import AUDIT_K, AUTO, check_reeval
from pipelines.tune import TuneSpace
from tasks.errors import ConfigError
from tasks.load import DataArgs
from tasks.spec import check_name

#: P = 16: the catalog's tasks learn within a point of longer prefixes at a quarter of the
#: bytes per task (bench.prefix_quality); `--prefix-length` overrides it per task.
PREFIX_LENGTH = 16
#: `auto`: start from a similarity-weighted mix of earlier prefixes when an earlier task is
#: similar enough, else from a random prefix (bench.similar_init measured random above the
#: backbone's word init on 5 of 6 targets, so random is the fallback).
INIT = "auto"
#: kinds laid out as a prefix (keys and values per layer and position): they take
#: `prefix_length` and `positions`
PREFIX_LIKE = ("prefix", "ptuning")


@dataclass(frozen=True)
class ArrivalPlan:
    """One arrival: the task's name, where its data comes from, and how its prefix is trained."""

    name: str
    data: DataArgs
    config: TrainConfig = field(default_factory=TrainConfig)
    prefix_length: int = PREFIX_LENGTH
    positions: str | None = None
    init: str = INIT
    reeval: str = AUTO  # how the earlier tasks are re-evaluated (`reeval.MODES`)
    audit_k: int = AUDIT_K  # tasks re-scored per arrival under `audit`
    tune: TuneSpace | None = None  # a search of length, lr, width and start (`pipelines.tune`)
    # keep the training state (reparameterization and optimizer moments, ~400x the prefix on
    # minilm) for `train --resume`; a long stream that never resumes can drop it
    training_state: bool = True
    # the kind of per-task module (`continual.modules`) and its options (the prefix takes
    # prefix_length and positions above)
    module: str = DEFAULT_KIND
    module_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name)
        where = f"arrival {self.name}"
        try:
            kind = module_kind(str(self.module))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        object.__setattr__(self, "module_options", kind.check_options(self.module_options, where))
        if self.module != DEFAULT_KIND:
            if self.tune is not None:
                raise ConfigError(
                    f"{where}: tune searches a prefix's options; drop it with module {self.module}"
                )
            if self.positions is not None and self.module not in PREFIX_LIKE:
                raise ConfigError(f"{where}: positions is a prefix option, not {self.module}'s")
        check_reeval(self.reeval, self.audit_k, f"arrival {self.name}")
        if self.init not in strategies():
            raise ConfigError(
                f"arrival {self.name}: unknown init {self.init!r}; choose one of "
                f"{', '.join(strategies())}"
            )
        if self.prefix_length < 1:
            raise ConfigError(f"arrival {self.name}: prefix_length must be at least 1")
        if not isinstance(self.training_state, bool):
            raise ConfigError(
                f"arrival {self.name}: training_state must be true or false, "
                f"not {self.training_state!r}"
            )
        if self.positions not in (None, "explicit", "shifted"):
            raise ConfigError(
                f"arrival {self.name}: positions must be explicit or shifted, not {self.positions!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "data": self.data.to_dict(),
            "config": self.config.to_dict(),
            "prefix_length": self.prefix_length,
            "positions": self.positions,
            "init": self.init,
            "reeval": self.reeval,
            "audit_k": self.audit_k,
            **({"tune": self.tune.to_dict()} if self.tune else {}),
            **({} if self.training_state else {"training_state": False}),
            **(
                {"module": self.module, "module_options": _plain(self.module_options)}
                if self.module != DEFAULT_KIND
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArrivalPlan:
        return cls(
            name=d["name"],
            data=DataArgs.from_dict(d["data"]),
            config=TrainConfig.from_dict(d["config"]),
            prefix_length=d.get("prefix_length", PREFIX_LENGTH),
            positions=d.get("positions"),
            init=d.get("init", INIT),
            reeval=d.get("reeval", AUTO),
            audit_k=d.get("audit_k", AUDIT_K),
            tune=TuneSpace.from_dict(d["tune"]) if d.get("tune") else None,
            training_state=d.get("training_state", True),
            module=d.get("module", DEFAULT_KIND),
            module_options=dict(d.get("module_options") or {}),
        )


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def module_config(backbone: Any, plan: ArrivalPlan) -> Any:
    """The arrival's module config for `backbone` (a `ModuleConfig` of `plan.module`)."""
    if plan.module == DEFAULT_KIND:
        return prefix_config_for(backbone, plan.prefix_length, plan.positions).with_(init=plan.init)
    options = dict(plan.module_options)
    if plan.module in PREFIX_LIKE:  # deep prompts take the prefix's length and positions
        options = {"length": plan.prefix_length, "positions": plan.positions} | options
    config = module_kind(plan.module).config_for(backbone, **options)
    taken = getattr(config, "input_positions", 0)  # a soft prompt's tokens precede the input
    context = context_positions(backbone)
    if taken and context is not None and taken + plan.config.max_length > context:
        raise ConfigError(
            f"arrival {plan.name}: a {plan.module} of {taken} tokens before inputs of up to "
            f"{plan.config.max_length} tokens needs {taken + plan.config.max_length} positions; "
            f"backbone {backbone.name} has {context}: shorten --prompt-length or --max-length"
        )
    return config.with_(init=plan.init)


def context_room(backbone: Backbone, positions: str | None, max_length: int) -> int:
    """The longest prefix the backbone's context leaves room for: with shifted positions (a
    decoder's default) the prefix takes positions before the `max_length` tokens; with
    explicit ones (an encoder's) it takes none, but no prefix may be longer than the context
    (`PrefixPlugin.config_for` refuses one)."""
    limit = context_positions(backbone)
    if limit is None:
        return 1 << 20
    if prefix_config_for(backbone, 1, positions).positions != "shifted":
        return limit
    return max(1, limit - max_length)


def check_plan(backbone: Backbone, plan: ArrivalPlan) -> None:
    """Refuse, in one line, what `plan` asks of `backbone` that training would refuse later: a
    module that does not fit it (`module_config`, the plugins' own rules) or a search whose
    prefix lengths all exceed its context. Shapes only: a `continual.skeleton` backbone will do."""
    module_config(backbone, plan)
    if plan.tune is not None:
        plan.tune.capped(context_room(backbone, plan.positions, plan.config.max_length))


@dataclass(frozen=True)
class BaselinePlan:
    """A baseline run beside the prefixes, with its options (e.g. its own `lr`)."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        from continual.baselines import baselines

        if self.name not in baselines():
            raise ConfigError(
                f"unknown baseline {self.name!r}; choose from {', '.join(baselines())}"
            )
        from continual.baselines.base import known_options

        unknown = sorted(set(dict(self.options)) - set(known_options(self.name)))
        if unknown:
            raise ConfigError(
                f"baseline {self.name}: unknown option(s) {unknown}; it takes "
                f"{sorted(known_options(self.name))}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dict(self.options)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | str) -> BaselinePlan:
        if isinstance(d, str):
            return cls(name=d)
        d = {str(k).replace("-", "_"): v for k, v in dict(d).items()}
        name = d.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"a baseline needs a name, got {name!r}")
        if "lr" in d:
            d["lr"] = number(d["lr"], f"baseline {name}")
        return cls(name=name, options=tuple(sorted(d.items())))


@dataclass(frozen=True)
class ArrivalJob:
    """An arrival job's payload: a worker on any machine runs it from this and the registry.

    `data_sha256` names the task's examples in the registry's data store (validated and stored
    when the job was queued), so the worker never reads the user's files. `adopt` makes an
    already registered task (trained by `train`) join the stream with its current prefix.
    """

    plan: ArrivalPlan
    backbone: str
    data_sha256: str | None = None
    baselines: tuple[BaselinePlan, ...] = field(default_factory=tuple)
    adopt: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "backbone": self.backbone,
            "data_sha256": self.data_sha256,
            "baselines": [b.to_dict() for b in self.baselines],
            "adopt": self.adopt,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArrivalJob:
        return cls(
            plan=ArrivalPlan.from_dict(d["plan"]),
            backbone=d["backbone"],
            data_sha256=d.get("data_sha256"),
            baselines=tuple(BaselinePlan.from_dict(b) for b in d.get("baselines", ())),
            adopt=bool(d.get("adopt", False)),
        )


def number(v: Any, where: str) -> float:
    """YAML reads `1e-3` (no dot) as a string; accept it as the number it means."""
    try:
        if isinstance(v, bool):
            raise ValueError
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: lr must be a number (e.g. 1.0e-3), got {v!r}") from None
