"""`registry import` of a folder another tool wrote: a PEFT adapter saved by PEFT itself carries
no task spec and names its base model only by a hub id, so the command takes both from the
user (`--name` with `--labels` or `--kind generation`; `--backbone`), and checks that the module
runs on that backbone before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from continual.backbones import Backbone
from continual.inference import predict
from continual.objectives import objective_for
from pipelines.jobs import stored_task
from registry import PrefixRecord, Registry
from tasks.errors import ConfigError, ContinualError
from tasks.spec import TaskSpec

#: The input a module is tried on before it is registered.
PROBE = "A short sentence to check that the module runs on this backbone."


def task_from_flags(
    name: str | None, kind: str | None, labels: str | None, description: str
) -> TaskSpec | None:
    """The task spec `--name`, `--kind`, `--labels` and `--description` give (None: none given)."""
    if name is None:
        if kind or labels or description:
            raise ConfigError("--kind, --labels and --description name a task: add --name TASK")
        return None
    kind = kind or ("classification" if labels else None)
    if kind is None:
        raise ConfigError(
            f"--name {name}: say what the task is: --labels A,B,... (classification) or "
            "--kind generation"
        )
    if kind == "classification" and not labels:
        raise ConfigError(f"--name {name}: a classification task needs --labels A,B,...")
    words = tuple(x.strip() for x in labels.split(",")) if labels else ()
    return TaskSpec(name=name, kind=kind, labels=words, description=description, source="import")


def fits(backbone: Backbone, path: Path):
    """The `verify` of `Registry.import_`: the module, with its head if it has one, answers one
    input on `backbone`; else one line naming the folder and the backbone."""

    def verify(kind: str, config: dict[str, Any], tensors: dict[str, Any], spec: TaskSpec) -> None:
        head = any(k.startswith("head.") for k in tensors)
        if not head and objective_for(backbone, spec).new_head(backbone, spec, seed=0) is not None:
            raise ConfigError(
                f"{path}: a {spec.kind} task on {backbone.name} needs a task head, and the "
                "folder has none (a PEFT adapter carries only the module); export the task "
                "with `registry export` to move it with its head"
            )
        try:
            task = stored_task(dict(tensors), spec, kind, config)
            predict(backbone, [task], [(0, PROBE)], batch_size=1)
        except ContinualError as e:
            raise ConfigError(
                f"{path}: the {kind} module does not run on backbone {backbone.name}: {e}"
            ) from None
        except (RuntimeError, KeyError, ValueError, IndexError, AttributeError, TypeError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(
                f"{path}: the {kind} module does not run on backbone {backbone.name} ({why}); "
                "import it with the backbone it was trained on"
            ) from None

    return verify


def import_folder(
    reg: Registry,
    path: Path,
    *,
    backbone: Backbone | None,
    fingerprint: str | None,
    task: TaskSpec | None,
    new_version: bool,
) -> PrefixRecord:
    """Register the module folder `path`; with `backbone`, its record is stored and the module
    is tried on it first."""
    if backbone is None:
        return reg.import_(
            path, backbone_fingerprint=fingerprint, task=task, new_version=new_version
        )
    return reg.import_(
        path,
        backbone_fingerprint=backbone.fingerprint,
        task=task,
        new_version=new_version,
        backbone=backbone.info(),
        verify=fits(backbone, path),
    )
