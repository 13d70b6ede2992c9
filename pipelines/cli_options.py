"""The options the `continual` commands share: common options, data, training, registry.

Every command module imports its options from here (and none imports another command
module), so the CLI has no import circles.
"""

from __future__ import annotations

import argparse
from typing import Any

from tasks.errors import ConfigError  # noqa: F401 - re-exported for command modules

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
        "--store",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="where prefix files and task data live: an fsspec URL such as s3://bucket/path "
        "(default: $CONTINUAL_STORE, else the workspace folder)",
    )
    g.add_argument(
        "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
    )
    g.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda", "mps"),
        default=argparse.SUPPRESS,
        help="where backbones run (default: $CONTINUAL_DEVICE, else cpu; auto: cuda, else mps, "
        "else cpu)",
    )
    g.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=argparse.SUPPRESS,
        help="the backbone's dtype (default: $CONTINUAL_DTYPE, else float32; task modules keep "
        "float32 weights)",
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
    from tasks.load import DataArgs

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
        seed=getattr(a, "seed", None) or 0,
    )


def train_config(a: argparse.Namespace):
    """The `TrainConfig` of the options `add_training_options` added: what the user gave, and
    `TrainConfig`'s own defaults (the one place they live) for the rest."""
    from continual.train import TrainConfig

    given = {k: getattr(a, k, None) for k in TRAIN_OPTIONS}
    return TrainConfig(**{k: v for k, v in given.items() if v is not None})


def registry_args(a: argparse.Namespace):
    """Where the registry lives, from the common options and the environment."""
    from pipelines.settings import RegistryArgs

    return RegistryArgs.from_namespace(a)


def add_training_options(t: argparse.ArgumentParser) -> None:
    """The backbone, task name, data and training options of `train` (and `learn`)."""
    t.add_argument("--backbone", help="minilm, smollm2, a model folder or hub id")
    t.add_argument("--name", help="task name (default: the dataset's name)")
    data_options(t, train=True)
    h = t.add_argument_group("training")
    from pipelines.arrival.plan import INIT, PREFIX_LENGTH

    h.add_argument(
        "--module",
        choices=("prefix", "lora", "prompt", "ptuning", "ia3", "bitfit"),
        help="the per-task module trained on the frozen backbone (default prefix): lora, "
        "prompt (prompt tuning: soft input tokens), ptuning (P-tuning v2: deep prompts "
        "without the prefix's MLP), ia3 ((IA)3 scale vectors) or bitfit (the backbone's "
        "biases, stored as changes)",
    )
    h.add_argument("--lora-rank", type=int, help="LoRA rank r (default 8)")
    h.add_argument("--lora-alpha", type=float, help="LoRA alpha; updates scale by alpha/r (16)")
    h.add_argument(
        "--lora-targets",
        help="linear layers LoRA changes, by the last part of their names (default: the query "
        "and value projections, e.g. query,value or q_proj,v_proj)",
    )
    h.add_argument(
        "--prompt-length", type=int, help="soft tokens of a --module prompt (default 20)"
    )
    h.add_argument("--prefix-length", type=int, help=f"prefix length P (default {PREFIX_LENGTH})")
    h.add_argument(
        "--positions",
        choices=("explicit", "shifted"),
        help="input position ids with a prefix (default: explicit for encoders, "
        "shifted for decoders)",
    )
    h.add_argument(
        "--init",
        choices=INIT_CHOICES,
        help=f"where the prefix starts (default {INIT}): random; words (the backbone's own keys "
        "and values for the task description, Li & Liang's real-word init); nearest (a copy of "
        "the most similar earlier task's prefix); weighted (a similarity-weighted mix of the "
        "top 3); auto (weighted when an earlier task is similar enough, else random)",
    )
    for flag, kind, what in TRAINING_FLAGS:
        h.add_argument(flag, type=kind, help=f"{what} (default {_default(flag)})")
    h.add_argument(
        "--no-training-state",
        action="store_true",
        help="do not keep the training state (reparameterization and optimizer moments, ~400x "
        "the prefix on minilm): `train --resume` can then not continue this task",
    )
    add_tune_options(t)


def add_tune_options(t: argparse.ArgumentParser) -> None:
    from pipelines import tune

    g = t.add_argument_group("search (pipelines.tune: why each default)")
    g.add_argument(
        "--tune",
        type=int,
        metavar="N",
        help="search N trials (Optuna, TPE) over prefix length, learning rate, width and "
        "start, on a validation split of the training data; the best is registered",
    )
    g.add_argument("--tune-lengths", help=f"prefix lengths to try (default {_csv(tune.LENGTHS)})")
    g.add_argument(
        "--tune-lr",
        metavar="MIN:MAX",
        help=f"learning-rate range, log-uniform (default {tune.LR_RANGE[0]:g}:{tune.LR_RANGE[1]:g})",
    )
    g.add_argument("--tune-widths", help=f"reparameterization widths (default {_csv(tune.WIDTHS)})")
    g.add_argument("--tune-starts", help=f"starts to try (default {_csv(tune.STARTS)})")
    g.add_argument(
        "--tune-pruner", choices=tune.PRUNERS, help="stop weak trials early (default median)"
    )
    g.add_argument(
        "--tune-trial-steps",
        type=int,
        metavar="S",
        help="train each trial S steps, then the winner's options for the full --steps "
        "(default: each trial trains --steps and the winner is kept as trained)",
    )


def module_choice(a: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """(`--module`, its options from `--lora-*` or `--prompt-length`), checked by the module's
    plugin; an option of another kind than `--module` is one line."""
    from continual.modules import module_kind

    flags = {
        "lora": {
            "rank": ("--lora-rank", getattr(a, "lora_rank", None)),
            "alpha": ("--lora-alpha", getattr(a, "lora_alpha", None)),
            "targets": ("--lora-targets", getattr(a, "lora_targets", None)),
        },
        "prompt": {"length": ("--prompt-length", getattr(a, "prompt_length", None))},
    }
    module = getattr(a, "module", None)
    options: dict[str, Any] = {}
    for kind, given in flags.items():
        set_here = {k: v for k, (_, v) in given.items() if v is not None}
        if set_here and module != kind:
            named = ", ".join(flag for flag, v in given.values() if v is not None)
            what = "a LoRA module" if kind == "lora" else "a soft prompt"
            raise ConfigError(f"{named} set {what}; add --module {kind}")
        if kind == module:
            options = set_here
    if module is None:
        return None, {}
    if module not in ("prefix", "ptuning") and getattr(a, "prefix_length", None) is not None:
        hint = " (use --prompt-length)" if module == "prompt" else ""
        raise ConfigError(f"--prefix-length sets a prefix; drop it with --module {module}{hint}")
    return module, module_kind(module).check_options(options, f"--module {module}")


def _csv(values: Any) -> str:
    return ",".join(str(v) for v in values)


def tune_space(a: argparse.Namespace):
    """The search the options ask for (None without --tune); a bad setting is one line."""
    from pipelines.tune import TuneSpace

    given = {
        "--tune-lengths": a.tune_lengths,
        "--tune-lr": a.tune_lr,
        "--tune-widths": a.tune_widths,
        "--tune-starts": a.tune_starts,
        "--tune-pruner": a.tune_pruner,
        "--tune-trial-steps": a.tune_trial_steps,
    }
    if a.tune is None:
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise ConfigError(f"{', '.join(extra)} set the search; add --tune N to run it")
        return None
    d: dict[str, Any] = {"trials": a.tune}
    for key, flag in (("lengths", "--tune-lengths"), ("widths", "--tune-widths")):
        if given[flag] is not None:
            d[key] = _ints(given[flag], flag)
    if a.tune_starts is not None:
        d["starts"] = [s.strip() for s in a.tune_starts.split(",") if s.strip()]
    if a.tune_lr is not None:
        lo, sep, hi = a.tune_lr.partition(":")
        try:
            d["lr"] = [float(lo), float(hi)]
        except ValueError:
            raise ConfigError(
                f"--tune-lr must be MIN:MAX (e.g. 1e-4:1e-2), got {a.tune_lr!r}"
            ) from None
        if not sep:
            raise ConfigError(f"--tune-lr must be MIN:MAX (e.g. 1e-4:1e-2), got {a.tune_lr!r}")
    if a.tune_pruner is not None:
        d["pruner"] = a.tune_pruner
    if a.tune_trial_steps is not None:
        d["trial_steps"] = a.tune_trial_steps
    return TuneSpace.from_dict(d, "--tune")


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"{flag} must be whole numbers separated by commas, got {text!r}"
        ) from None


# Training options: (flag, type, help); their defaults are `TrainConfig`'s, shown in --help
# from there, so `train`, `learn` and stream files cannot drift apart.
TRAINING_FLAGS = (
    ("--steps", int, "training steps"),
    ("--batch-size", int, "examples per step"),
    ("--lr", float, "peak learning rate (linear warm-up, then linear decay)"),
    ("--seed", int, "seed of the split, batches, init and dropout"),
    ("--eval-every", int, "validate every N steps"),
    ("--patience", int, "stop after N validations without improvement (0: never)"),
    ("--max-length", int, "input tokens kept"),
    ("--max-target-length", int, "target tokens kept"),
)
TRAIN_OPTIONS = tuple(f[2:].replace("-", "_") for f, _, _ in TRAINING_FLAGS)


def _default(flag: str) -> Any:
    from continual.train import TrainConfig

    return getattr(TrainConfig(), flag[2:].replace("-", "_"))
