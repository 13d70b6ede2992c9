"""Where a task's data comes from (`DataArgs`: a catalog name or local files), and loading it.

`load_data` validates everything before anything is written: the CLI, stream files, the
job queue and the benchmarks all load a task's data through it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tasks.errors import ConfigError
from tasks.sources import load_files
from tasks.spec import TaskData
from tasks.split import fingerprint, subsample


@dataclass(frozen=True)
class DataArgs:
    """Where a task's data comes from: a catalog name or local files (or hub names).

    An empty field name means the default: for training `text` and `label` (classification) or
    `target` (generation); for evaluating a stored prefix, the fields its task was trained on.
    """

    dataset: str | None = None
    train: str | None = None
    eval: str | None = None
    kind: str = "classification"
    text_field: str = ""
    target_field: str = ""
    description: str = ""
    max_train: int | None = None
    max_eval: int | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataArgs:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def load_data(args: DataArgs, name: str | None = None) -> TaskData:
    """Validate and load a task's data (nothing is written before this succeeds)."""
    data = _load_data(args, name)
    if args.max_eval is None:
        return data
    return cap_eval(data, args.max_eval)


def cap_eval(data: TaskData, n: int) -> TaskData:
    """Keep a seeded stratified subsample of `n` eval examples (recorded in the spec's extra)."""
    if n < 1:
        raise ConfigError(f"task {data.spec.name}: --max-eval must be at least 1, got {n}")
    if n >= len(data.eval):
        return data
    classify = data.spec.kind == "classification"
    kept = subsample(data.eval, n, seed=data.spec.seed, stratified=classify)
    how = "stratified " if classify else ""
    note = (
        "max_eval",
        f"seeded {how}subsample of {len(kept)} of {len(data.eval)}, seed {data.spec.seed}",
    )
    return TaskData(
        spec=data.spec.with_(extra=(*data.spec.extra, note)),
        train=data.train,
        eval=kept,
        fingerprint=fingerprint(data.train, kept),
    )


def _load_data(args: DataArgs, name: str | None) -> TaskData:
    if args.dataset and args.train:
        raise ConfigError("give either --dataset NAME or --train FILE, not both")
    if args.dataset:
        from tasks import catalog

        data = catalog.load(args.dataset, seed=args.seed, max_train=args.max_train)
        if name and name != data.spec.name:
            data = TaskData(
                spec=data.spec.with_(name=name),
                train=data.train,
                eval=data.eval,
                fingerprint=data.fingerprint,
            )
        return data
    if not args.train:
        raise ConfigError(
            "no data: give --dataset NAME (see `continual data list`) or --train FILE"
        )
    if not name:
        raise ConfigError("--name TASK is required with --train FILE")
    default_target = "label" if args.kind == "classification" else "target"
    return load_files(
        name=name,
        train=args.train,
        eval=args.eval,
        kind=args.kind,
        text_field=args.text_field or "text",
        target_field=args.target_field or default_target,
        description=args.description,
        seed=args.seed,
        max_train=args.max_train,
    )
