"""Prompt tuning as a `TaskModule` (Lester et al. 2021): P trainable input embeddings before
every input of the task, the frozen backbone computing them in every layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from continual.backbones import Backbone, context_positions
from continual.modules.base import refuse_unknown
from continual.modules.prompt.config import KIND, LENGTH, NAME, PromptConfig
from continual.modules.prompt.rows import RowPrompt, single, stack_rows
from tasks.errors import ConfigError

OPTIONS = ("length",)


class TrainablePrompt(nn.Module):
    """`{"prompt": [P, hidden]}`: the embeddings themselves train (no reparameterization, as
    in the paper). A random start draws from N(0, init_std) with the given seed."""

    def __init__(self, config: PromptConfig, *, base: torch.Tensor | None, seed: int) -> None:
        super().__init__()
        self.config = config
        if base is None:
            gen = torch.Generator().manual_seed(seed)
            base = torch.randn(config.length, config.hidden_size, generator=gen) * config.init_std
        self.embeds = nn.Parameter(base.detach().clone().float())

    def forward(self) -> dict[str, torch.Tensor]:
        return {NAME: self.embeds}

    @torch.no_grad()
    def eject(self) -> dict[str, torch.Tensor]:
        return {NAME: self.embeds.detach().clone().contiguous()}


def _length(options: Mapping[str, Any], where: str) -> int:
    length = options.get("length", LENGTH)
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigError(f"{where}: prompt length must be a whole number >= 1, got {length!r}")
    return length


class PromptModule:
    """The "prompt" kind: one tensor, `{"prompt": [P, hidden_size]}`."""

    kind = KIND

    def check_options(self, options: Mapping[str, Any], where: str = KIND) -> dict[str, Any]:
        refuse_unknown(options, OPTIONS, "prompt", where)
        _length(options, where)
        return dict(options)

    def config_for(
        self, backbone: Backbone, *, length: int = LENGTH, init: str = "random"
    ) -> PromptConfig:
        """A prompt of `length` for `backbone`. Its tokens take input positions, so a prompt
        as long as the backbone's context would leave no room for the input: refused."""
        length = _length({"length": length}, KIND)
        context = context_positions(backbone)
        if context is not None and length >= context:
            raise ConfigError(
                f"prompt length {length} leaves no room for the input in backbone "
                f"{backbone.name}'s {context} positions; use a --prompt-length under {context}"
            )
        weight = backbone.model.get_input_embeddings().weight
        # a skeleton backbone (continual.skeleton, for checks) has shapes but no values
        spread = {} if weight.is_meta else {"init_std": round(float(weight.float().std()), 6)}
        return PromptConfig(length=length, hidden_size=int(weight.shape[1]), init=init, **spread)

    def config_from_dict(self, d: Mapping[str, Any]) -> PromptConfig:
        return PromptConfig.from_dict(d)

    def build(
        self, config: PromptConfig, *, start: dict[str, torch.Tensor] | None = None, seed: int = 0
    ) -> TrainablePrompt:
        base = None if start is None else config.check(start)[NAME]
        return TrainablePrompt(config, base=base, seed=seed)

    def rows(
        self, parts: Sequence[tuple[dict[str, torch.Tensor], PromptConfig]], row_task: torch.Tensor
    ) -> RowPrompt:
        return stack_rows([(tensors[NAME], config) for tensors, config in parts], row_task)

    def single(
        self, tensors: dict[str, torch.Tensor], config: PromptConfig, batch_size: int
    ) -> RowPrompt:
        return single(tensors[NAME], batch_size)

    def start_from_text(
        self, backbone: Backbone, config: PromptConfig, text: str
    ) -> dict[str, torch.Tensor]:
        """The backbone's own embeddings of `text`'s tokens, repeated to the prompt's length
        (the paper's and PEFT's text start)."""
        ids = backbone.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ConfigError(f"prompt: the start text {text!r} has no tokens")
        ids = (ids * (-(-config.length // len(ids))))[: config.length]
        layer = backbone.model.get_input_embeddings()
        with torch.no_grad():
            out = layer(torch.tensor(ids, device=layer.weight.device)).float().cpu()
        return {NAME: out}
