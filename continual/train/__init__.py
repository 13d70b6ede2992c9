"""Training a task's module on a frozen backbone: the config, the one loop, the data it sees,
the resumable state, and `train` itself, which puts them together."""

from continual.train.config import TrainConfig
from continual.train.data import batches, split_validation
from continual.train.loop import LoopResult, adamw, lr_factor, optimize
from continual.train.run import TrainResult, train
from continual.train.state import flatten_state, unflatten_state

__all__ = [
    "LoopResult",
    "TrainConfig",
    "TrainResult",
    "adamw",
    "batches",
    "flatten_state",
    "lr_factor",
    "optimize",
    "split_validation",
    "train",
    "unflatten_state",
]
