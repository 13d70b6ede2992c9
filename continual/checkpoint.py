"""A stored task module as plain files: `prefix.safetensors` (tensors) and `prefix.json`
(everything needed to rebuild and check it: task spec, module kind and config, text limits,
backbone name and fingerprint, sha256 of the tensor file, package versions). The file names
are the format's, whatever the module's kind.

Writes are atomic: the folder is written under a temporary name and renamed into place, so a
reader sees a complete prefix or none.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from continual.heads import ClassificationHead
from continual.inference import TrainedTask
from continual.modules import DEFAULT_KIND, ModuleConfig, config_from_dict, split_tensors
from continual.objectives import TextLimits
from tasks.assets import sha256_file
from tasks.errors import ConfigError, IntegrityError
from tasks.formats import (
    PREFIX_FORMAT,
    PREFIX_JSON,
    PREFIX_TENSORS,
    check_prefix_format,
    prefix_limits,
)
from tasks.spec import TaskSpec

FORMAT = PREFIX_FORMAT  # the one prefix-folder format (see tasks.formats)
TENSORS, META = PREFIX_TENSORS, PREFIX_JSON


def package_versions() -> dict[str, str]:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def task_tensors(task: TrainedTask) -> dict[str, torch.Tensor]:
    """The tensors stored for a task: its module's named tensors and its head's (`head.*`)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in task.tensors.items()}
    if task.head is not None:
        tensors.update({k: v.to("cpu") for k, v in task.head.tensors().items()})
    return tensors


def stored_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def task_from_tensors(
    tensors: dict[str, torch.Tensor], spec: TaskSpec, config: ModuleConfig, limits: TextLimits
) -> TrainedTask:
    """The task stored as `tensors` (`task_tensors`), its module checked against `config`."""
    module, head = split_tensors(tensors)
    return TrainedTask(
        spec=spec,
        config=config,
        tensors=config.check(module),
        head=ClassificationHead.from_tensors(head) if head else None,
        limits=limits,
    )


def save(folder: Path, task: TrainedTask, meta: dict[str, Any]) -> Path:
    """Write a task folder atomically (replacing an older one). Returns the folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; an exported prefix is meant to be shared
    try:
        save_file(task_tensors(task), str(tmp / TENSORS), metadata={"format": FORMAT})
        limits = {
            "max_length": task.limits.max_length,
            "max_target_length": task.limits.max_target_length,
        }
        doc = {
            "format": FORMAT,
            "task": task.spec.to_dict(),
            "module_kind": task.config.kind,
            "prefix_config": {**task.config.to_dict(), "limits": limits},
            "limits": limits,
            "sha256": sha256_file(tmp / TENSORS),
            "packages": package_versions(),
            **meta,
        }
        (tmp / META).write_text(json.dumps(doc, indent=2, sort_keys=True))
        for f in (tmp / TENSORS, tmp / META):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_meta(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    meta_path = folder / META
    if not meta_path.exists():
        raise ConfigError(
            f"{folder}: not a prefix folder (no {META}); give the folder that "
            "`continual train --out` or `registry export` wrote"
        )
    try:
        doc = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise IntegrityError(f"{meta_path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{meta_path}: must hold a JSON object")
    check_prefix_format(doc, meta_path)
    return doc


def load(folder: Path, *, backbone_fingerprint: str | None = None) -> tuple[TrainedTask, dict]:
    """Load a task folder, verifying the tensor file's sha256 and, when given, that it was
    trained on the backbone with this fingerprint."""
    folder = Path(folder)
    doc = read_meta(folder)
    tensor_path = folder / TENSORS
    if not tensor_path.exists():
        raise IntegrityError(f"{tensor_path}: missing; the prefix folder is incomplete")
    actual = sha256_file(tensor_path)
    if actual != doc["sha256"]:
        raise IntegrityError(
            f"{tensor_path}: sha256 {actual[:16]}… does not match the recorded "
            f"{doc['sha256'][:16]}…; the file is corrupt or was changed — retrain or restore it"
        )
    want = doc.get("backbone", {}).get("fingerprint")
    if backbone_fingerprint is not None and want != backbone_fingerprint:
        raise IntegrityError(
            f"{folder}: this prefix was trained on backbone {doc['backbone'].get('name')!r} "
            f"(fingerprint {str(want)[:12]}…), not on the loaded one ({backbone_fingerprint[:12]}…)"
        )
    tensors = load_file(str(tensor_path))
    task = task_from_tensors(
        tensors,
        TaskSpec.from_dict(doc["task"]),
        config_from_dict(doc.get("module_kind", DEFAULT_KIND), doc["prefix_config"]),
        TextLimits(**prefix_limits(doc)),
    )
    return task, doc
