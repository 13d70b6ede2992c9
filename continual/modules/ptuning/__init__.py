"""P-tuning v2 (Liu et al. 2022): deep prompts, a key and a value per layer and position as in
the prefix, trained directly, without the prefix's reparameterization MLP. Same layout, rows,
packed passes and word start as the prefix; it starts where a prefix of the same seed would
(the MLP's output at the start), so the two differ only in how they train. Registers itself
on import as "ptuning"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from continual.backbones import Backbone
from continual.modules.base import refuse_unknown, register_module
from continual.modules.prefix.config import NAME, PrefixConfig, check_flat
from continual.modules.prefix.module import TrainablePrefix
from continual.modules.prefix.plugin import PrefixModule
from tasks.errors import ConfigError

KIND = "ptuning"
OPTIONS = ("length", "positions")


@dataclass(frozen=True)
class PTuningConfig(PrefixConfig):
    """A prefix's shapes and conventions (`reparam_hidden` only shapes the random start)."""

    kind: ClassVar[str] = KIND

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PTuningConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class TrainableDeepPrompt(nn.Module):
    def __init__(self, config: PTuningConfig, *, base: torch.Tensor | None, seed: int) -> None:
        super().__init__()
        self.config = config
        if base is None:
            with torch.no_grad():
                base = TrainablePrefix(config, seed=seed).flat()
        self.flat = nn.Parameter(check_flat(base, config).detach().clone().float())

    def forward(self) -> dict[str, torch.Tensor]:
        return {NAME: self.flat}

    @torch.no_grad()
    def eject(self) -> dict[str, torch.Tensor]:
        return {NAME: self.flat.detach().clone().contiguous()}


class PTuningModule(PrefixModule):
    kind = KIND

    def check_options(self, options: Mapping[str, Any], where: str = KIND) -> dict[str, Any]:
        refuse_unknown(options, OPTIONS, "ptuning", where)
        length = options.get("length", 16)
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigError(f"{where}: ptuning length must be a whole number >= 1")
        return dict(options)

    def config_for(self, backbone: Backbone, **options: Any) -> PTuningConfig:
        p = super().config_for(backbone, **options)
        return PTuningConfig(**{k: v for k, v in p.to_dict().items()})

    def config_from_dict(self, d: Mapping[str, Any]) -> PTuningConfig:
        return PTuningConfig.from_dict(d)

    def build(
        self,
        config: PTuningConfig,
        *,
        start: dict[str, torch.Tensor] | None = None,
        seed: int = 0,
    ) -> TrainableDeepPrompt:
        base = None if start is None else config.check(start)[NAME]
        return TrainableDeepPrompt(config, base=base, seed=seed)


PTUNING = register_module(PTuningModule())
