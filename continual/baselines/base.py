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
`state.json` lists the sha256 of every weight file beside it; loading verifies them, and
`registry check` does too, so a flipped byte is refused instead of silently used.
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

from safetensors.torch import load_file, save_file

from continual.backbones import Backbone
from continual.heads import ClassificationHead
from continual.inference import EvalResult
from continual.modules import DEFAULT_KIND, ModuleConfig, config_from_dict
from continual.objectives import TextLimits
from continual.train import TrainConfig
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
        # The complete saved state this learner was loaded from or last saved as (None before
        # the first save): unchanged files may be hard-linked from it rather than written again.
        self.saved_as: Path | None = None

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
            ).to(self.backbone.device)  # saved from any device, used on the backbone's


_BASELINES: dict[str, type[Learner]] = {}


def register_baseline(cls: type[Learner]) -> type[Learner]:
    if cls.method in _BASELINES:
        raise ConfigError(f"baseline {cls.method!r} is registered twice")
    _BASELINES[cls.method] = cls
    return cls


def baselines() -> list[str]:
    return sorted(_BASELINES)


def known_options(method: str) -> list[str]:
    """The options baseline `method` takes (its `default_options`)."""
    if method not in _BASELINES:
        raise ConfigError(f"unknown baseline {method!r}; choose from {', '.join(baselines())}")
    return sorted(_BASELINES[method].default_options)


def create_learner(
    method: str, backbone: Backbone, prefix_config: ModuleConfig, options: dict[str, Any]
) -> Learner:
    if method not in _BASELINES:
        raise ConfigError(f"unknown baseline {method!r}; choose from {', '.join(baselines())}")
    return _BASELINES[method](backbone, prefix_config, dict(options))


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
            "files": _manifest(tmp, learner.saved_as),
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
    learner.saved_as = final
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
    for name, expected in (doc.get("files") or {}).items():  # absent in states before 2026-12
        actual = _sha256(folder / name)
        if actual != expected:
            found = "is missing" if actual is None else f"is corrupt (sha256 {actual})"
            raise IntegrityError(
                f"{folder / name}: this file of baseline {method}'s saved state {found}; "
                f"expected sha256 {expected}. Rerun the stream in a fresh workspace to rebuild it"
            )
    learner.tasks = list(doc["tasks"])
    learner.log = list(doc["log"])
    learner.load_weights(folder)
    learner.saved_as = folder
    return learner


def _last_number(root: Path) -> int:
    """The highest state number used so far, including a state left by a save that died before
    switching `CURRENT` (never reused, so a new save never meets a half-written folder)."""
    numbers = [0]
    for p in root.iterdir():
        if p.name.startswith("state-") and p.name[6:].isdigit():
            numbers.append(int(p.name[6:]))
    return max(numbers)


def saved_tasks(folder: Path | None) -> list[str]:
    """The tasks of the complete state saved in `folder` (empty if none or unreadable)."""
    if folder is None:
        return []
    try:
        return list(json.loads((folder / STATE).read_text())["tasks"])
    except (OSError, ValueError, KeyError):
        return []


def hard_link(src: Path, dest: Path) -> bool:
    """Hard-link `src` as `dest` (no bytes written); False where the file system refuses."""
    try:
        os.link(src, dest)
    except OSError:
        return False
    return True


def _manifest(folder: Path, previous: Path | None) -> dict[str, str]:
    """The sha256 of each file in `folder`; a file hard-linked from the `previous` state keeps
    that state's recorded hash instead of being read again."""
    known: dict[str, str] = {}
    if previous is not None:
        try:
            known = json.loads((previous / STATE).read_text()).get("files") or {}
        except (OSError, ValueError):
            known = {}
    out = {}
    for f in sorted(folder.iterdir()):
        same = f.name in known and _same_file(f, previous / f.name) if previous else False
        out[f.name] = known[f.name] if same else _sha256(f)
    return out


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _sha256(path: Path) -> str | None:
    """The file's sha256, or None if it is not there."""
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
