"""THE seam test: a second kind of task module, defined and registered here and nowhere else,
trains, evaluates, mixes with other tasks (its own kind and prefixes) in one batch, is stored
and loaded, and starts from similar tasks, all through the generic paths with no change to the
core.

The kind is "bias-test": one learned vector per task, added to every token's input embedding
while a pass runs (through `RowModules.hooks`, the route LoRA or IA3 would take; a prefix takes
the other route, virtual key/value positions). It has no virtual positions: V = 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from continual import checkpoint, packing
from continual.backbones import Backbone, fingerprint
from continual.inference import TrainedTask, evaluate, predict
from continual.init import InitContext, Source, start_module
from continual.modules import (
    PackedModules,
    check_shapes,
    config_from_dict,
    module_kind,
    module_kinds,
    register_module,
)
from continual.modules.prefix import PrefixConfig, prefix_config_for
from continual.objectives import TextLimits, encoder_features, label_scores, objective
from continual.train import TrainConfig, train
from tasks.errors import ConfigError
from tasks.spec import Example, TaskData, TaskSpec

KIND = "bias-test"


@dataclass(frozen=True)
class BiasConfig:
    kind: ClassVar[str] = KIND

    hidden_size: int
    scale: float = 0.01
    init: str = "random"

    def __post_init__(self) -> None:
        if self.hidden_size < 1:
            raise ConfigError(f"bias hidden_size must be positive, got {self.hidden_size}")

    @property
    def n_params(self) -> int:
        return self.hidden_size

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"bias": (self.hidden_size,)}

    def check(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return check_shapes(tensors, self.shapes(), KIND)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BiasConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_(self, **changes: Any) -> BiasConfig:
        return replace(self, **changes)


class TrainableBias(nn.Module):
    def __init__(self, config: BiasConfig, start: dict[str, torch.Tensor] | None, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        if start is None:
            first = config.scale * torch.randn(config.hidden_size, generator=gen)
        else:
            first = config.check(start)["bias"].detach().clone().float()
        self.bias = nn.Parameter(first)

    def forward(self) -> dict[str, torch.Tensor]:
        return {"bias": self.bias}

    @torch.no_grad()
    def eject(self) -> dict[str, torch.Tensor]:
        return {"bias": self.bias.detach().clone()}


@dataclass
class RowBias:
    bank: torch.Tensor  # [n, H]
    task: torch.Tensor  # [B]

    @property
    def mask(self) -> torch.Tensor:
        return torch.zeros(len(self.task), 0, dtype=torch.long)

    @property
    def offset(self) -> torch.Tensor:
        return torch.zeros(len(self.task), dtype=torch.long)

    def groups(self) -> torch.Tensor:
        return self.task

    def select(self, index: torch.Tensor) -> RowBias:
        return RowBias(self.bank, self.task[index])

    def past(self) -> None:
        return None

    def packed(self, segment: torch.Tensor, row: torch.Tensor) -> PackedModules:
        r, width = segment.shape
        return PackedModules(torch.zeros(r, width, 0, dtype=torch.bool), None)

    @contextlib.contextmanager
    def hooks(self, model: nn.Module, token_row: torch.Tensor) -> Iterator[None]:
        def add(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            bias = self.bank[self.task[token_row.clamp(min=0)]]  # [B', T', H]
            return output + bias * (token_row >= 0).unsqueeze(-1).to(output.dtype)

        handle = model.get_input_embeddings().register_forward_hook(add)
        try:
            yield
        finally:
            handle.remove()


class BiasModule:
    kind = KIND

    def config_for(self, backbone: Backbone, **options: Any) -> BiasConfig:
        return BiasConfig(hidden_size=backbone.geometry.hidden_size, **options)

    def config_from_dict(self, d: Mapping[str, Any]) -> BiasConfig:
        return BiasConfig.from_dict(d)

    def build(
        self, config: BiasConfig, *, start: dict[str, torch.Tensor] | None = None, seed: int = 0
    ) -> TrainableBias:
        return TrainableBias(config, start, seed)

    def rows(
        self, parts: Sequence[tuple[dict[str, torch.Tensor], BiasConfig]], row_task: torch.Tensor
    ) -> RowBias:
        return RowBias(torch.stack([c.check(t)["bias"] for t, c in parts]), row_task)

    def single(self, tensors: dict[str, torch.Tensor], config: BiasConfig, n: int) -> RowBias:
        return RowBias(tensors["bias"].unsqueeze(0), torch.zeros(n, dtype=torch.long))

    def start_from_text(self, backbone: Backbone, config: BiasConfig, text: str) -> Any:
        raise ConfigError(f"a {KIND} module has no start from text; use --init random")


if KIND not in module_kinds():  # the one registration line a new kind adds
    register_module(BiasModule())


# --- the seam ----------------------------------------------------------------------------------

LIMITS = TextLimits(max_length=32, max_target_length=4)
SPEC = TaskSpec(name="sentiment", kind="classification", labels=("positive", "negative"))


def data(rows: list[dict], held: list[dict], spec: TaskSpec = SPEC) -> TaskData:
    def ex(rs: list[dict]) -> tuple[Example, ...]:
        return tuple(Example(r["text"], r["label"]) for r in rs)

    return TaskData(spec=spec, train=ex(rows), eval=ex(held), fingerprint="test")


def test_the_registry_refuses_a_duplicate_and_names_the_known_kinds() -> None:
    assert {"prefix", KIND} <= set(module_kinds())
    with pytest.raises(ConfigError, match="registered twice"):
        register_module(BiasModule())
    with pytest.raises(ConfigError, match="prefix"):
        module_kind("lora-not-yet")


@pytest.mark.parametrize(
    "config",
    [
        BiasConfig(hidden_size=8),
        BiasConfig(hidden_size=3, scale=0.5, init="nearest"),
        PrefixConfig(length=2, layers=1, kv_heads=1, head_dim=4, hidden_size=8),
        PrefixConfig(length=5, layers=2, kv_heads=3, head_dim=2, hidden_size=6, init="words"),
    ],
)
def test_every_kind_s_config_round_trips_by_its_kind(config: Any) -> None:
    assert config_from_dict(config.kind, config.to_dict()) == config
    assert "kind" not in config.to_dict()  # the kind is stored beside the config, not in it
    assert config.n_params == sum(int(torch.tensor(s).prod()) for s in config.shapes().values())


def test_unregistered_backbone_and_task_pair_is_a_clear_error(tiny_encoder, tiny_decoder) -> None:
    with pytest.raises(ConfigError, match="encoder backbone does no generation.*decoder"):
        objective("encoder", "generation")
    assert objective("decoder", "generation").peft_task_type == "CAUSAL_LM"
    assert objective("encoder", "classification").peft_task_type == "SEQ_CLS"


@pytest.fixture(scope="module")
def encoder_bias(tiny_encoder, sentiment) -> tuple[Any, TaskData, str]:
    before = fingerprint(tiny_encoder.model)
    task = data(sentiment(96, seed=1), sentiment(24, seed=2))
    config = module_kind(KIND).config_for(tiny_encoder)
    run = TrainConfig(steps=30, batch_size=16, lr=5e-2, eval_every=10, patience=0)
    return train(tiny_encoder, task, config, run, progress=False), task, before


def test_a_second_kind_trains_and_evaluates_on_an_encoder(tiny_encoder, encoder_bias) -> None:
    result, task, before = encoder_bias
    assert result.task.config.kind == KIND and set(result.task.tensors) == {"bias"}
    assert result.trainable_params == tiny_encoder.geometry.hidden_size + 2 * (
        tiny_encoder.geometry.hidden_size + 1
    )  # the bias and the head
    start = module_kind(KIND).build(result.task.config, seed=0).eject()["bias"]
    assert not torch.equal(result.task.tensors["bias"], start)  # it trained
    assert evaluate(tiny_encoder, result.task, task.eval).score >= 0.8
    assert fingerprint(tiny_encoder.model) == before == tiny_encoder.fingerprint
    # the hooks came off: the plain backbone is the plain backbone again
    assert not tiny_encoder.model.get_input_embeddings()._forward_hooks


def _decoder_tasks(tiny_decoder, sentiment) -> list[TrainedTask]:
    """A trained classification and a trained generation bias task, plus a random prefix."""
    run = TrainConfig(steps=12, batch_size=8, lr=5e-2, eval_every=6, patience=0, max_length=32)
    config = module_kind(KIND).config_for(tiny_decoder)
    cls = data(sentiment(48, seed=3), sentiment(8, seed=4), SPEC.with_(description=""))
    gen_spec = TaskSpec(name="echo", kind="generation", target_field="target")
    gen_rows = [{"text": r["text"], "label": "the cat sat"} for r in sentiment(32, seed=5)]
    gen = data(gen_rows, gen_rows[:6], gen_spec)
    trained = []
    for task in (cls, gen):
        result = train(tiny_decoder, task, config, run.with_(max_target_length=4), progress=False)
        assert result.losses[-1] < result.losses[0]
        trained.append(replace(result.task, limits=LIMITS))
    pcfg = prefix_config_for(tiny_decoder, 3, None)
    flat = torch.randn(3, pcfg.flat_dim, generator=torch.Generator().manual_seed(1))
    spec = TaskSpec(name="animal", kind="classification", labels=("cat", "dog"))
    trained.append(TrainedTask(spec, pcfg, {"prefix": flat}, limits=LIMITS))
    return trained


@pytest.fixture(scope="module")
def decoder_tasks(tiny_decoder, sentiment) -> list[TrainedTask]:
    return _decoder_tasks(tiny_decoder, sentiment)


TEXTS = ["the movie was good", "bad", "a very really quite awful film", "i liked it", "two"]


@torch.no_grad()
def test_a_second_kind_mixes_in_one_batch_as_it_answers_alone(
    tiny_decoder, decoder_tasks, monkeypatch
) -> None:
    """Rows of two bias tasks (rank classification and generation, so the hooks run in the
    label pass and at every decoding step) and of a prefix task, interleaved: each answers as
    it does alone, packed or padded."""
    items = [(i % 3, t) for i, t in enumerate(TEXTS * 2)]
    mixed = predict(tiny_decoder, decoder_tasks, items, batch_size=len(items))
    alone = [predict(tiny_decoder, [decoder_tasks[k]], [(0, t)])[0] for k, t in items]
    assert mixed == alone
    assert set(mixed[0::3]) <= {"positive", "negative"} and set(mixed[2::3]) <= {"cat", "dog"}
    with monkeypatch.context() as m:
        m.setattr(packing, "packable", lambda backbone: False)
        assert predict(tiny_decoder, decoder_tasks, items, batch_size=4) == mixed
    # ...and the module acts: the label scores under it are not the plain backbone's
    task = decoder_tasks[0]
    rows = module_kind(KIND).single(task.tensors, task.config, len(TEXTS))
    specs = [task.spec] * len(TEXTS)
    under = torch.stack(label_scores(tiny_decoder, specs, TEXTS, rows, LIMITS))
    plain = torch.stack(label_scores(tiny_decoder, specs, TEXTS, None, LIMITS))
    assert (under - plain).abs().max() > 1e-4


@torch.no_grad()
def test_a_second_kind_mixes_on_an_encoder(tiny_encoder, encoder_bias) -> None:
    result, _, _ = encoder_bias
    other = replace(result.task, tensors={"bias": -result.task.tensors["bias"]})
    items = [(i % 2, t) for i, t in enumerate(TEXTS * 2)]
    mixed = predict(tiny_encoder, [result.task, other], items, batch_size=len(items))
    alone = [predict(tiny_encoder, [[result.task, other][k]], [(0, t)])[0] for k, t in items]
    assert mixed == alone
    # features of a mixed packed pass equal each row's alone, and the two biases differ in effect
    kind = module_kind(KIND)
    parts = [(t.tensors, t.config) for t in (result.task, other)]
    rows = kind.rows(parts, torch.tensor([k for k, _ in items]))
    feats = encoder_features(tiny_encoder, [t for _, t in items], rows, LIMITS)
    for r, (k, t) in enumerate(items):
        one = kind.single(parts[k][0], parts[k][1], 1)
        torch.testing.assert_close(
            feats[r], encoder_features(tiny_encoder, [t], one, LIMITS)[0], atol=1e-5, rtol=0
        )
    flipped = kind.rows(parts, torch.tensor([1 - k for k, _ in items]))
    assert (
        encoder_features(tiny_encoder, [t for _, t in items], flipped, LIMITS) - feats
    ).abs().max() > 1e-4


def test_a_second_kind_is_stored_loaded_and_starts_from_similar_tasks(
    tmp_path, tiny_encoder, encoder_bias
) -> None:
    result, task, _ = encoder_bias
    folder = checkpoint.save(tmp_path / "bias", result.task, {"backbone": tiny_encoder.info()})
    loaded, doc = checkpoint.load(folder, backbone_fingerprint=tiny_encoder.fingerprint)
    assert doc["module_kind"] == KIND and loaded.config == result.task.config
    assert torch.equal(loaded.tensors["bias"], result.task.tensors["bias"])
    assert evaluate(tiny_encoder, loaded, task.eval) == evaluate(
        tiny_encoder, result.task, task.eval
    )
    config = result.task.config.with_(init="nearest")
    sources = [
        Source("near", 1, 0.9, result.task.tensors),
        Source("other-shape", 2, 0.99, {"bias": torch.zeros(3)}),
    ]
    ctx = InitContext(tiny_encoder, SPEC, config, {"sources": sources})
    start = start_module("nearest", ctx)
    assert start.lineage() == [(1, 1.0, "init:nearest")]
    again = train(tiny_encoder, task, config, TrainConfig(steps=1, lr=1e-9), init=start.tensors,
                  progress=False)  # fmt: skip
    assert torch.allclose(again.task.tensors["bias"], result.task.tensors["bias"], atol=1e-6)
    with pytest.raises(ConfigError, match="no start from text"):
        start_module("words", ctx)
