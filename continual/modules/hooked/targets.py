"""Finding a module kind's target layers in a backbone by the last part of their names."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from tasks.errors import ConfigError


def resolve_targets(
    model: nn.Module, wanted: Sequence[str], kind: str
) -> list[tuple[str, nn.Linear]]:
    """The linear layers whose name is one of `wanted` or ends with `.`+one of them, in the
    model's order; a name matching none, or a match that is not linear, is one clear error. An
    encoder's pooler is left out: it sees one vector per row, not the tokens, and the objectives
    pool features themselves."""
    found: dict[str, nn.Linear] = {}
    for w in wanted:
        hits = [
            (n, m)
            for n, m in model.named_modules()
            if (n == w or n.endswith(f".{w}")) and "pooler" not in n.split(".")
        ]
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
