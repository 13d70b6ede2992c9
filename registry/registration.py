"""Registering a prefix: check the inputs, store the files, then commit the rows.

The order is what keeps the registry consistent: nothing is written for a refused call; the
tensor files are stored (atomically, content-addressed) before the transaction that points at
them, so a committed row always has its file; and the transaction is retried when it loses a
race (a version number or a new task name taken by another process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from registry import exchange, inputs
from registry.artifacts import undone_on_error
from registry.integrity import STORE_KEY
from registry.records import PrefixRecord
from registry.stream_repository import pack_vector
from registry.streams import DEFAULT_STREAM, check_stream
from registry.uow import UnitOfWork
from tasks.errors import ConfigError
from tasks.spec import TaskSpec

if TYPE_CHECKING:
    import torch

    from registry.ports import RegistryCore


def store(
    reg: RegistryCore,
    *,
    task: TaskSpec,
    data_fingerprint: str,
    backbone: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    prefix_config: dict[str, Any],
    train_summary: dict[str, Any],
    lineage: Any,
    run: dict[str, Any],
    evaluation: dict[str, Any] | None,
    optimizer_state: dict[str, torch.Tensor] | None,
    new_version: bool,
    embeddings: dict[str, Any] | None = None,
    kind: str = "prefix",
    data_sha256: str | None = None,
    stream: str | None = None,
    dataset: dict[str, Any] | None = None,
) -> PrefixRecord:
    """`Registry.register_prefix` without the MLflow mirror; returns the committed record."""
    if not isinstance(task, TaskSpec):
        raise ConfigError(f"task must be a TaskSpec, got {type(task).__name__}")
    if not isinstance(data_fingerprint, str) or not data_fingerprint:
        raise ConfigError(f"task {task.name}: data_fingerprint must be a non-empty string")
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"task {task.name}: the module kind must be a non-empty string")
    bb = inputs.backbone(backbone)
    plain = inputs.tensors(tensors)
    config = inputs.module_config(kind, prefix_config, plain)
    n_stored = sum(t.numel() for t in plain.values())
    summary, losses = inputs.train_summary(train_summary, n_stored)
    run_info = inputs.run(run, bb.fingerprint)
    edges = inputs.lineage(lineage)
    ev = inputs.evaluation(evaluation)
    vectors = inputs.embeddings(embeddings)
    position = ev.get("position") if ev is not None else None
    if position is not None:
        stream = check_stream(stream or DEFAULT_STREAM)
    elif stream is not None:
        raise ConfigError(f"task {task.name}: registering into stream {stream} needs a position")

    def refuse(uow: UnitOfWork) -> None:
        existing = uow.tasks.find(task.name)
        if existing is not None and not new_version:
            nxt = uow.prefixes.next_version(existing.id)
            raise ConfigError(
                f"task {task.name} already exists in the registry; pass "
                f"--new-version to train version {nxt}"
            )
        if existing is not None and existing.kind != task.kind:
            raise ConfigError(
                f"task {task.name} is a {existing.kind} task in the registry, "
                f"not {task.kind}; register it under another name"
            )
        missing = uow.prefixes.missing(s for s, _, _ in edges)
        if missing:
            raise ConfigError(
                f"lineage of task {task.name}: source prefix ids "
                f"{sorted(missing)} are not in the registry"
            )

    # Checked before any file is written (so a refused call leaves no orphan file) and
    # again inside the write transaction (another process may have registered meanwhile).
    reg.db.read(refuse)
    # Which workspace's store holds the files (see `registry.integrity`); replaces whatever an
    # imported prefix's exported run said.
    run_info["config"] = {
        **run_info["config"],
        STORE_KEY: {"id": reg.artifacts.store_id(create=True), "path": reg.artifacts.location},
    }
    # Files written here are removed again if the row that references them does not commit
    # (a refusal found inside the transaction, a full disk, a lost database).
    with undone_on_error(reg.artifacts, reg.db) as written:
        stored = reg.artifacts.put_tensors(plain, exchange.file_metadata(task.name, bb, config))
        written.append(stored)
        opt = None
        if optimizer_state is not None:
            opt_tensors = inputs.tensors(optimizer_state, "optimizer_state")
            opt = reg.artifacts.put_tensors(
                opt_tensors, {"format": "continual.optimizer/1", "task": task.name}
            )
            written.append(opt)

        def write(uow: UnitOfWork) -> PrefixRecord:
            refuse(uow)
            if dataset is not None:
                uow.datasets.add(**dataset)
            task_id = uow.tasks.save(
                name=task.name,
                kind=task.kind,
                spec=task.to_dict(),
                data_fingerprint=data_fingerprint,
                description=task.description,
            )
            prefix_id = uow.prefixes.add(
                task_id=task_id,
                version=uow.prefixes.next_version(task_id),
                lineage=edges,
                backbone_id=uow.backbones.ensure(bb),
                run_id=uow.runs.add(**run_info),
                config=config,
                artifact_path=stored.path,
                sha256=stored.sha256,
                n_bytes=stored.n_bytes,
                n_trainable=summary.n_trainable,
                n_stored=n_stored,
                optimizer_path=opt and opt.path,
                optimizer_sha256=opt and opt.sha256,
                train_steps=summary.steps,
                train_seconds=summary.seconds,
                final_loss=summary.final_loss,
                losses=losses,
                kind=kind,
                data_sha256=data_sha256,
            )
            sid = None if stream is None else uow.streams.ensure(stream)
            if ev is not None:
                uow.evaluations.add(
                    prefix_id=prefix_id, task_id=task_id, method="prefix", stream_id=sid, **ev
                )
            if sid is not None:
                # The arrival row is written with the prefix: a registration that commits has
                # taken its stream position, and a refused one has taken nothing.
                uow.arrivals.add_arrival(
                    stream_id=sid,
                    position=position,
                    task_id=task_id,
                    method="prefix",
                    status="running",
                )
            for method, dim, values in vectors:
                uow.arrivals.add_embedding(
                    task_id=task_id, method=method, dim=dim, vector=pack_vector(values)
                )
            record = uow.prefixes.get(prefix_id)
            assert record is not None
            return record

        return reg.db.write(write, retry_conflicts=True)
