"""(IA)³ (Liu et al. 2022): learned vectors that rescale the keys, the values and the
feed-forward activations of the frozen backbone, one per target layer; the smallest of the
kinds. Registers itself on import as "ia3"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from continual.backbones import Backbone
from continual.modules.base import check_shapes, refuse_unknown, register_module
from continual.modules.hooked import RowHooks, resolve_targets, stack
from continual.modules.hooked.vectors import TrainableVectors
from tasks.errors import ConfigError

KIND = "ia3"
#: PEFT's defaults: keys, values and the feed-forward output layer, whose *input* is scaled.
TARGETS = {
    "bert": (("key", "value", "output.dense"), ("output.dense",)),
    "roberta": (("key", "value", "output.dense"), ("output.dense",)),
    "llama": (("k_proj", "v_proj", "down_proj"), ("down_proj",)),
    "mistral": (("k_proj", "v_proj", "down_proj"), ("down_proj",)),
    "qwen2": (("k_proj", "v_proj", "down_proj"), ("down_proj",)),
}
OPTIONS = ("targets", "feedforward")


def name(i: int) -> str:
    return f"ia3.{i}"


@dataclass(frozen=True)
class IA3Config:
    """Target layers, each scale's size, and whether it scales the layer's input
    (feed-forward) or its output (keys, values)."""

    kind: ClassVar[str] = KIND

    targets: tuple[str, ...]
    dims: tuple[int, ...]
    feedforward: tuple[bool, ...]
    init: str = "random"

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        object.__setattr__(self, "feedforward", tuple(bool(f) for f in self.feedforward))
        if not self.targets:
            raise ConfigError("ia3 targets is empty; name at least one linear layer")
        if not len(self.targets) == len(self.dims) == len(self.feedforward):
            raise ConfigError("ia3 config: targets, dims and feedforward differ in length")

    @property
    def n_params(self) -> int:
        return sum(self.dims)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name(i): (d,) for i, d in enumerate(self.dims)}

    def check(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return check_shapes(tensors, self.shapes(), KIND)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d | {k: list(d[k]) for k in ("targets", "dims", "feedforward")}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IA3Config:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_(self, **changes: Any) -> IA3Config:
        return replace(self, **changes)


def _scale(layer: nn.Module, x: torch.Tensor, out: torch.Tensor, p) -> torch.Tensor:
    scale, on_input = p
    scale = scale.to(device=x.device, dtype=x.dtype)
    if on_input:  # the feed-forward layer again, on its scaled input
        return nn.functional.linear(x * scale, layer.weight, layer.bias)
    return out * scale


class IA3Module:
    kind = KIND

    def check_options(self, options: Mapping[str, Any], where: str = KIND) -> dict[str, Any]:
        refuse_unknown(options, OPTIONS, "ia3", where)
        out = {}
        for key in OPTIONS:
            if key in options:
                v = options[key]
                v = [s.strip() for s in v.split(",")] if isinstance(v, str) else v
                if not isinstance(v, list | tuple) or not all(isinstance(s, str) and s for s in v):
                    raise ConfigError(f"{where}: ia3 {key} must be layer names, got {v!r}")
                out[key] = tuple(v)
        if "targets" in out and not out["targets"]:
            raise ConfigError(f"{where}: ia3 targets is empty; name at least one linear layer")
        return out

    def config_for(
        self,
        backbone: Backbone,
        *,
        targets: Sequence[str] | None = None,
        feedforward: Sequence[str] | None = None,
        init: str = "random",
    ) -> IA3Config:
        model_type = getattr(backbone.model.config, "model_type", "")
        default = TARGETS.get(model_type)
        if targets is None and default is None:
            raise ConfigError(
                f"ia3: no default targets for {model_type or 'this'} backbone; give targets "
                "(and feedforward: those scaled at their input)"
            )
        targets = tuple(targets or default[0])
        ff = tuple(feedforward if feedforward is not None else (default or ((), ()))[1])
        layers = resolve_targets(backbone.model, targets, KIND)
        on_input = [any(n == f or n.endswith(f".{f}") for f in ff) for n, _ in layers]
        return IA3Config(
            targets=tuple(n for n, _ in layers),
            dims=tuple(
                m.in_features if i else m.out_features for (_, m), i in zip(layers, on_input)
            ),
            feedforward=tuple(on_input),
            init=init,
        )

    def config_from_dict(self, d: Mapping[str, Any]) -> IA3Config:
        return IA3Config.from_dict(d)

    def build(
        self, config: IA3Config, *, start: dict[str, torch.Tensor] | None = None, seed: int = 0
    ) -> TrainableVectors:
        return TrainableVectors(
            config.dims, name, 1.0, None if start is None else config.check(start)
        )

    def rows(
        self, parts: Sequence[tuple[dict[str, torch.Tensor], IA3Config]], row_task: torch.Tensor
    ) -> RowHooks:
        first = parts[0][1]
        if any((c.dims, c.feedforward) != (first.dims, first.feedforward) for _, c in parts):
            raise ConfigError("ia3 modules of one batch must scale the same layers the same way")
        per_task = [([(t[name(i)], f) for i, f in enumerate(c.feedforward)], c) for t, c in parts]
        return stack(KIND, first.targets, per_task, row_task, _scale)

    def single(self, tensors: dict[str, torch.Tensor], config: IA3Config, n: int) -> RowHooks:
        return self.rows([(tensors, config)], torch.zeros(n, dtype=torch.long))

    def start_from_text(self, backbone: Backbone, config: IA3Config, text: str) -> dict:
        raise ConfigError("ia3 has no start from the task's words; use --init random or auto")


IA3 = register_module(IA3Module())
