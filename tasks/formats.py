"""The prefix folder: one format, written by `continual train --out` and `registry export
--format safetensors`, read by `registry import`, `evaluate --prefix` and `predict --prefix`.

A folder holds `prefix.safetensors` (the tensors: "prefix" `[P, layers*2*kv_heads*head_dim]`
and, for encoders, the head's) and `prefix.json`:

    format          PREFIX_FORMAT ("continual.prefix/1")
    task            TaskSpec.to_dict()
    prefix_config   PrefixConfig fields (+ "limits" and, from the registry, backbone/task_type)
    limits          {"max_length", "max_target_length"} (also inside prefix_config)
    sha256          of prefix.safetensors
    backbone        name, source, fingerprint, n_params, config
    ...             optional: data_fingerprint, train, run, lineage, metrics, packages

Two spellings of the identifier were written before they were unified ("continual-prefix/1" by
`train --out`, "continual.prefix/1" by `registry export`); both are read. The constant lives in
`tasks/`, the bottom layer, because `continual.checkpoint` and `registry.exchange` (which may not
import each other) both write and read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError

PREFIX_FORMAT = "continual.prefix/1"
PREFIX_FORMATS_READ = (PREFIX_FORMAT, "continual-prefix/1")
PREFIX_JSON, PREFIX_TENSORS = "prefix.json", "prefix.safetensors"
REQUIRED = ("task", "prefix_config", "sha256")


def check_prefix_format(doc: Mapping[str, Any], where: Path | str) -> None:
    """Refuse a `prefix.json` (at `where`) whose format this version does not read."""
    found = doc.get("format")
    if found not in PREFIX_FORMATS_READ:
        raise ConfigError(
            f"{where}: format {found!r} is not a prefix folder this version reads "
            f"({', '.join(repr(f) for f in PREFIX_FORMATS_READ)}); write it again with "
            "`continual registry export --format safetensors` or `continual train --out`"
        )
    missing = [k for k in REQUIRED if not doc.get(k)]
    if missing:
        raise ConfigError(
            f"{where}: lacks {', '.join(missing)}; the folder is incomplete, export it again"
        )


def prefix_limits(doc: Mapping[str, Any]) -> dict[str, int]:
    """The text limits of a `prefix.json`: top-level `limits` (train --out), else inside
    `prefix_config` (registry export), else none (the defaults apply)."""
    limits = doc.get("limits") or (doc.get("prefix_config") or {}).get("limits") or {}
    return {k: int(limits[k]) for k in ("max_length", "max_target_length") if k in limits}
