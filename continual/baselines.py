"""Baselines that forget, run on the same task stream as the prefixes.

- `sequential-ft`: fine-tunes every weight of a trainable copy of the backbone, task after task
  (a head per task for encoders; text to text with rank classification for decoders). The
  frozen backbone the prefixes use is never touched.
- `shared-prefix`: one task module (a prefix unless configured otherwise) trained through all
  tasks, continuing its trainable module from task to task (a head per task where the
  objective has one).

A baseline is a `Learner`, registered by name (`register_baseline`). Its weights are scratch
state saved by `save_learner` as numbered folders under its own root with a `CURRENT` file
naming the complete one: the folder is written in full first and `CURRENT` is replaced
atomically, so a process killed at any point leaves the previous state or the new one, never a
mix. The learner also carries `log`, opaque to it, which the caller saves in the same step.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from continual.backbones import Backbone
from continual.finetune import evaluate_plain, finetune, fresh_head, trainable_copy
from continual.heads import ClassificationHead
from continual.inference import EvalResult, TrainedTask, evaluate
from continual.modules import DEFAULT_KIND, ModuleConfig, Tensors, build, config_from_dict
from continual.objectives import TextLimits
from continual.train import TrainConfig, train
from tasks.errors import ConfigError, IntegrityError
from tasks.spec import Example, TaskData, TaskSpec

FORMAT = "continual-baseline/1"
HEADS = "heads.safetensors"


class Learner(ABC):
    """A method that learns tasks one after another in place (and may forget earlier ones).

    `tasks` are the names learnt so far, in order; `options` (e.g. `lr`) are fixed when the
    learner is created and saved with it; `log` is the caller's record, saved alongside.
    `prefix_config` is the task module's config (any kind; the name is the stream's).
    """

    method: ClassVar[str]
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, backbone: Backbone, prefix_config: ModuleConfig, options: dict[str, Any]
    ) -> None:
        unknown = set(options) - set(self.default_options)
        if unknown:
            raise ConfigError(
                f"baseline {self.method}: unknown option(s) {sorted(unknown)}; "
                f"it takes {sorted(self.default_options)}"
            )
        self.backbone = backbone
        self.prefix_config = prefix_config
        self.options = {**self.default_options, **options}
        self.tasks: list[str] = []
        self.heads: dict[str, ClassificationHead] = {}
        self.log: list[dict[str, Any]] = []

    def train_config(self, config: TrainConfig) -> TrainConfig:
        """The arrival's training config with this baseline's own learning rate, if it has one."""
        lr = self.options.get("lr")
        return config if lr is None else config.with_(lr=float(lr))

    @abstractmethod
    def starting_points(self, data: TaskData, config: TrainConfig) -> tuple[EvalResult, EvalResult]:
        """Eval scores before training on `data`: (where this learner starts now, where a
        learner that knew no earlier task would start). Their difference is forward transfer."""

    @abstractmethod
    def learn(self, data: TaskData, config: TrainConfig, *, progress: bool) -> dict[str, Any]:
        """Train on `data` in place; returns a summary (steps, best_step, seconds, lr)."""

    @abstractmethod
    def evaluate(
        self, spec: TaskSpec, examples: Sequence[Example], *, batch_size: int, limits: TextLimits
    ) -> EvalResult:
        """Score task `spec` (one of `tasks`) with the current weights."""

    @abstractmethod
    def save_weights(self, folder: Path) -> None: ...

    @abstractmethod
    def load_weights(self, folder: Path) -> None: ...

    def _save_heads(self, folder: Path) -> None:
        tensors = {}
        for task, head in self.heads.items():
            for key, t in head.tensors().items():
                tensors[f"{task}/{key}"] = t.to("cpu")
        if tensors:
            save_file(tensors, str(folder / HEADS))

    def _load_heads(self, folder: Path) -> None:
        if not (folder / HEADS).exists():
            return
        flat = load_file(str(folder / HEADS))
        for task in {k.split("/", 1)[0] for k in flat}:
            self.heads[task] = ClassificationHead.from_tensors(
                {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith(f"{task}/")}
            )


_BASELINES: dict[str, type[Learner]] = {}


def register_baseline(cls: type[Learner]) -> type[Learner]:
    if cls.method in _BASELINES:
        raise ConfigError(f"baseline {cls.method!r} is registered twice")
    _BASELINES[cls.method] = cls
    return cls


def baselines() -> list[str]:
    return sorted(_BASELINES)


def create_learner(
    method: str, backbone: Backbone, prefix_config: ModuleConfig, options: dict[str, Any]
) -> Learner:
    if method not in _BASELINES:
        raise ConfigError(f"unknown baseline {method!r}; choose from {', '.join(baselines())}")
    return _BASELINES[method](backbone, prefix_config, dict(options))


# --- the two baselines ----------------------------------------------------------------------


@register_baseline
class SequentialFT(Learner):
    """Every weight of a trainable copy of the backbone, trained task after task."""

    method = "sequential-ft"
    default_options: ClassVar[dict[str, Any]] = {"lr": 5e-5}
    WEIGHTS = "model.safetensors"

    def __init__(
        self, backbone: Backbone, prefix_config: ModuleConfig, options: dict[str, Any]
    ) -> None:
        super().__init__(backbone, prefix_config, options)
        self.copy = trainable_copy(backbone)

    def starting_points(self, data: TaskData, config: TrainConfig) -> tuple[EvalResult, EvalResult]:
        head = fresh_head(self.backbone, data.spec, config.seed)
        kw = {"batch_size": config.eval_batch_size, "limits": config.limits}
        pretrained = evaluate_plain(self.backbone, head, data.spec, data.eval, **kw)
        if not self.tasks:  # the copy is still the pretrained backbone
            return pretrained, pretrained
        return evaluate_plain(self.copy, head, data.spec, data.eval, **kw), pretrained

    def learn(self, data: TaskData, config: TrainConfig, *, progress: bool) -> dict[str, Any]:
        config = self.train_config(config)
        head = fresh_head(self.backbone, data.spec, config.seed)
        result = finetune(self.copy, head, data, config, progress=progress)
        if head is not None:
            self.heads[data.spec.name] = head.eval()
        self.tasks.append(data.spec.name)
        return {
            "steps": result.steps,
            "best_step": result.best_step,
            "seconds": result.seconds,
            "lr": config.lr,
        }

    def evaluate(
        self, spec: TaskSpec, examples: Sequence[Example], *, batch_size: int, limits: TextLimits
    ) -> EvalResult:
        head = self.heads.get(spec.name)
        return evaluate_plain(self.copy, head, spec, examples, batch_size=batch_size, limits=limits)

    def save_weights(self, folder: Path) -> None:
        save_model(self.copy.model, str(folder / self.WEIGHTS))
        self._save_heads(folder)

    def load_weights(self, folder: Path) -> None:
        missing, unexpected = load_model(self.copy.model, str(folder / self.WEIGHTS))
        if missing or unexpected:
            raise IntegrityError(f"{folder / self.WEIGHTS}: weights do not fit the backbone")
        self._load_heads(folder)


@register_baseline
class SharedPrefix(Learner):
    """One prefix (its reparameterized module) trained through all tasks."""

    method = "shared-prefix"
    default_options: ClassVar[dict[str, Any]] = {"lr": None}
    WEIGHTS = "prefix.safetensors"

    def __init__(
        self, backbone: Backbone, prefix_config: ModuleConfig, options: dict[str, Any]
    ) -> None:
        super().__init__(backbone, prefix_config, options)
        self.module_state: dict[str, torch.Tensor] | None = None
        self.tensors: Tensors | None = None

    def _task(self, spec: TaskSpec, tensors: Tensors, head, limits: TextLimits) -> TrainedTask:
        return TrainedTask(
            spec=spec, config=self.prefix_config, tensors=tensors, head=head, limits=limits
        )

    def starting_points(self, data: TaskData, config: TrainConfig) -> tuple[EvalResult, EvalResult]:
        head = fresh_head(self.backbone, data.spec, config.seed)
        fresh = build(self.prefix_config, seed=config.seed).eject()
        kw = {"batch_size": config.eval_batch_size}
        random = evaluate(
            self.backbone, self._task(data.spec, fresh, head, config.limits), data.eval, **kw
        )
        if self.tensors is None:
            return random, random
        now = self._task(data.spec, self.tensors, head, config.limits)
        return evaluate(self.backbone, now, data.eval, **kw), random

    def learn(self, data: TaskData, config: TrainConfig, *, progress: bool) -> dict[str, Any]:
        config = self.train_config(config)
        resume = None
        if self.module_state is not None:  # continue the same module; a fresh head and optimizer
            resume = {"module": self.module_state, "head": {}, "optimizer_slots": {}}
        result = train(
            self.backbone, data, self.prefix_config, config, resume=resume, progress=progress
        )
        self.module_state = {k: v.detach().clone() for k, v in result.state["module"].items()}
        self.tensors = result.task.tensors
        if result.task.head is not None:
            self.heads[data.spec.name] = result.task.head
        self.tasks.append(data.spec.name)
        return {
            "steps": result.steps,
            "best_step": result.best_step,
            "seconds": result.seconds,
            "lr": config.lr,
        }

    def evaluate(
        self, spec: TaskSpec, examples: Sequence[Example], *, batch_size: int, limits: TextLimits
    ) -> EvalResult:
        if self.tensors is None:
            raise ConfigError(f"baseline {self.method} has not learnt any task yet")
        task = self._task(spec, self.tensors, self.heads.get(spec.name), limits)
        return evaluate(self.backbone, task, examples, batch_size=batch_size)

    def save_weights(self, folder: Path) -> None:
        """One file: the trainable module's state as `module.*` beside the ejected tensors
        under their own names (a prefix: `prefix`)."""
        if self.module_state is not None and self.tensors is not None:
            tensors = {
                f"module.{k}": v.to("cpu").contiguous() for k, v in self.module_state.items()
            }
            ejected = {k: v.to("cpu").contiguous() for k, v in self.tensors.items()}
            save_file({**tensors, **ejected}, str(folder / self.WEIGHTS))
        self._save_heads(folder)

    def load_weights(self, folder: Path) -> None:
        if (folder / self.WEIGHTS).exists():
            flat = load_file(str(folder / self.WEIGHTS))
            state = {k: v for k, v in flat.items() if k.startswith("module.")}
            ejected = {k: v for k, v in flat.items() if not k.startswith("module.")}
            self.tensors = self.prefix_config.check(ejected)
            self.module_state = {k.removeprefix("module."): v for k, v in state.items()}
        self._load_heads(folder)


# --- saved state ----------------------------------------------------------------------------

CURRENT = "CURRENT"
STATE = "state.json"


def save_learner(root: Path, learner: Learner) -> Path:
    """Write the learner (weights, heads, tasks, options, log) as a new complete state under
    `root` and point `CURRENT` at it atomically; older states are removed afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    number = _last_number(root) + 1
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        learner.save_weights(tmp)
        doc = {
            "format": FORMAT,
            "method": learner.method,
            "backbone": learner.backbone.name,
            "backbone_fingerprint": learner.backbone.fingerprint,
            "module_kind": learner.prefix_config.kind,
            "prefix_config": learner.prefix_config.to_dict(),
            "options": learner.options,
            "tasks": learner.tasks,
            "log": learner.log,
        }
        (tmp / STATE).write_text(json.dumps(doc, indent=1, sort_keys=True))
        for f in tmp.iterdir():
            _fsync(f)
        final = root / f"state-{number:05d}"
        os.replace(tmp, final)
        pointer = root / f".{CURRENT}.tmp"
        pointer.write_text(final.name + "\n")
        _fsync(pointer)
        os.replace(pointer, root / CURRENT)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in root.iterdir():
        if old.is_dir() and old != final and (old.name.startswith(("state-", ".tmp-"))):
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_learner(root: Path, method: str, backbone: Backbone) -> Learner | None:
    """The learner saved under `root`, or None if nothing was saved there yet."""
    pointer = root / CURRENT
    if not pointer.exists():
        return None
    folder = root / pointer.read_text().strip()
    try:
        doc = json.loads((folder / STATE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise IntegrityError(f"{folder / STATE}: unreadable baseline state ({e})") from None
    if doc.get("format") != FORMAT or doc.get("method") != method:
        raise IntegrityError(f"{folder / STATE}: not a saved {method} baseline")
    if doc["backbone_fingerprint"] != backbone.fingerprint:
        raise IntegrityError(
            f"{root}: baseline {method} was trained from backbone {doc['backbone']} "
            f"(fingerprint {doc['backbone_fingerprint'][:12]}…), not the loaded one "
            f"({backbone.fingerprint[:12]}…); use the stream's backbone"
        )
    # The prefix geometry it was created with wins over the caller's: a baseline's shape is fixed.
    config = config_from_dict(doc.get("module_kind", DEFAULT_KIND), doc["prefix_config"])
    learner = create_learner(method, backbone, config, doc["options"])
    learner.tasks = list(doc["tasks"])
    learner.log = list(doc["log"])
    learner.load_weights(folder)
    return learner


def _last_number(root: Path) -> int:
    """The highest state number used so far, including a state left by a save that died before
    switching `CURRENT` (never reused, so a new save never meets a half-written folder)."""
    numbers = [0]
    for p in root.iterdir():
        if p.name.startswith("state-") and p.name[6:].isdigit():
            numbers.append(int(p.name[6:]))
    return max(numbers)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
