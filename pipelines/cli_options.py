"""The options the `continual` commands share, and what they turn into: where the registry
lives (`registry_args`), a task's data (`data_args`) and a training run (`train_config`).

Kept apart from `pipelines.cli` so that `cli_stream` (`learn`) adds the same training options as
`train` without importing the command table.
"""

from __future__ import annotations

import argparse

# The init strategies a user can name (continual.init also has `tensor`, for the Python API);
# spelt out here so that `--help` does not import torch.
INIT_CHOICES = ("auto", "words", "random", "nearest", "weighted")


def common_options() -> argparse.ArgumentParser:
    """Options every command accepts; SUPPRESS keeps a subcommand from resetting them."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument(
        "--home",
        default=argparse.SUPPRESS,
        help="workspace folder (default: $CONTINUAL_HOME, else ./.continual)",
    )
    g.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print exactly one JSON object on stdout",
    )
    g.add_argument(
        "--registry-url",
        default=argparse.SUPPRESS,
        help="registry database URL (default: $CONTINUAL_REGISTRY_URL, else SQLite "
        "in the workspace)",
    )
    g.add_argument(
        "--tracking-uri",
        default=argparse.SUPPRESS,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the workspace)",
    )
    g.add_argument(
        "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
    )
    return p


def data_options(p: argparse.ArgumentParser, *, train: bool) -> None:
    """Where a task's data comes from: a built-in dataset or files, and its fields."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="a built-in dataset (see `continual data list`)")
    if train:
        g.add_argument("--train", help="training file: JSONL, CSV/TSV or Parquet (or a hub name)")
    g.add_argument("--eval", help="evaluation file (default: a seeded 20%% split of --train)")
    g.add_argument("--kind", choices=("classification", "generation"), default="classification")
    g.add_argument(
        "--text-field", help="input text field (default: text; evaluate: the stored task's)"
    )
    tgt = g.add_mutually_exclusive_group()
    tgt.add_argument("--label-field", dest="target_field", help="label field (classification)")
    tgt.add_argument("--target-field", dest="target_field", help="target text field (generation)")
    g.add_argument("--description", default="", help="one line saying what the task is")
    g.add_argument("--max-train", type=int, help="seeded stratified subsample of the training set")
    g.add_argument("--max-eval", type=int, help="seeded stratified subsample of the evaluation set")


def data_args(a: argparse.Namespace):
    """The `DataArgs` of the options `data_options` added."""
    from pipelines.jobs import DataArgs

    return DataArgs(
        dataset=a.dataset,
        train=getattr(a, "train", None),
        eval=a.eval,
        kind=a.kind,
        text_field=a.text_field or "",
        target_field=a.target_field or "",
        description=a.description,
        max_train=a.max_train,
        max_eval=a.max_eval,
        seed=getattr(a, "seed", 0),
    )


def train_config(a: argparse.Namespace):
    """The `TrainConfig` of the options `add_training_options` added."""
    from continual.train import TrainConfig

    return TrainConfig(
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        eval_every=a.eval_every,
        patience=a.patience,
        max_length=a.max_length,
        max_target_length=a.max_target_length,
    )


def registry_args(a: argparse.Namespace):
    """Where the registry lives, from the common options and the environment."""
    from pipelines.settings import RegistryArgs

    return RegistryArgs.from_namespace(a)


def add_training_options(t: argparse.ArgumentParser) -> None:
    """The backbone, task name, data and training options of `train` (and `learn`)."""
    t.add_argument("--backbone", required=True, help="minilm, smollm2, a model folder or hub id")
    t.add_argument("--name", help="task name (default: the dataset's name)")
    data_options(t, train=True)
    h = t.add_argument_group("training")
    h.add_argument("--prefix-length", type=int, help="prefix length P (default 16)")
    h.add_argument(
        "--positions",
        choices=("explicit", "shifted"),
        help="input position ids with a prefix (default: explicit for encoders, "
        "shifted for decoders)",
    )
    h.add_argument(
        "--init",
        choices=INIT_CHOICES,
        help="where the prefix starts (default auto): random; words (the backbone's own keys "
        "and values for the task description, Li & Liang's real-word init); nearest (a copy of "
        "the most similar earlier task's prefix); weighted (a similarity-weighted mix of the "
        "top 3); auto (weighted when an earlier task is similar enough, else random)",
    )
    h.add_argument("--steps", type=int, default=400)
    h.add_argument("--batch-size", type=int, default=16)
    h.add_argument("--lr", type=float, default=1e-3)
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--eval-every", type=int, default=50, help="validate every N steps")
    h.add_argument(
        "--patience",
        type=int,
        default=4,
        help="stop after N validations without improvement (0: never)",
    )
    h.add_argument("--max-length", type=int, default=128, help="input tokens kept")
    h.add_argument("--max-target-length", type=int, default=32, help="target tokens kept")
