"""What a training run sees: endless seeded batches, and a seeded validation split carved from
the training data (never the eval set, whose score is what gets reported)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from continual.train.config import TrainConfig
from tasks.spec import Example, TaskData
from tasks.split import stratified_split


def batches(examples: Sequence[Example], batch_size: int, seed: int) -> Iterator[list[Example]]:
    """Endless seeded batches: a fresh shuffle every epoch, the same for the same seed."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        for i in range(
            0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size
        ):
            yield [examples[j] for j in order[i : i + batch_size]]


def split_validation(data: TaskData, config: TrainConfig) -> tuple[list[Example], list[Example]]:
    """(train, validation): a seeded, stratified slice of the training data, at most val_max."""
    if len(data.train) < 10:
        return list(data.train), []
    fraction = min(config.val_fraction, config.val_max / len(data.train))
    # Generation targets are (nearly) all distinct: stratifying by them would hold out nothing.
    rest, held = stratified_split(
        list(data.train),
        fraction=fraction,
        seed=config.seed,
        stratified=data.spec.kind == "classification",
    )
    return list(rest), list(held)
