"""Task embeddings, prefix similarity, the similar-task inits and the router, on the tiny
random backbones (the real minilm is in tests/integration/test_integration_similar.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from continual.init import (
    AUTO_THRESHOLD,
    InitContext,
    Source,
    needs_sources,
    start_module,
    strategies,
)
from continual.modules.prefix import prefix_config_for
from continual.routing import Router, route_features, route_layers, task_keys
from continual.similarity import (
    mix_tensors,
    mix_weights,
    module_vector,
    pooled_features,
    rank,
    task_embedding,
)
from pipelines.cli_options import INIT_CHOICES
from tasks.errors import ConfigError
from tasks.spec import Example, TaskSpec


def spec(name: str = "sent", labels=("good", "bad"), kind="classification") -> TaskSpec:
    return TaskSpec(
        name=name,
        kind=kind,
        labels=labels if kind == "classification" else (),
        description="classify as good or bad",
    )


def examples(words: list[str], n: int = 24) -> list[Example]:
    return [Example(text=f"{words[i % len(words)]} the movie was", target="good") for i in range(n)]


def test_pooled_features_ignore_padding(tiny_encoder, tiny_decoder) -> None:
    for bb in (tiny_encoder, tiny_decoder):
        alone = pooled_features(bb, ["the cat sat"])
        batched = pooled_features(bb, ["the cat sat", "a dog sat on the mat with you"])
        np.testing.assert_allclose(alone[0], batched[0], atol=1e-5)
        assert alone.shape == (1, bb.geometry.hidden_size)


def test_task_embedding_is_a_seeded_unit_vector_and_labels_move_it(tiny_encoder) -> None:
    ex = examples(["good", "bad", "fine", "awful"])
    a = task_embedding(tiny_encoder, spec(), ex, seed=0)
    b = task_embedding(tiny_encoder, spec(), ex, seed=0)
    np.testing.assert_array_equal(a, b)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    other = task_embedding(tiny_encoder, spec(labels=("cat", "dog")), ex, seed=0)
    inputs_only = task_embedding(tiny_encoder, spec(), ex, seed=0, label_weight=0.0)
    assert not np.allclose(a, other)  # the label words are part of the embedding
    assert not np.allclose(a, inputs_only)
    with pytest.raises(ConfigError, match="label weight"):
        task_embedding(tiny_encoder, spec(), ex, label_weight=2.0)


def test_generation_tasks_embed_a_sample_of_targets(tiny_decoder) -> None:
    ex = [Example(text="the cat sat on the mat", target=f"summary {w}") for w in ("one", "two")]
    e = task_embedding(tiny_decoder, spec("gen", kind="generation"), ex)
    assert e.shape == (2 * tiny_decoder.geometry.hidden_size,)  # both layers, concatenated


def test_rank_orders_by_cosine_with_ties_by_name() -> None:
    keys = {"b": np.array([1.0, 0.0]), "a": np.array([1.0, 0.0]), "c": np.array([0.0, 1.0])}
    out = rank(np.array([1.0, 0.1]), keys, "embedding")
    assert [n.task for n in out] == ["a", "b", "c"]
    assert out[0].score == pytest.approx(1 / np.sqrt(1.01), abs=1e-6)
    assert rank(np.array([1.0, 0.1]), keys, "embedding", top=1)[0].task == "a"
    with pytest.raises(ConfigError, match="different backbones"):
        rank(np.zeros(3), keys, "embedding")


def test_mix_weights_are_a_softmax_over_temperature() -> None:
    w = mix_weights([0.9, 0.8], 0.1)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] / w[1] == pytest.approx(np.e, rel=1e-5)
    sharp = mix_weights([0.9, 0.8], 0.001)
    assert sharp[0] == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        mix_weights([1.0], 0.0)


def test_mix_tensors_and_module_vector() -> None:
    a, b = {"prefix": torch.ones(4, 6)}, {"prefix": torch.zeros(4, 6)}
    mixed = mix_tensors([a, b], [0.25, 0.75])
    assert mixed.keys() == {"prefix"}
    torch.testing.assert_close(mixed["prefix"], torch.full((4, 6), 0.25))
    with pytest.raises(ConfigError, match="differ in shape"):
        mix_tensors([a, {"prefix": torch.ones(3, 6)}], [0.5, 0.5])
    with pytest.raises(ConfigError, match="differ in their tensors"):
        mix_tensors([a, {"other": torch.ones(4, 6)}], [0.5, 0.5])
    p = torch.arange(12.0).view(2, 6)
    np.testing.assert_allclose(module_vector({"prefix": p}), p.mean(0).numpy())
    # several tensors: each averaged over its first axis, concatenated in name order
    two = module_vector({"b": torch.ones(3, 2), "a": torch.zeros(5, 1, 2)})
    np.testing.assert_allclose(two, [0.0, 0.0, 1.0, 1.0])


@pytest.fixture
def ctx_for(tiny_encoder):
    pcfg = prefix_config_for(tiny_encoder, 4, None)

    def make(sources, **options):
        return InitContext(tiny_encoder, spec(), pcfg, {"sources": sources, **options})

    return pcfg, make


def sources(pcfg, scores) -> list[Source]:
    return [
        Source(f"t{i}", 10 + i, s, {"prefix": torch.full((pcfg.length, pcfg.flat_dim), float(i))})
        for i, s in enumerate(scores)
    ]


def test_nearest_copies_the_most_similar_prefix(ctx_for) -> None:
    pcfg, make = ctx_for
    out = start_module("nearest", make(sources(pcfg, [0.2, 0.9, 0.5])))
    torch.testing.assert_close(out.tensors["prefix"], torch.full((pcfg.length, pcfg.flat_dim), 1.0))
    assert out.strategy == "nearest" and out.lineage() == [(11, 1.0, "init:nearest")]


def test_weighted_mixes_the_top_k_and_records_the_weights(ctx_for) -> None:
    pcfg, make = ctx_for
    out = start_module("weighted", make(sources(pcfg, [0.9, 0.8, 0.1]), top_k=2, temperature=0.1))
    w = mix_weights([0.9, 0.8], 0.1)
    expected = w[0] * 0.0 + w[1] * 1.0
    want = torch.full((pcfg.length, pcfg.flat_dim), expected)
    torch.testing.assert_close(out.tensors["prefix"], want)
    assert [pid for pid, _ in out.sources] == [10, 11]
    assert sum(wt for _, wt in out.sources) == pytest.approx(1.0)


def test_auto_takes_weighted_above_the_threshold_else_random(ctx_for) -> None:
    pcfg, make = ctx_for
    near = start_module("auto", make(sources(pcfg, [AUTO_THRESHOLD + 0.01])))
    assert near.strategy == "weighted" and near.sources == ((10, pytest.approx(1.0)),)
    far = start_module("auto", make(sources(pcfg, [AUTO_THRESHOLD - 0.01])))
    assert far.strategy == "random" and far.sources == () and far.tensors is None
    empty = start_module("auto", make([]))
    assert empty.strategy == "random"
    custom = start_module("auto", make(sources(pcfg, [0.3]), threshold=0.2))
    assert custom.strategy == "weighted"


def test_similar_inits_skip_other_shapes_and_refuse_without_sources(ctx_for) -> None:
    pcfg, make = ctx_for
    wrong = [Source("long", 1, 0.99, {"prefix": torch.zeros(pcfg.length + 1, pcfg.flat_dim)})]
    for name in ("nearest", "weighted"):
        with pytest.raises(ConfigError, match=f"--init {name} needs an earlier task"):
            start_module(name, make(wrong))
    assert start_module("auto", make(wrong)).strategy == "random"


def test_cli_init_choices_are_the_registered_strategies() -> None:
    assert set(INIT_CHOICES) == set(strategies()) - {"tensor"}
    assert all(needs_sources(n) for n in ("nearest", "weighted", "auto"))
    assert not needs_sources("words") and not needs_sources("random")


def test_route_layers_are_evenly_spaced_and_end_at_the_last(tiny_encoder) -> None:
    assert route_layers(tiny_encoder) == (1, 2)  # two layers: both
    feats = route_features(tiny_encoder, ["the cat", "a dog sat"])
    h = tiny_encoder.geometry.hidden_size
    assert feats.shape == (2, 2 * h)
    norms = np.linalg.norm(feats.reshape(2, 2, h), axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)  # each layer's block is unit-normed


def test_router_learns_keys_and_routes_new_inputs(tiny_encoder) -> None:
    cats = [Example(text=f"the cat sat on the mat {w}", target="x") for w in ("one", "two", "red")]
    sky = [Example(text=f"blue sky and green sea {w}", target="y") for w in ("one", "two", "red")]
    keys = {
        "cats": task_keys(tiny_encoder, cats * 4, seed=0),
        "sky": task_keys(tiny_encoder, sky * 4, seed=0),
    }
    router = Router(keys)
    routed = router.route(route_features(tiny_encoder, ["the cat sat on the mat", "blue sea sky"]))
    assert [router.tasks[i] for i in routed.task] == ["cats", "sky"]
    assert (routed.confidence > 0.5).all()
    single = Router({"cats": keys["cats"]}).route(route_features(tiny_encoder, ["blue sky"]))
    assert single.task.tolist() == [0] and single.confidence.tolist() == [1.0]
    with pytest.raises(ConfigError, match="another backbone"):
        router.route(np.zeros((1, 3), np.float32))
    with pytest.raises(ConfigError, match="no tasks"):
        Router({})
