"""Baselines that forget, run on the same task stream as the prefixes (see `base` for the
`Learner` protocol and how a learner's state is saved; each other module registers its
learners on import)."""

from continual.baselines.base import (
    FORMAT,
    Learner,
    baselines,
    create_learner,
    load_learner,
    register_baseline,
    save_learner,
)

from continual.baselines import forgetting as forgetting  # registers two  # isort: skip
from continual.baselines.forgetting import SequentialFT, SharedPrefix  # isort: skip
from continual.baselines import rehearsal as rehearsal  # replay, ewc, lwf  # isort: skip
from continual.baselines import isolated as isolated  # per-task-ft, multitask  # isort: skip

__all__ = [
    "FORMAT",
    "Learner",
    "SequentialFT",
    "SharedPrefix",
    "baselines",
    "create_learner",
    "load_learner",
    "register_baseline",
    "save_learner",
]
