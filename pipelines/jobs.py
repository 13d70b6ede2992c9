"""Single-task jobs behind the CLI: train (into the registry), evaluate and predict."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continual import checkpoint
from continual.backbones import Backbone, load_backbone
from continual.backbones import catalog as catalog_backbones
from continual.inference import EvalResult, TrainedTask, evaluate
from continual.modules import DEFAULT_KIND, ModuleConfig, config_from_dict, module_kind
from continual.objectives import TextLimits, objective_for
from continual.train import TrainConfig, TrainResult, flatten_state, train, unflatten_state
from pipelines.settings import RegistryArgs
from pipelines.similar import plan_start, start_info
from registry import PrefixRecord, Registry, TaskView
from tasks.errors import ConfigError, ContinualError
from tasks.sources import load_files
from tasks.spec import TaskData, TaskSpec
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


def prefix_config_for(backbone: Backbone, length: int, positions: str | None) -> ModuleConfig:
    """A prefix of `length` for `backbone` (positions: the kind's default for the backbone's
    kind when None; see `continual.modules.prefix.DEFAULT_POSITIONS`)."""
    return module_kind("prefix").config_for(backbone, length=length, positions=positions)


def current_view(reg: Registry, task: str) -> TaskView:
    """`task`'s registry view, refusing a task that has no usable current prefix."""
    view = reg.show(task)
    if view.current is None:
        raise ConfigError(f"task {task} has no usable prefix in the registry; train it first")
    return view


def task_prefix_from_registry(reg: Registry, task: str, backbone: Backbone) -> TrainedTask:
    """The current prefix of `task`, verified against its sha256 and the backbone's fingerprint."""
    view = current_view(reg, task)
    tensors, record = reg.load_prefix(task, backbone.fingerprint)
    config = config_from_dict(DEFAULT_KIND, record.config)  # the registry stores prefixes
    limits = TextLimits(**record.config.get("limits", {}))
    return checkpoint.task_from_tensors(tensors, TaskSpec.from_dict(view.task.spec), config, limits)


def _known(reg: Registry, name: str) -> bool:
    try:
        reg.show(name)
    except ContinualError:
        return False
    return True


def run_train(
    *,
    backbone_name: str,
    data_args: DataArgs,
    name: str | None,
    prefix_length: int | None,
    positions: str | None,
    config: TrainConfig,
    registry: RegistryArgs,
    init: str | None = None,
    out: Path | None = None,
    new_version: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume), evaluate on the eval split and register the prefix; return a summary.

    Everything that can be refused (bad data, a task name already taken, a prefix from another
    backbone) is checked before training starts, so a refusal writes nothing.
    """
    started = time.perf_counter()
    data = load_data(data_args, name)
    task = data.spec.name
    backbone = load_backbone(backbone_name)
    with registry.open() as reg:
        exists = _known(reg, task)
        if exists and not (new_version or resume):
            raise ConfigError(
                f"task {task} already exists in the registry; pass --new-version to train "
                f"version 2, or --resume {task} to continue its current prefix"
            )
        if resume and (prefix_length is not None or positions or init):
            raise ConfigError(
                f"--resume {task} keeps the stored prefix's length, positions and init; drop "
                "--prefix-length, --positions and --init (or train --new-version instead)"
            )
        resume_state, lineage, vectors, start = None, [], None, None
        init = init or "auto"
        pconfig = prefix_config_for(backbone, prefix_length or 16, positions).with_(init=init)
        run_extra: dict[str, Any] = {"resumed": resume}
        if not resume:
            planned, vectors = plan_start(reg, backbone, data, pconfig)
            start, lineage = planned.tensors, planned.lineage()
            run_extra["init"] = start_info(planned)
        if resume:
            if not exists:
                raise ConfigError(f"--resume {task}: no such task in the registry")
            current = task_prefix_from_registry(reg, task, backbone)
            flat = reg.load_optimizer_state(task)
            if flat is None:
                raise ConfigError(
                    f"--resume {task}: its current prefix has no stored training "
                    "state (imported prefixes cannot be resumed)"
                )
            pconfig, start = current.config, None
            resume_state = unflatten_state(flat)
            lineage = [(reg.show(task).current.id, 1.0, "resume")]
        result = train(
            backbone, data, pconfig, config, init=start, resume=resume_state, progress=progress
        )
        ev = evaluate(backbone, result.task, data.eval, batch_size=config.eval_batch_size)
        tensors = checkpoint.task_tensors(result.task)
        record = register_trained(
            reg,
            backbone=backbone,
            data=data,
            prefix_config=pconfig,
            config=config,
            result=result,
            evaluation=ev,
            lineage=lineage,
            new_version=exists,
            run_extra=run_extra,
            embeddings=vectors,
        )
    if out is not None:
        checkpoint.save(
            Path(out),
            result.task,
            {
                "backbone": backbone.info(),
                "train_config": config.to_dict(),
                "data_fingerprint": data.fingerprint,
                "metrics": ev.summary(),
            },
        )
    stored = checkpoint.stored_bytes(tensors)
    return {
        "task": task,
        "kind": data.spec.kind,
        "version": record.version,
        "backbone": backbone.name,
        "backbone_fingerprint": backbone.fingerprint,
        "metric": ev.metric,
        "score": ev.score,
        **ev.extra,
        "n_eval": ev.n,
        "steps": result.steps,
        "best_step": result.best_step,
        "first_loss": result.losses[0] if result.losses else None,
        "final_loss": result.final_loss,
        "trainable_params": result.trainable_params,
        "stored_params": sum(t.numel() for t in tensors.values()),
        "stored_bytes": stored,
        "backbone_bytes": backbone.n_bytes,
        "stored_fraction": stored / backbone.n_bytes,
        "prefix_id": record.id,
        "prefix_path": str(registry.home / record.artifact_path),
        "prefix_sha256": record.sha256,
        "mlflow_run_id": record.mlflow_run_id,
        "predictions_sha256": ev.predictions_sha256,
        "train_seconds": result.seconds,
        "seconds": time.perf_counter() - started,
        **({"out": str(out)} if out is not None else {}),
    }


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
) -> PrefixRecord:
    """Register a trained prefix with its eval score (at stream `position`, if any) and what
    reproduces the run; `run_extra` adds keys to the run's config; `embeddings` (task
    embedding, routing keys) are stored in the same unit of work."""
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
        optimizer_state=flatten_state(result.state),
        new_version=new_version,
        embeddings=embeddings,
    )


def backbone_for(info: dict[str, Any]) -> Backbone:
    """Load the backbone a stored prefix names: a catalog name, a folder or a hub id."""
    if info["name"] in catalog_backbones():
        return load_backbone(info["name"])
    return load_backbone(str(info["source"]).removeprefix("hub:"))
