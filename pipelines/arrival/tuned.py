"""Step 3 of an arrival with `--tune N`: search the prefix's length, learning rate, width and
start (`pipelines.tune`), then evaluate the best trial's prefix, which alone is registered.

The task embedding and routing keys are computed once per arrival, and the earlier tasks a
similarity start draws on are read once, not per trial.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from continual.backbones import Backbone
from continual.inference import evaluate
from continual.init import InitContext, Start, needs_sources, start_module
from continual.modules.prefix import prefix_config_for
from continual.routing import arrival_embeddings
from continual.similarity import embedding_method
from continual.train import train
from pipelines.tune import search, storage_for, study_name
from registry import Registry
from tasks.spec import TaskData


def context_room(backbone: Backbone, positions: str | None, max_length: int) -> int:
    """The longest prefix the backbone's context leaves room for: with shifted positions (a
    decoder's default) the prefix takes positions before the `max_length` tokens; with
    explicit ones (an encoder's) it takes none."""
    if prefix_config_for(backbone, 1, positions).positions != "shifted":
        return 1 << 20
    limit = getattr(backbone.model.config, "max_position_embeddings", None) or 1 << 20
    return max(1, int(limit) - max_length)


def train_tuned(
    reg: Registry,
    backbone: Backbone,
    data: TaskData,
    plan: Any,
    *,
    say: Callable[[str], None],
    bars: bool,
    prefix_starts: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """The search and its winner: `result`, `evaluation`, `pconfig`, `planned` (its start),
    `embeddings`, `starts` (when `prefix_starts` is given) and `summary` (for the run)."""
    space = plan.tune
    config = plan.config
    vectors = arrival_embeddings(backbone, data)
    sources: list[Any] | None = None

    def start_for(pconfig: Any) -> Start:
        nonlocal sources
        if needs_sources(pconfig.init) and sources is None:
            from pipelines.similar import sources_for

            query = vectors[embedding_method(backbone)]
            sources = sources_for(reg, backbone, query, exclude=data.spec.name)
        ctx = InitContext(backbone, data.spec, pconfig, {"sources": sources or []})
        return start_module(pconfig.init, ctx)

    def run_trial(params: dict[str, Any], on_validation: Callable[[int, float], bool]) -> Any:
        pconfig = prefix_config_for(backbone, params["prefix_length"], plan.positions).with_(
            init=params["init"], reparam_hidden=params["reparam_hidden"]
        )
        planned = start_for(pconfig)
        result = train(
            backbone,
            data,
            pconfig,
            config.with_(lr=params["lr"]),
            init=planned.tensors,
            progress=bars,
            on_validation=on_validation,
        )
        return result, pconfig, planned

    def score_of(what: Any) -> tuple[float, int]:
        result = what[0]
        values = dict(result.validations)
        if not values:
            from tasks.errors import ConfigError

            raise ConfigError(
                f"tune: task {data.spec.name} has no validation split to search on "
                f"({len(data.train)} training examples); give more training data or drop --tune"
            )
        return values.get(result.best_step, max(values.values())), result.steps

    settings = json.dumps(
        {"config": config.to_dict(), "positions": plan.positions, "backbone": backbone.fingerprint},
        sort_keys=True,
    )
    name = study_name(
        data.spec.name, data.fingerprint, space, hashlib.sha256(settings.encode()).hexdigest()
    )
    found = search(
        space,
        lengths=space.capped(context_room(backbone, plan.positions, config.max_length)),
        study_name=name,
        storage=storage_for(reg.db.engine.url.render_as_string(hide_password=False), reg.workspace),
        run_trial=run_trial,
        score_of=score_of,
        say=say,
    )
    # the winner's weights are in memory unless it ran before a restart: then train it again
    # (seeded, the same weights)
    result, pconfig, planned = found.best_run or run_trial(found.best.params, lambda s, v: True)
    ev = evaluate(backbone, result.task, data.eval, batch_size=config.eval_batch_size)
    starts = None
    if prefix_starts is not None:
        starts = prefix_starts(backbone, data, pconfig, config, planned.tensors)
    return {
        "result": result,
        "evaluation": ev,
        "pconfig": pconfig,
        "planned": planned,
        "embeddings": vectors,
        "starts": starts,
        "summary": found.summary(),
        "config": config.with_(lr=found.best.params["lr"]),
    }
