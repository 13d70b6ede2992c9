"""Export a stored prefix (as a PEFT prefix-tuning adapter or our own files) and import it back.

Our format: `prefix.safetensors` (every tensor, byte-identical to the stored artifact) and
`prefix.json` (task spec, data fingerprint, backbone, prefix config, training summary, run,
lineage as it was, sha256 of the tensor file).

PEFT format: `adapter_config.json` (PrefixTuningConfig fields) and `adapter_model.safetensors`
holding `prompt_embeddings` [P, layers*2*kv_heads*head_dim], which PEFT views as
[P, layers*2, kv_heads, head_dim]. Beside them `continual_export.json` carries what PEFT has no
field for (task spec, backbone fingerprint, a note when the prefix's position convention is not
PEFT's "shifted") and `continual_head.safetensors` any head tensors.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.artifacts import sha256_bytes, tensors_to_bytes
from registry.inputs import PREFIX_KEY
from registry.records import BackboneRecord, ExportRecord, PrefixRecord
from tasks.errors import ConfigError, IntegrityError
from tasks.formats import (
    PREFIX_FORMAT,
    PREFIX_JSON,
    PREFIX_TENSORS,
    check_prefix_format,
    prefix_limits,
)
from tasks.spec import TaskSpec

if TYPE_CHECKING:
    from registry.ports import RegistryCore

FORMAT = PREFIX_FORMAT  # the one prefix-folder format (see tasks.formats)
PEFT_POSITION = "shifted"  # PEFT feeds a prefix as past_key_values: real tokens start at P
OURS_JSON, OURS_TENSORS = PREFIX_JSON, PREFIX_TENSORS
PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
#: Module kinds PEFT has an adapter format for (P-tuning v2's deep prompts go out as prefix
#: tuning); the rest are `registry.exchange_peft`'s.
PEFT_KINDS = ("prefix", "ptuning", "lora", "ia3", "prompt")
SIDECAR, HEAD_FILE = "continual_export.json", "continual_head.safetensors"
_TASK_TYPE_FOR_KIND = {"classification": "SEQ_CLS", "generation": "CAUSAL_LM"}


def file_metadata(task: str, backbone: BackboneRecord, config: dict[str, Any]) -> dict[str, str]:
    """The safetensors header metadata of a stored prefix: enough to rebuild and check it."""
    return {
        "format": FORMAT,
        "task": task,
        "backbone": backbone.name,
        "backbone_fingerprint": backbone.fingerprint,
        "prefix_config": json.dumps(config, sort_keys=True),
    }


def export(
    reg: RegistryCore, task: str, fmt: str, out: Path, *, version: int | None
) -> ExportRecord:
    if fmt not in ("peft", "safetensors"):
        raise ConfigError(f"export format {fmt!r} is not one of peft, safetensors")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: a file is in the way; give a folder path")
    record = reg.prefix(task, version)
    tensors, record = reg.load_prefix(record.id, record.backbone_fingerprint)
    data = reg.artifacts.read_verified(record.artifact_path, record.sha256)
    if fmt == "peft" and (record.kind or PREFIX_KEY) not in PEFT_KINDS:
        raise ConfigError(
            f"PEFT has no adapter format for a {record.kind} module; export it with "
            "--format safetensors"
        )
    about = _about(reg, record)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        _write(out / OURS_TENSORS, data)
        _write(out / OURS_JSON, _json(about))
        files = [OURS_TENSORS, OURS_JSON]
    elif record.kind in ("prefix", "ptuning"):
        files = _export_peft(out, record, tensors, about)
    else:
        files = _export_adapter(out, record, tensors, about)
    return ExportRecord(
        task=record.task,
        version=record.version,
        prefix_id=record.id,
        format=fmt,
        out=str(out),
        files=tuple(files),
    )


def _about(reg: RegistryCore, record: PrefixRecord) -> dict[str, Any]:
    def read(uow: Any) -> dict[str, Any]:
        t = uow.tasks.get(record.task)
        b = uow.backbones.get(record.backbone_fingerprint)
        run = uow.runs.get(record.run_id) if record.run_id is not None else None
        return {
            "format": FORMAT,
            "task": t.spec,
            "data_fingerprint": t.data_fingerprint,
            "backbone": {
                "name": b.name,
                "source": b.source,
                "fingerprint": b.fingerprint,
                "n_params": b.n_params,
                "config": b.config,
            },
            "prefix_config": record.config,
            "module_kind": record.kind or PREFIX_KEY,
            **({"limits": record.config["limits"]} if record.config.get("limits") else {}),
            "version": record.version,
            "sha256": record.sha256,
            "train": {**record.train.to_dict(), "losses": uow.prefixes.losses(record.id)},
            "run": None
            if run is None
            else {
                "seed": run.seed,
                "config": run.config,
                "packages": run.packages,
                "backbone_fingerprint": run.backbone_fingerprint,
            },
            "lineage": [e.to_dict() for e in record.lineage],
        }

    return reg.db.read(read)


def _export_peft(
    out: Path, record: PrefixRecord, tensors: dict[str, Any], about: dict[str, Any]
) -> list[str]:
    cfg = record.config
    missing = [k for k in ("hidden_size",) if k not in cfg]
    if missing:
        raise ConfigError(
            f"prefix {record.task} v{record.version}: prefix_config lacks "
            f"{', '.join(missing)}, needed for a PEFT export"
        )
    kind = about["task"].get("kind", "")
    task_type = cfg.get("task_type") or _TASK_TYPE_FOR_KIND.get(kind, "FEATURE_EXTRACTION")
    adapter = {
        "peft_type": "PREFIX_TUNING",
        "task_type": task_type,
        "num_virtual_tokens": cfg["length"],
        "token_dim": cfg["kv_heads"] * cfg["head_dim"],
        "num_layers": cfg["layers"],
        "num_attention_heads": cfg["kv_heads"],
        "num_transformer_submodules": 1,
        "encoder_hidden_size": cfg["hidden_size"],
        "prefix_projection": False,
        "base_model_name_or_path": cfg.get("base_model")
        or cfg.get("backbone")
        or record.backbone_name,
        "revision": None,
        "inference_mode": True,
    }
    heads = {k: v for k, v in tensors.items() if k != PREFIX_KEY}
    position = cfg.get("positions", cfg.get("position"))
    sidecar = dict(about)
    if position != PEFT_POSITION:
        sidecar["note"] = (
            f"this prefix was trained with position convention {position!r}; PEFT runs a prefix "
            f"with {PEFT_POSITION!r} positions (real tokens start at position "
            f"{cfg['length']}), so outputs under PEFT can differ from continual's"
        )
    return _write_adapter(out, adapter, {"prompt_embeddings": tensors[PREFIX_KEY]}, heads, sidecar)


def _write_adapter(
    out: Path,
    adapter: dict[str, Any],
    weights: dict[str, Any],
    heads: dict[str, Any],
    sidecar: dict[str, Any],
) -> list[str]:
    """A PEFT adapter folder: its config and weights, our sidecar, and any heads beside them."""
    files = [PEFT_CONFIG, PEFT_WEIGHTS, SIDECAR]
    _write(out / PEFT_WEIGHTS, tensors_to_bytes(weights, {"format": "pt"}))
    if heads:
        sidecar = {**sidecar, "head_file": HEAD_FILE}
        _write(out / HEAD_FILE, tensors_to_bytes(heads, {"format": "pt"}))
        files.append(HEAD_FILE)
    _write(out / PEFT_CONFIG, _json(adapter))
    _write(out / SIDECAR, _json(sidecar))
    return files


def _export_adapter(
    out: Path, record: PrefixRecord, tensors: dict[str, Any], about: dict[str, Any]
) -> list[str]:
    """A LoRA or (IA)³ module as a PEFT adapter folder (`registry.exchange_peft`)."""
    from registry.exchange_peft import adapter_for

    base = record.config.get("backbone") or record.backbone_name
    adapter, weights = adapter_for(
        record.kind, record.config, tensors, about["task"].get("kind", ""), base
    )
    heads = {k: v for k, v in tensors.items() if k.startswith("head.")}
    return _write_adapter(out, adapter, weights, heads, dict(about))


def import_(
    reg: RegistryCore,
    path: Path,
    *,
    backbone_fingerprint: str | None,
    task: TaskSpec | None,
    new_version: bool,
    backbone: dict[str, Any] | None = None,
    verify: Callable[[str, dict[str, Any], dict[str, Any], TaskSpec], None] | None = None,
) -> PrefixRecord:
    """`task` for an adapter without a spec; `backbone` (its record) in place of PEFT's model
    name; `verify(kind, config, tensors, spec)` may refuse the module before anything is written."""
    if (path / OURS_JSON).is_file():
        about = _read_json(path / OURS_JSON)
        check_prefix_format(about, path / OURS_JSON)
        limits = prefix_limits(about)
        if limits:  # a `train --out` folder keeps them beside the prefix config
            about["prefix_config"] = {**about["prefix_config"], "limits": limits}
        data = _read(path / OURS_TENSORS)
        if sha256_bytes(data) != about.get("sha256"):
            raise IntegrityError(
                f"{path / OURS_TENSORS} does not match {OURS_JSON}: expected sha256 "
                f"{about.get('sha256')}, found {sha256_bytes(data)}; export it again"
            )
        tensors = _load_tensors(data)
    elif (path / PEFT_CONFIG).is_file():
        about, tensors = _read_peft(path)
    else:
        raise ConfigError(
            f"{path} holds neither {OURS_JSON} (a continual export) nor "
            f"{PEFT_CONFIG} (a PEFT adapter)"
        )
    fingerprint = _fingerprint(path, about, backbone_fingerprint)
    if task is not None and about.get("task"):
        raise ConfigError(f"{path} carries its own task spec; --name, --labels and --kind are "
                          "for an adapter saved without one")  # fmt: skip
    spec = task or _spec(path, about)
    if verify is not None:
        verify(about.get("module_kind") or PREFIX_KEY, about["prefix_config"], tensors, spec)
    backbone = dict(backbone or about["backbone"], fingerprint=fingerprint)
    train = about.get("train") or {"steps": 0, "seconds": 0.0, "final_loss": None, "losses": []}
    run = about.get("run") or {"seed": 0, "config": {}, "packages": {}}
    run = dict(
        run,
        backbone_fingerprint=fingerprint,
        config=dict(run.get("config") or {}, imported_from=str(path)),
    )
    return reg.register_prefix(
        task=spec,
        data_fingerprint=about.get("data_fingerprint") or "unknown",
        backbone=backbone,
        tensors=tensors,
        prefix_config=about["prefix_config"],
        train_summary=train,
        lineage=[],
        run=run,
        evaluation=None,
        optimizer_state=None,
        new_version=new_version,
        kind=about.get("module_kind") or PREFIX_KEY,
    )


def _read_peft(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    adapter = _read_json(path / PEFT_CONFIG)
    if adapter.get("peft_type") in ("LORA", "IA3", "PROMPT_TUNING"):
        return _read_adapter(path, adapter)
    if adapter.get("peft_type") != "PREFIX_TUNING":
        raise ConfigError(
            f"{path / PEFT_CONFIG}: peft_type is {adapter.get('peft_type')!r}; "
            "PREFIX_TUNING, PROMPT_TUNING, LORA and IA3 adapters can be imported"
        )
    if adapter.get("prefix_projection") or adapter.get("num_transformer_submodules", 1) != 1:
        raise ConfigError(
            f"{path / PEFT_CONFIG}: only adapters without prefix_projection and "
            "with one transformer submodule (decoder-only) can be imported"
        )
    weights = _load_tensors(_read(path / PEFT_WEIGHTS))
    if "prompt_embeddings" not in weights:
        raise ConfigError(f"{path / PEFT_WEIGHTS} has no 'prompt_embeddings' tensor")
    about, heads = _sidecar(path)
    tensors = {PREFIX_KEY: weights["prompt_embeddings"], **heads}
    kv_heads = int(adapter["num_attention_heads"])
    geometry = {
        "length": int(adapter["num_virtual_tokens"]),
        "layers": int(adapter["num_layers"]),
        "kv_heads": kv_heads,
        "head_dim": int(adapter["token_dim"]) // kv_heads,
    }
    config = about.get("prefix_config") or {
        **geometry,
        "hidden_size": adapter.get("encoder_hidden_size"),
        "backbone": adapter.get("base_model_name_or_path"),
        "positions": PEFT_POSITION,
        "task_type": adapter.get("task_type"),
    }
    if any(config.get(k) != v for k, v in geometry.items()):
        raise ConfigError(f"{path}: {SIDECAR} prefix_config disagrees with {PEFT_CONFIG}")
    return _peft_about(about, adapter, config), tensors


def _sidecar(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Our sidecar beside a PEFT adapter (empty if absent) and the head tensors it names."""
    about = _read_json(path / SIDECAR) if (path / SIDECAR).is_file() else {}
    heads = _load_tensors(_read(path / about["head_file"])) if about.get("head_file") else {}
    return about, heads


def _read_adapter(path: Path, adapter: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    from registry.exchange_peft import module_from_adapter

    weights = _load_tensors(_read(path / PEFT_WEIGHTS))
    kind, config, tensors = module_from_adapter(path / PEFT_CONFIG, adapter, weights)
    about, heads = _sidecar(path)
    tensors |= heads
    stored = about.get("prefix_config") or {}
    config = {**stored, **config} if stored else config
    return _peft_about(about, adapter, config, module_kind=kind), tensors


def _peft_about(about: dict[str, Any], adapter: dict[str, Any], config, **more) -> dict[str, Any]:
    """What import needs of a PEFT folder: our sidecar's fields, else what the adapter says."""
    name = adapter.get("base_model_name_or_path") or "unknown"
    unknown = {"name": name, "source": "peft", "n_params": 0, "config": {}}
    return {**about, **more, "prefix_config": config, "backbone": about.get("backbone") or unknown}


def _fingerprint(path: Path, about: dict[str, Any], given: str | None) -> str:
    known = (about.get("backbone") or {}).get("fingerprint")
    if given and known and given != known:
        raise IntegrityError(
            f"{path} was exported from backbone fingerprint {known}, not "
            f"{given}; pass the backbone it was trained on (--backbone or the matching "
            "--backbone-fingerprint)"
        )
    if not (given or known):
        raise ConfigError(
            f"importing the PEFT adapter {path} needs the backbone it was trained on: "
            "pass --backbone NAME_OR_FOLDER (or --backbone-fingerprint)"
        )
    return given or known


def _spec(path: Path, about: dict[str, Any]) -> TaskSpec:
    if not about.get("task"):
        raise ConfigError(
            f"{path} has no task spec ({SIDECAR} is missing); name the task: --name TASK "
            "with --labels A,B,... (classification) or --kind generation"
        )
    return TaskSpec.from_dict(about["task"])


def _load_tensors(data: bytes) -> dict[str, Any]:
    from safetensors.torch import load

    return load(data)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(_read(path))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return value


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _write(path: Path, data: bytes) -> None:
    """Atomically replace `path` with `data`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
