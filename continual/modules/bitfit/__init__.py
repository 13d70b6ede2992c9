"""BitFit (Ben Zaken et al. 2022): only the backbone's bias terms train. The backbone stays
frozen: a task stores the change of every bias (zero at the start), added to the layer's output
while a pass runs, which is exactly the layer with its bias changed. Stored as changes, rows of
different tasks still share a pass (`RowHooks`). Registers itself on import as "bitfit"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from continual.backbones import Backbone
from continual.modules.base import check_shapes, register_module
from continual.modules.hooked import RowHooks, stack
from continual.modules.hooked.vectors import TrainableVectors
from tasks.errors import ConfigError

KIND = "bitfit"
HEADS = ("lm_head", "classifier", "score")


def name(i: int) -> str:
    return f"bitfit.{i}"


@dataclass(frozen=True)
class BitFitConfig:
    """The layers whose bias trains (linear and layer-norm layers) and each bias's size."""

    kind: ClassVar[str] = KIND

    targets: tuple[str, ...]
    dims: tuple[int, ...]
    init: str = "random"

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        if not self.targets or len(self.targets) != len(self.dims):
            raise ConfigError("bitfit config: give one size per target, at least one target")

    @property
    def n_params(self) -> int:
        return sum(self.dims)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name(i): (d,) for i, d in enumerate(self.dims)}

    def check(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return check_shapes(tensors, self.shapes(), KIND)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d | {"targets": list(self.targets), "dims": list(self.dims)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BitFitConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_(self, **changes: Any) -> BitFitConfig:
        return replace(self, **changes)


def biased_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear and layer-norm layers with a bias, per token (the pooler, which sees one vector
    per row, and task heads are left out)."""
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.LayerNorm)
        and getattr(m, "bias", None) is not None
        and "pooler" not in n.split(".")
        and n.split(".")[-1] not in HEADS
    ]


def _shift(layer: nn.Module, x: torch.Tensor, out: torch.Tensor, delta) -> torch.Tensor:
    return out + delta.to(device=out.device, dtype=out.dtype)


class BitFitModule:
    kind = KIND

    def check_options(self, options: Mapping[str, Any], where: str = KIND) -> dict[str, Any]:
        if options:
            raise ConfigError(
                f"{where}: bitfit takes no options ({sorted(options)}): every bias trains"
            )
        return {}

    def config_for(self, backbone: Backbone, *, init: str = "random") -> BitFitConfig:
        layers = biased_layers(backbone.model)
        if not layers:
            raise ConfigError(
                f"bitfit: backbone {backbone.name} has no bias terms to train (Llama-style "
                "models have none); choose another --module"
            )
        return BitFitConfig(
            targets=tuple(n for n, _ in layers),
            dims=tuple(int(m.bias.shape[0]) for _, m in layers),
            init=init,
        )

    def config_from_dict(self, d: Mapping[str, Any]) -> BitFitConfig:
        return BitFitConfig.from_dict(d)

    def build(
        self, config: BitFitConfig, *, start: dict[str, torch.Tensor] | None = None, seed: int = 0
    ) -> TrainableVectors:
        return TrainableVectors(
            config.dims, name, 0.0, None if start is None else config.check(start)
        )

    def rows(
        self, parts: Sequence[tuple[dict[str, torch.Tensor], BitFitConfig]], row_task
    ) -> RowHooks:
        per_task = [([t[name(i)] for i in range(len(c.dims))], c) for t, c in parts]
        return stack(KIND, parts[0][1].targets, per_task, row_task, _shift)

    def single(self, tensors: dict[str, torch.Tensor], config: BitFitConfig, n: int) -> RowHooks:
        return self.rows([(tensors, config)], torch.zeros(n, dtype=torch.long))

    def start_from_text(self, backbone: Backbone, config: BitFitConfig, text: str) -> dict:
        raise ConfigError("bitfit has no start from the task's words; use --init random or auto")


BITFIT = register_module(BitFitModule())
