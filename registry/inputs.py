"""Checks of what callers hand to `Registry.register_prefix`, each failing as one clear line."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from registry.records import BackboneRecord, TrainSummary
from tasks.errors import ConfigError

if TYPE_CHECKING:
    import torch

PREFIX_KEY = "prefix"
GEOMETRY = ("length", "layers", "kv_heads", "head_dim")
TASK_TYPES = (
    "SEQ_CLS",
    "CAUSAL_LM",
    "FEATURE_EXTRACTION",
    "SEQ_2_SEQ_LM",
    "TOKEN_CLS",
    "QUESTION_ANS",
)


def jsonable(value: Any, what: str) -> Any:
    """`value` as plain JSON types (a deep copy), or ConfigError naming `what`."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} must be JSON-able (no NaN, tensors or objects): {e}") from None


def _int(d: Mapping[str, Any], key: str, what: str, minimum: int = 0) -> int:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what}: {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _keys(d: Any, keys: Sequence[str], what: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{what} must be a dict with keys {', '.join(keys)}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ConfigError(f"{what} lacks {', '.join(missing)}")
    return d


def backbone(d: Any) -> BackboneRecord:
    d = _keys(d, ("name", "source", "fingerprint", "n_params", "config"), "backbone")
    for key in ("name", "source", "fingerprint"):
        if not isinstance(d[key], str) or not d[key]:
            raise ConfigError(f"backbone: {key!r} must be a non-empty string, got {d[key]!r}")
    return BackboneRecord(
        name=d["name"],
        source=d["source"],
        fingerprint=d["fingerprint"],
        n_params=_int(d, "n_params", "backbone"),
        config=jsonable(d["config"], "backbone config"),
    )


def tensors(t: Any, what: str = "tensors") -> dict[str, torch.Tensor]:
    import torch

    if not isinstance(t, Mapping) or not t:
        raise ConfigError(f"{what} must be a non-empty dict of name -> torch.Tensor")
    for k, v in t.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise ConfigError(f"{what}: {k!r} must map a string to a torch.Tensor, got {type(v)}")
    return dict(t)


def prefix_config(config: Any, t: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The JSON copy of `config`, checked against the shape of the "prefix" tensor.

    The prefix tensor is [length, layers * 2 * kv_heads * head_dim]: per virtual token, the
    keys and values of every layer, layer-major (k then v), heads then head_dim, as PEFT lays out
    `prompt_embeddings`.
    """
    config = jsonable(_keys(config, GEOMETRY, "prefix_config"), "prefix_config")
    length, layers, kv_heads, head_dim = (_int(config, k, "prefix_config", 1) for k in GEOMETRY)
    if PREFIX_KEY not in t:
        raise ConfigError(f"tensors lack the {PREFIX_KEY!r} tensor (the ejected prefix)")
    want = (length, layers * 2 * kv_heads * head_dim)
    got = tuple(t[PREFIX_KEY].shape)
    if got != want:
        raise ConfigError(
            f"prefix tensor has shape {list(got)} but prefix_config says {list(want)} "
            f"(length={length}, layers*2*kv_heads*head_dim={want[1]})"
        )
    task_type = config.get("task_type")
    if task_type is not None and task_type not in TASK_TYPES:
        raise ConfigError(f"prefix_config: task_type {task_type!r} is not one of {TASK_TYPES}")
    return config


def module_config(kind: str, config: Any, t: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The JSON copy of a module's config. A prefix's is checked against its tensor here
    (`prefix_config`); another kind's shapes are its plugin's to check (`continual.modules`,
    which the registry does not import), so here only that it names some tensors besides the
    head's and is plain JSON."""
    if kind == PREFIX_KEY:
        return prefix_config(config, t)
    if not isinstance(config, Mapping) or not config:
        raise ConfigError(f"the {kind} module's config must be a non-empty dict")
    if not any(not name.startswith("head.") for name in t):
        raise ConfigError(f"tensors lack the {kind} module's own tensors (only a head)")
    return jsonable(config, f"{kind} config")


def train_summary(d: Any, n_stored: int) -> tuple[TrainSummary, list[float | None]]:
    d = _keys(d, ("steps", "seconds", "final_loss", "losses"), "train_summary")
    seconds, final_loss, losses = d["seconds"], d["final_loss"], d["losses"]
    if not isinstance(seconds, int | float) or seconds < 0:
        raise ConfigError(f"train_summary: 'seconds' must be a number >= 0, got {seconds!r}")
    if final_loss is not None and not isinstance(final_loss, int | float):
        raise ConfigError(f"train_summary: 'final_loss' must be a number, got {final_loss!r}")
    if not isinstance(losses, Sequence) or not all(isinstance(x, int | float) for x in losses):
        raise ConfigError("train_summary: 'losses' must be a list of numbers (one per step)")
    n_trainable = _int(d, "n_trainable", "train_summary") if "n_trainable" in d else n_stored
    summary = TrainSummary(
        steps=_int(d, "steps", "train_summary"),
        seconds=float(seconds),
        final_loss=None if final_loss is None else float(final_loss),
        n_trainable=n_trainable,
    )
    # JSON has no NaN/inf: a diverged step is kept as null.
    return summary, [float(x) if math.isfinite(x) else None for x in losses]


def run(d: Any, fingerprint: str) -> dict[str, Any]:
    d = _keys(d, ("seed", "config", "packages", "backbone_fingerprint"), "run")
    if d["backbone_fingerprint"] != fingerprint:
        raise ConfigError(
            f"run backbone_fingerprint {d['backbone_fingerprint']!r} differs from the backbone's "
            f"{fingerprint!r}"
        )
    return {
        "seed": _int(d, "seed", "run"),
        "config": jsonable(d["config"], "run config"),
        "packages": jsonable(d["packages"], "run packages"),
        "backbone_fingerprint": fingerprint,
    }


def lineage(edges: Any) -> list[tuple[int, float, str]]:
    out: list[tuple[int, float, str]] = []
    for edge in edges or ():
        try:
            source, weight, method = edge
        except (TypeError, ValueError):
            raise ConfigError(
                f"lineage entry {edge!r} must be (source_prefix_id, weight, method)"
            ) from None
        if isinstance(source, bool) or not isinstance(source, int):
            raise ConfigError(f"lineage entry {edge!r}: source_prefix_id must be an int")
        if not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ConfigError(f"lineage entry {edge!r}: weight must be a finite number")
        if not isinstance(method, str) or not method:
            raise ConfigError(f"lineage entry {edge!r}: method must be a non-empty string")
        out.append((source, float(weight), method))
    sources = [s for s, _, _ in out]
    if len(set(sources)) != len(sources):
        raise ConfigError(f"lineage names a source prefix twice: {sources}")
    return out


def embeddings(d: Any) -> list[tuple[str, int, np.ndarray]]:
    """`{method: vector}` or `{method: (dim, values)}` -> (method, dim, flat float32) triples.

    A plain vector has `dim = len(vector)`; a matrix (for example several routing keys) is given
    as `[rows, dim]` or as `(dim, flat values)`. Values (arrays, tensors or sequences) must be
    finite.
    """
    out: list[tuple[str, int, np.ndarray]] = []
    for method, value in (d or {}).items():
        if not isinstance(method, str) or not method or len(method) > 64:
            raise ConfigError(f"embedding method {method!r} must be a string of 1-64 characters")
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int):
            dim, flat = value[0], _array(value[1], method).reshape(-1)
        else:
            a = _array(value, method)
            if a.ndim not in (1, 2) or a.size == 0:
                raise ConfigError(f"embedding {method}: give a non-empty vector or matrix")
            dim, flat = int(a.shape[-1]), a.reshape(-1)
        if dim < 1 or flat.size % dim:
            raise ConfigError(f"embedding {method}: {flat.size} values are not rows of {dim}")
        if not bool(np.isfinite(flat).all()):
            raise ConfigError(f"embedding {method} has non-finite values")
        out.append((method, dim, flat))
    return out


def _array(value: Any, method: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().to("cpu").float().numpy()
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ConfigError(f"embedding {method}: values must be numbers") from None


def evaluation(d: Any) -> dict[str, Any] | None:
    if d is None:
        return None
    d = _keys(d, ("metric", "value", "n"), "evaluation")
    if not isinstance(d["metric"], str) or not d["metric"]:
        raise ConfigError(f"evaluation: 'metric' must be a non-empty string, got {d['metric']!r}")
    if not isinstance(d["value"], int | float):
        raise ConfigError(f"evaluation: 'value' must be a number, got {d['value']!r}")
    position = d.get("position")
    if position is not None:
        _int(d, "position", "evaluation")
    return {
        "metric": d["metric"],
        "value": float(d["value"]),
        "n": _int(d, "n", "evaluation"),
        "predictions_sha256": d.get("predictions_sha256"),
        "position": position,
    }


def scored(
    task: str, method: Any, stream: str | None, **fields: Any
) -> tuple[str | None, dict[str, Any]]:
    """A score's stream (`default` when it has a position) and its checked fields."""
    from registry.streams import DEFAULT_STREAM, check_stream

    if fields.get("position") is not None:
        stream = check_stream(stream or DEFAULT_STREAM)
    elif stream is not None:
        raise ConfigError(f"evaluation of {task}: a stream score needs its position")
    ev = evaluation(fields)
    assert ev is not None
    if not isinstance(method, str) or not method:
        raise ConfigError(f"evaluation of {task}: method must be a non-empty string")
    return stream, ev
