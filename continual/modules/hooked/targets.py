"""Finding a module kind's target layers in a backbone by the last part of their names."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from tasks.errors import ConfigError


def resolve_targets(
    model: nn.Module, wanted: Sequence[str], kind: str
) -> list[tuple[str, nn.Linear]]:
    """The linear layers whose name is one of `wanted` or ends with `.`+one of them, in the
    model's order; a name matching none, or a match that is not linear, is one clear error."""
    found: dict[str, nn.Linear] = {}
    for w in wanted:
        hits = [(n, m) for n, m in model.named_modules() if n == w or n.endswith(f".{w}")]
        if not hits:
            raise ConfigError(
                f"{kind} target {w!r} matches no layer of this backbone; name linear layers "
                "by their last part (e.g. query, value or q_proj, v_proj)"
            )
        bad = [n for n, m in hits if not isinstance(m, nn.Linear)]
        if bad:
            raise ConfigError(f"{kind} target {w!r} matches {bad[0]}, which is not a linear layer")
        found.update(hits)
    order = {n: k for k, (n, _) in enumerate(model.named_modules())}
    return sorted(found.items(), key=lambda nm: order[nm[0]])


def linear_layers(model: nn.Module, *, with_bias: bool = False) -> list[tuple[str, nn.Linear]]:
    """Every linear layer of `model` (those with a bias only, if asked), in the model's order,
    the task heads a backbone may carry (`lm_head`, `classifier`) left out."""
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear)
        and (m.bias is not None or not with_bias)
        and n.split(".")[-1] not in ("lm_head", "classifier", "score")
    ]
