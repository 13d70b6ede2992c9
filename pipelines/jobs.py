"""Single-task jobs behind the CLI: train, evaluate and predict with one prefix."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continual import checkpoint
from continual.backbones import Backbone, load_backbone
from continual.backbones import catalog as catalog_backbones
from continual.inference import TaskPrefix, evaluate, predict
from continual.prefix import PrefixConfig
from continual.train import TrainConfig, train
from tasks.errors import ConfigError
from tasks.sources import load_files
from tasks.spec import TaskData


@dataclass(frozen=True)
class DataArgs:
    """Where a task's data comes from: a catalog name or local files (or hub names)."""

    dataset: str | None = None
    train: str | None = None
    eval: str | None = None
    kind: str = "classification"
    text_field: str = "text"
    target_field: str = "label"
    description: str = ""
    max_train: int | None = None
    seed: int = 0


def load_data(args: DataArgs, name: str | None = None) -> TaskData:
    """Validate and load a task's data (nothing is written before this succeeds)."""
    if args.dataset and args.train:
        raise ConfigError("give either --dataset NAME or --train FILE, not both")
    if args.dataset:
        from tasks import catalog

        data = catalog.load(args.dataset, seed=args.seed, max_train=args.max_train)
        if name and name != data.spec.name:
            data = TaskData(spec=data.spec.with_(name=name), train=data.train, eval=data.eval,
                            fingerprint=data.fingerprint)
        return data
    if not args.train:
        raise ConfigError("no data: give --dataset NAME (see `continual data list`) or --train FILE")
    if not name:
        raise ConfigError("--name TASK is required with --train FILE")
    return load_files(
        name=name, train=args.train, eval=args.eval, kind=args.kind,
        text_field=args.text_field, target_field=args.target_field,
        description=args.description, seed=args.seed, max_train=args.max_train,
    )


def prefix_config_for(backbone: Backbone, length: int, positions: str | None) -> PrefixConfig:
    g = backbone.geometry
    # Encoders default to explicit positions (measured better, see README); decoders keep the
    # shifted positions that transformers and PEFT use with a cache.
    default = "explicit" if backbone.kind == "encoder" else "shifted"
    return PrefixConfig(length=length, layers=g.layers, kv_heads=g.kv_heads, head_dim=g.head_dim,
                        hidden_size=g.hidden_size, positions=positions or default)


def run_train(
    *,
    backbone_name: str,
    data_args: DataArgs,
    name: str | None,
    prefix_length: int,
    positions: str | None,
    config: TrainConfig,
    home: Path,
    out: Path | None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, evaluate on the eval split, store the prefix in the workspace; return a summary."""
    started = time.perf_counter()
    data = load_data(data_args, name)
    backbone = load_backbone(backbone_name)
    pconfig = prefix_config_for(backbone, prefix_length, positions)
    result = train(backbone, data, pconfig, config, progress=progress)
    ev = evaluate(backbone, result.task, data.eval, batch_size=config.eval_batch_size)
    tensors = checkpoint.task_tensors(result.task)
    n_stored = sum(t.numel() for t in tensors.values())
    meta = {
        "backbone": backbone.info(),
        "train_config": config.to_dict(),
        "data_fingerprint": data.fingerprint,
        "metrics": ev.summary(),
        "training": {"steps": result.steps, "best_step": result.best_step,
                     "seconds": result.seconds, "final_loss": result.final_loss,
                     "stopped_early": result.stopped_early, "validations": result.validations},
        "trainable_params": result.trainable_params,
        "stored_params": n_stored,
    }
    folder = checkpoint.save(home / "prefixes" / data.spec.name, result.task, meta)
    if out is not None:
        checkpoint.save(Path(out), result.task, meta)
    doc = checkpoint.read_meta(folder)
    stored = checkpoint.stored_bytes(tensors)
    return {
        "task": data.spec.name,
        "kind": data.spec.kind,
        "backbone": backbone.name,
        "backbone_fingerprint": backbone.fingerprint,
        "metric": ev.metric,
        "score": ev.score,
        **ev.extra,
        "n_eval": ev.n,
        "steps": result.steps,
        "best_step": result.best_step,
        "final_loss": result.final_loss,
        "trainable_params": result.trainable_params,
        "stored_params": n_stored,
        "stored_bytes": stored,
        "backbone_bytes": backbone.n_bytes,
        "stored_fraction": stored / backbone.n_bytes,
        "prefix_path": str(folder),
        "prefix_sha256": doc["sha256"],
        "predictions_sha256": ev.predictions_sha256,
        "train_seconds": result.seconds,
        "seconds": time.perf_counter() - started,
    }


def _load_prefix(prefix_dir: Path) -> tuple[Backbone, TaskPrefix, dict]:
    doc = checkpoint.read_meta(prefix_dir)
    info = doc["backbone"]
    if info["name"] in catalog_backbones():
        source = info["name"]
    else:
        source = info["source"].removeprefix("hub:")
    backbone = load_backbone(source)
    task, doc = checkpoint.load(prefix_dir, backbone_fingerprint=backbone.fingerprint)
    return backbone, task, doc


def run_evaluate(*, prefix_dir: Path, data_args: DataArgs, batch_size: int) -> dict[str, Any]:
    backbone, task, doc = _load_prefix(prefix_dir)
    spec = task.spec
    if data_args.dataset:
        examples = load_data(data_args, spec.name).eval
    elif data_args.eval:
        # The file is read with the task's own fields and label set, so unknown labels are caught.
        examples = load_files(
            name=spec.name, train=data_args.eval, eval=data_args.eval, kind=spec.kind,
            text_field=data_args.text_field or spec.text_field,
            target_field=data_args.target_field or spec.target_field,
            labels=list(spec.labels) or None, description=spec.description,
        ).eval
    else:
        raise ConfigError("give the data to evaluate on: --dataset NAME or --eval FILE")
    ev = evaluate(backbone, task, examples, batch_size=batch_size)
    return {"task": task.spec.name, "backbone": backbone.name, **ev.summary()}


def run_predict(*, prefix_dir: Path, texts: list[str], batch_size: int) -> dict[str, Any]:
    if not texts:
        raise ConfigError("give at least one TEXT to predict")
    backbone, task, _ = _load_prefix(prefix_dir)
    preds = predict(backbone, [task], [(0, t) for t in texts], batch_size=batch_size)
    return {"task": task.spec.name, "predictions": [
        {"text": t, "prediction": p} for t, p in zip(texts, preds)]}
