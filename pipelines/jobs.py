"""Single-task jobs behind the CLI: train (into the registry), evaluate and predict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from continual import checkpoint
from continual.backbones import Backbone, load_backbone
from continual.backbones import catalog as catalog_backbones
from continual.inference import EvalResult, TrainedTask
from continual.modules import DEFAULT_KIND, ModuleConfig, config_from_dict
from continual.objectives import TextLimits, objective_for
from continual.train import TrainConfig, TrainResult, flatten_state
from registry import BackboneRecord, PrefixRecord, Registry, TaskView
from tasks.errors import ConfigError, ContinualError
from tasks.spec import TaskData, TaskSpec


def current_view(reg: Registry, task: str) -> TaskView:
    """`task`'s registry view, refusing a task that has no usable current prefix."""
    view = reg.show(task)
    if view.current is None:
        raise ConfigError(f"task {task} has no usable prefix in the registry; train it first")
    return view


def task_prefix_from_registry(reg: Registry, task: str, backbone: Backbone) -> TrainedTask:
    """The current prefix of `task`, verified against its sha256 and the backbone's fingerprint."""
    return trained_task(reg, current_view(reg, task), backbone)


def trained_task(reg: Registry, view: TaskView, backbone: Backbone) -> TrainedTask:
    """The view's current prefix (the record read with the view, so spec and tensors agree),
    verified against its sha256 and the backbone's fingerprint."""
    assert view.current is not None  # current_view refuses a task without one
    tensors, record = reg.load_prefix(view.current.id, backbone.fingerprint)
    return stored_task(tensors, TaskSpec.from_dict(view.task.spec), record.kind, record.config)


def stored_task(
    tensors: dict[str, Any], spec: TaskSpec, kind: str | None, config: dict[str, Any]
) -> TrainedTask:
    """A task from its stored tensors, module kind and config (the config's text limits too)."""
    module = config_from_dict(kind or DEFAULT_KIND, config)
    limits = TextLimits(**config.get("limits", {}))
    return checkpoint.task_from_tensors(tensors, spec, module, limits)


def check_writable(out: Path) -> None:
    """Refuse, before anything is written, an output folder that cannot be created or replaced
    (a file in the way, or no write permission where it would go)."""
    import os

    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: a file is in the way; give a folder path")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: cannot write under {parent}; choose a writable folder")


def runtime(backbone: Backbone) -> dict[str, Any]:
    """Where a run ran: the backbone's device and dtype and torch's thread count (recorded
    with every run)."""
    import torch

    return {**backbone.runtime.to_dict(), "threads": torch.get_num_threads()}


def base_model_id(backbone: Backbone) -> str:
    """What PEFT's `base_model_name_or_path` should say: the hub id of an embedded backbone
    (whose weights, for smollm2, are a dequantized copy: the fingerprint is the real check), the
    hub id given, or the local folder."""
    entry = catalog_backbones().get(backbone.name)
    if entry is not None:
        return entry.hub_id
    return backbone.source.removeprefix("hub:")


def register_trained(
    reg: Registry,
    *,
    backbone: Backbone,
    data: TaskData,
    prefix_config: ModuleConfig,
    config: TrainConfig,
    result: TrainResult,
    evaluation: EvalResult,
    lineage: list[tuple[int, float, str]],
    new_version: bool,
    position: int | None = None,
    run_extra: dict[str, Any] | None = None,
    embeddings: dict[str, Any] | None = None,
    stream: str | None = None,
    data_sha256: str | None = None,
    dataset: dict[str, Any] | None = None,
    training_state: bool = True,
) -> PrefixRecord:
    """Register a trained prefix with its eval score (at `position` of `stream`, if any) and
    what reproduces the run; `run_extra` adds keys to the run's config; `embeddings` (task
    embedding, routing keys) are stored in the same unit of work; `data_sha256` names the
    stored data it was trained and evaluated on, or `dataset` (a `reg.data.stage` row) is that
    data's row, committed with the prefix. `training_state` False stores no optimizer state
    (the task cannot be resumed)."""
    return reg.register_prefix(
        task=data.spec,
        data_fingerprint=data.fingerprint,
        backbone=backbone.info(),
        tensors=checkpoint.task_tensors(result.task),
        prefix_config={
            **prefix_config.to_dict(),
            "backbone": backbone.name,
            "base_model": base_model_id(backbone),
            "limits": {
                "max_length": config.max_length,
                "max_target_length": config.max_target_length,
            },
            "task_type": objective_for(backbone, data.spec).peft_task_type,
        },
        train_summary={
            "steps": result.steps,
            "seconds": result.seconds,
            "final_loss": result.final_loss,
            "losses": result.losses,
            "n_trainable": result.trainable_params,
        },
        lineage=lineage,
        run={
            "seed": config.seed,
            "config": {
                "train": config.to_dict(),
                "prefix": prefix_config.to_dict(),
                "data": data.spec.to_dict(),
                "backbone": backbone.info(),
                **(run_extra or {}),
            },
            "packages": checkpoint.package_versions(),
            "backbone_fingerprint": backbone.fingerprint,
        },
        evaluation={
            "metric": evaluation.metric,
            "value": evaluation.score,
            "n": evaluation.n,
            "predictions_sha256": evaluation.predictions_sha256,
            "position": position,
        },
        optimizer_state=flatten_state(result.state) if training_state else None,
        new_version=new_version,
        embeddings=embeddings,
        kind=prefix_config.kind,
        data_sha256=data_sha256 or (dataset or {}).get("sha256"),
        dataset=dataset,
        stream=stream,
    )


def backbone_ref(info: dict[str, Any] | BackboneRecord) -> str:
    """What to load for the backbone a stored prefix names: a catalog name (or a catalog
    backbone's hub id), the folder or hub id it was loaded from, else its name (a bare PEFT
    adapter's source is "peft" and its name the adapter's `base_model_name_or_path`)."""
    if isinstance(info, BackboneRecord):
        info = info.to_dict()
    name, source = str(info["name"]), str(info.get("source") or "")
    catalog = catalog_backbones()
    if name in catalog:
        return name
    by_hub_id = {e.hub_id: n for n, e in catalog.items()}
    if name in by_hub_id:
        return by_hub_id[name]
    if source.startswith("hub:") or Path(source).is_absolute():
        return source.removeprefix("hub:")
    return name


def backbone_for(info: dict[str, Any] | BackboneRecord) -> Backbone:
    """Load the backbone a stored prefix names (`backbone_ref`)."""
    return load_backbone(backbone_ref(info))


def stored_backbone(reg: Registry, task: str, name: str | None = None) -> Backbone:
    """The backbone `task`'s current prefix was trained on, from the registry's backbone row
    (every prefix has one, imported prefixes too; the run's config may not name it), or the
    backbone `name` when given (the prefix's fingerprint is still checked when it is loaded)."""
    if name:
        return load_backbone(name)
    info = reg.backbone(current_view(reg, task).current.backbone_fingerprint)
    try:
        return backbone_for(info)
    except ContinualError as e:
        raise ConfigError(
            f"task {task}: its backbone {info.name!r} (from {info.source}) cannot be loaded "
            f"here ({e}); pass --backbone NAME_OR_FOLDER"
        ) from None
