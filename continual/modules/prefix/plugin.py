"""The prefix as a `TaskModule` (Li & Liang 2021): per-layer key/value vectors prepended to
every attention layer, trained through the paper's reparameterization."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from continual.backbones import Backbone, context_positions
from continual.modules.prefix.config import KIND, NAME, PrefixConfig
from continual.modules.prefix.module import TrainablePrefix
from continual.modules.prefix.rows import RowPrefix, single, stack_rows
from continual.modules.prefix.words import word_activations
from tasks.errors import ConfigError

#: Position convention per backbone kind when none is given. Encoders: "explicit" (measured
#: better, see README); decoders keep the "shifted" positions transformers and PEFT use with a
#: cache, which is also the choice for a kind not listed.
DEFAULT_POSITIONS = {"encoder": "explicit", "decoder": "shifted"}


class PrefixModule:
    """The "prefix" kind: one tensor, `{"prefix": [P, layers * 2 * kv_heads * head_dim]}`."""

    kind = KIND

    def check_options(self, options: Mapping[str, Any], where: str = "prefix") -> dict[str, Any]:
        """A prefix takes its options from `prefix_length` and `positions`, not from here."""
        if options:
            raise ConfigError(
                f"{where}: a prefix takes no module options ({sorted(options)}); set "
                "prefix_length and positions instead"
            )
        return {}

    def config_for(
        self,
        backbone: Backbone,
        *,
        length: int = 16,
        positions: str | None = None,
        **options: Any,
    ) -> PrefixConfig:
        """A prefix of `length` for `backbone`'s geometry; `options` are other config fields.

        A prefix longer than the backbone's context (its position table) is refused: the
        attention it adds grows with its length, and no task needs more keys than the backbone
        ever attended to (the Prefix-Tuning paper's best lengths run from about 10 to 200)."""
        g = backbone.geometry
        if not isinstance(length, int) or length < 1:
            raise ConfigError(f"prefix length {length!r} is out of range: use at least 1")
        context = context_positions(backbone)
        if context is not None and length > context:
            raise ConfigError(
                f"prefix length {length} is longer than backbone {backbone.name}'s context "
                f"({context} positions); use a prefix length (--prefix-length, or "
                f"prefix_length: in a stream file) of at most {context}"
            )
        return PrefixConfig(
            length=length,
            layers=g.layers,
            kv_heads=g.kv_heads,
            head_dim=g.head_dim,
            hidden_size=g.hidden_size,
            positions=positions or DEFAULT_POSITIONS.get(backbone.kind, "shifted"),
            **options,
        )

    def config_from_dict(self, d: Mapping[str, Any]) -> PrefixConfig:
        return PrefixConfig.from_dict(d)

    def build(
        self,
        config: PrefixConfig,
        *,
        start: dict[str, torch.Tensor] | None = None,
        seed: int = 0,
    ) -> TrainablePrefix:
        base = None if start is None else config.check(start)[NAME]
        return TrainablePrefix(config, base=base, seed=seed)

    def rows(
        self,
        parts: Sequence[tuple[dict[str, torch.Tensor], PrefixConfig]],
        row_task: torch.Tensor,
    ) -> RowPrefix:
        return stack_rows([(tensors[NAME], config) for tensors, config in parts], row_task)

    def single(
        self, tensors: dict[str, torch.Tensor], config: PrefixConfig, batch_size: int
    ) -> RowPrefix:
        return single(tensors[NAME], config, batch_size)

    def start_from_text(
        self, backbone: Backbone, config: PrefixConfig, text: str
    ) -> dict[str, torch.Tensor]:
        return {NAME: word_activations(backbone, text, config)}
