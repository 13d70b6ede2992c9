"""`continual train`: one task, no stream. The arrival's own steps (validate and store the data,
plan the start, train, evaluate, register: `pipelines.arrival.steps`), or a resumed run of a
registered task from its stored optimizer state."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from continual import checkpoint
from continual.backbones import load_backbone
from continual.inference import evaluate
from continual.modules import DEFAULT_KIND
from continual.modules.prefix import prefix_config_for
from continual.train import TrainConfig, train, unflatten_state
from pipelines.arrival.plan import INIT, PREFIX_LENGTH, ArrivalPlan
from pipelines.arrival.steps import train_task
from pipelines.jobs import check_writable, register_trained, runtime, task_prefix_from_registry
from pipelines.progress import Progress, to_stderr
from pipelines.settings import RegistryArgs, pick_threads
from registry.artifacts import undone_on_error
from tasks.errors import ConfigError
from tasks.load import DataArgs, load_data


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
    tune: Any = None,
    training_state: bool = True,
    module: str | None = None,
    module_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume), evaluate on the eval split and register the prefix with its data;
    return a summary. The steps are the arrival's (`pipelines.arrival.steps`) without a stream.

    Everything that can be refused (bad data, a task name already taken, a prefix from another
    backbone, an `out` folder that cannot be written) is checked before training starts, so a
    refusal writes nothing.
    """
    started = time.perf_counter()
    if out is not None:
        check_writable(Path(out))
    data = load_data(data_args, name)
    task = data.spec.name
    backbone = load_backbone(backbone_name)
    with registry.open() as reg:
        exists = reg.has_task(task)
        if exists and not (new_version or resume):
            raise ConfigError(
                f"task {task} already exists in the registry; pass --new-version to train "
                f"version 2, or --resume {task} to continue its current prefix"
            )
        if resume and tune is not None:
            raise ConfigError(f"--resume {task} continues the stored prefix; drop --tune")
        if resume and (prefix_length is not None or positions or init):
            raise ConfigError(
                f"--resume {task} keeps the stored prefix's length, positions and init; drop "
                "--prefix-length, --positions and --init (or train --new-version instead)"
            )
        if resume and (module is not None or module_options):
            raise ConfigError(
                f"--resume {task} keeps the stored module and its options; drop --module and "
                "its options (or train --new-version instead)"
            )
        resume_state, lineage, vectors, start = None, [], None, None
        init = init or INIT
        length = PREFIX_LENGTH if prefix_length is None else prefix_length
        pconfig = prefix_config_for(backbone, length, positions).with_(init=init)
        choice = pick_threads(busy=False)
        run_extra: dict[str, Any] = {
            "resumed": resume,
            "data_fingerprint": data.fingerprint,
            "runtime": {**runtime(backbone), "thread_choice": choice.to_dict()},
        }
        if not resume:  # the arrival's own steps 2-3 (no starting points: no stream)
            plan = ArrivalPlan(
                name=task,
                data=data_args,
                config=config,
                prefix_length=length,
                positions=positions,
                init=init,
                tune=tune,
                module=module or DEFAULT_KIND,
                module_options=module_options or {},
            )
            # a search says each trial's options and score (its bars alone all read "train
            # TASK"); a plain run shows its one bar only
            say = to_stderr if progress and tune is not None else lambda _: None
            trained = train_task(
                reg, backbone, data, plan, log=Progress(say), tag=task, bars=progress,
                with_starts=False,
            )  # fmt: skip
            result, ev, lineage = trained.result, trained.evaluation, trained.lineage
            vectors, pconfig = trained.embeddings, trained.pconfig
            config = trained.config or config
            run_extra.update(trained.run_extra)
        else:
            if not exists:
                raise ConfigError(f"--resume {task}: no such task in the registry")
            current = task_prefix_from_registry(reg, task, backbone)
            flat = reg.load_optimizer_state(task)
            if flat is None:
                raise ConfigError(
                    f"--resume {task}: its current prefix has no stored training "
                    "state (an imported prefix, or one trained with --no-training-state or "
                    "training_state: false); train a new version instead (--new-version)"
                )
            pconfig, start = current.config, None
            resume_state = unflatten_state(flat)
            lineage = [(reg.show(task).current.id, 1.0, "resume")]
            vectors = None
            result = train(
                backbone, data, pconfig, config, init=start, resume=resume_state, progress=progress
            )
            ev = evaluate(backbone, result.task, data.eval, batch_size=config.eval_batch_size)
        tensors = checkpoint.task_tensors(result.task)
        # The data's file now; its row commits with the prefix (or the file goes again).
        with undone_on_error(reg.artifacts, reg.db) as written:
            stored = reg.data.stage(data, written)
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
                dataset=stored,
                training_state=training_state,
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
        "module": pconfig.kind,
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
        "prefix_path": (
            f"{registry.store}/{record.artifact_path}"
            if registry.store
            else str(registry.home / record.artifact_path)
        ),
        "prefix_sha256": record.sha256,
        "mlflow_run_id": record.mlflow_run_id,
        "predictions_sha256": ev.predictions_sha256,
        "train_seconds": result.seconds,
        "seconds": time.perf_counter() - started,
        **(
            {"tune": run_extra["tune"], "prefix_length": pconfig.length}
            if "tune" in run_extra
            else {}
        ),
        **({"out": str(out)} if out is not None else {}),
    }
