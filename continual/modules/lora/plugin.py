"""LoRA as a `TaskModule` (Hu et al. 2021): a trainable low-rank update of chosen linear layers
of the frozen backbone, applied per row while a pass runs (`continual.modules.hooked.RowHooks`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from continual.backbones import Backbone
from continual.modules.base import refuse_unknown
from continual.modules.hooked import RowHooks, resolve_targets
from continual.modules.lora.config import ALPHA, KIND, RANK, LoraConfig
from continual.modules.lora.module import TrainableLora
from continual.modules.lora.rows import single, stack_rows
from tasks.errors import ConfigError

#: The layers LoRA targets by default, per model type (the query and value projections, as
#: PEFT's defaults); other model types need `targets`.
TARGETS = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "electra": ("query", "value"),
    "distilbert": ("q_lin", "v_lin"),
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj"),
    "phi3": ("qkv_proj",),
}
OPTIONS = ("rank", "alpha", "targets")


class LoraModule:
    """The "lora" kind: `lora.{i}.A` `[rank, in]`, `lora.{i}.B` `[out, rank]` per target."""

    kind = KIND

    def check_options(self, options: Mapping[str, Any], where: str = "lora") -> dict[str, Any]:
        refuse_unknown(options, OPTIONS, "lora", where)
        out = dict(options)
        if "targets" in out:
            t = out["targets"]
            t = [s.strip() for s in t.split(",")] if isinstance(t, str) else t
            if not isinstance(t, list | tuple) or not all(isinstance(s, str) and s for s in t):
                raise ConfigError(f"{where}: lora targets must be layer names, got {t!r}")
            out["targets"] = tuple(t)
        try:  # shapes aside, the plugin's own checks (rank, alpha, targets not empty)
            LoraConfig(
                targets=out.get("targets", ("x",)),
                dims=[(1, 1)] * len(out.get("targets", ("x",))),
                rank=out.get("rank", RANK),
                alpha=out.get("alpha", ALPHA),
            )
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        return out

    def config_for(
        self,
        backbone: Backbone,
        *,
        rank: int = RANK,
        alpha: float = ALPHA,
        targets: Sequence[str] | None = None,
        init: str = "random",
    ) -> LoraConfig:
        model_type = getattr(backbone.model.config, "model_type", "")
        wanted = targets or TARGETS.get(model_type)
        if not wanted:
            raise ConfigError(
                f"lora: no default targets for {model_type or 'this'} backbone; give "
                "--lora-targets (the last part of linear layer names, e.g. q_proj,v_proj)"
            )
        layers = resolve_targets(backbone.model, wanted, KIND)
        return LoraConfig(
            targets=tuple(name for name, _ in layers),
            dims=tuple((m.in_features, m.out_features) for _, m in layers),
            rank=rank,
            alpha=alpha,
            init=init,
        )

    def config_from_dict(self, d: Mapping[str, Any]) -> LoraConfig:
        return LoraConfig.from_dict(d)

    def build(
        self, config: LoraConfig, *, start: dict[str, torch.Tensor] | None = None, seed: int = 0
    ) -> TrainableLora:
        return TrainableLora(
            config, start=None if start is None else config.check(start), seed=seed
        )

    def rows(
        self, parts: Sequence[tuple[dict[str, torch.Tensor], LoraConfig]], row_task: torch.Tensor
    ) -> RowHooks:
        return stack_rows(parts, row_task)

    def single(
        self, tensors: dict[str, torch.Tensor], config: LoraConfig, batch_size: int
    ) -> RowHooks:
        return single(tensors, config, batch_size)

    def start_from_text(self, backbone: Backbone, config: LoraConfig, text: str) -> dict:
        raise ConfigError("lora has no start from the task's words; use --init random or auto")
