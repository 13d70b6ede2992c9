"""The frozen description of a task: what to read, what to predict and how it is scored."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from tasks.errors import ConfigError

Kind = Literal["classification", "generation"]
KINDS: tuple[str, ...] = ("classification", "generation")
METRIC_FOR_KIND = {"classification": "accuracy", "generation": "rouge_l"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str, what: str = "task name") -> str:
    """Return `name` if it is a safe identifier (letters, digits, `_ . -`, at most 64 chars)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"invalid {what} {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )
    return name


@dataclass(frozen=True)
class TaskSpec:
    """What a task is. `labels` are words (classification only), in a fixed order.

    `source` says where the data came from (`catalog:trec`, or file paths); `seed` is the seed of
    every split and subsample made for this task, recorded so they can be made again.
    """

    name: str
    kind: Kind
    text_field: str = "text"
    target_field: str = "label"
    labels: tuple[str, ...] = ()
    metric: str = ""
    description: str = ""
    source: str = ""
    seed: int = 0
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.kind not in KINDS:
            raise ConfigError(
                f"task {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}"
            )
        if not self.metric:
            object.__setattr__(self, "metric", METRIC_FOR_KIND[self.kind])
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "extra", tuple((str(k), str(v)) for k, v in self.extra))
        if self.kind == "classification":
            if len(self.labels) < 2:
                raise ConfigError(
                    f"task {self.name}: a classification task needs at least two label names"
                )
            if len(set(self.labels)) != len(self.labels):
                raise ConfigError(f"task {self.name}: label names repeat: {list(self.labels)}")
            if any(not x.strip() for x in self.labels):
                raise ConfigError(f"task {self.name}: a label name is empty")
        elif self.labels:
            raise ConfigError(f"task {self.name}: a generation task has no label names")
        if not self.text_field or not self.target_field:
            raise ConfigError(f"task {self.name}: text and target fields must be named")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        d = dict(d)
        d["labels"] = tuple(d.get("labels", ()))
        d["extra"] = tuple(sorted(dict(d.get("extra", {})).items()))
        return cls(**d)

    def with_(self, **changes: Any) -> TaskSpec:
        return replace(self, **changes)


@dataclass(frozen=True)
class Example:
    """One input and its target: a label word (classification) or a text (generation)."""

    text: str
    target: str


@dataclass(frozen=True)
class TaskData:
    """A task's spec with its training and evaluation examples.

    `fingerprint` is the sha256 of the examples (train then eval), so the same data is recognised
    wherever it comes from.
    """

    spec: TaskSpec
    train: tuple[Example, ...]
    eval: tuple[Example, ...]
    fingerprint: str
