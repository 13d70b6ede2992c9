"""THE mixed-task batch test: rows of different tasks, with prefixes of different lengths and
position conventions, give in one shared pass what each task's rows give alone (within 1e-5 in
float32), hence the same predictions.

"Alone" is checked two ways: each task's rows as their own batch (other padding widths) and
each row as a batch of one (no padding at all).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from continual.heads import ClassificationHead
from continual.inference import TrainedTask, predict
from continual.model import Batch, forward
from continual.modules.prefix import PrefixConfig, single, stack_rows
from continual.objectives import (
    TextLimits,
    encoder_features,
    generate,
    prompt_ids,
    rank_classify,
    target_ids,
)
from continual.objectives.decoder import _left_pad, tail_logprob
from tasks.spec import TaskSpec

ATOL = 1e-5
LIMITS = TextLimits(max_length=32, max_target_length=5)
TEXTS = [
    "the movie was good",
    "bad",
    "a very really quite awful film plot with the acting",
    "i liked it",
    "cat sat on the mat",
    "two",
    "we hated that story but the acting was fine",
    "hello world",
]
ROW_TASK = [0, 1, 2, 1, 0, 2, 2, 0]  # interleaved, every task several times


def make_tasks(backbone, shapes, specs, *, heads: bool) -> list[TrainedTask]:
    """One TrainedTask per (length, positions), with a seeded random prefix (and head)."""
    g = backbone.geometry
    gen = torch.Generator().manual_seed(0)
    tasks = []
    for (length, positions), spec in zip(shapes, specs, strict=True):
        config = PrefixConfig(
            length=length,
            layers=g.layers,
            kv_heads=g.kv_heads,
            head_dim=g.head_dim,
            hidden_size=g.hidden_size,
            positions=positions,
        )
        flat = torch.randn(length, config.flat_dim, generator=gen)
        head = None
        if heads:
            head = ClassificationHead(g.hidden_size, len(spec.labels), dropout=0.0)
            with torch.no_grad():
                head.linear.weight.normal_(0.0, 1.0, generator=gen)
            head.eval()
        tasks.append(
            TrainedTask(
                spec=spec, config=config, tensors={"prefix": flat}, head=head, limits=LIMITS
            )
        )
    return tasks


def classification(name: str, labels: tuple[str, ...]) -> TaskSpec:
    return TaskSpec(name=name, kind="classification", labels=labels, description=f"Classify {name}")


def groups(row_task: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for row, task in enumerate(row_task):
        out.setdefault(task, []).append(row)
    return out


# --- encoder -----------------------------------------------------------------------------------

ENC_SPECS = [
    classification("sentiment", ("positive", "negative")),
    classification("animal", ("cat", "dog", "bird")),
    classification("colour", ("red", "blue", "green", "yes")),
]
ENC_SHAPES = [(3, "explicit"), (5, "shifted"), (1, "explicit")]


@pytest.fixture(scope="module")
def enc_tasks(tiny_encoder) -> list[TrainedTask]:
    return make_tasks(tiny_encoder, ENC_SHAPES, ENC_SPECS, heads=True)


@torch.no_grad()
def test_encoder_mixed_features_equal_alone(tiny_encoder, enc_tasks) -> None:
    bank = [(t.tensors["prefix"], t.config) for t in enc_tasks]
    mixed = encoder_features(tiny_encoder, TEXTS, stack_rows(bank, torch.tensor(ROW_TASK)), LIMITS)
    for task, rows in groups(ROW_TASK).items():
        t = enc_tasks[task]
        alone = encoder_features(
            tiny_encoder,
            [TEXTS[r] for r in rows],
            single(t.tensors["prefix"], t.config, len(rows)),
            LIMITS,
        )
        torch.testing.assert_close(mixed[rows], alone, atol=ATOL, rtol=0)
        for r in rows:
            one = encoder_features(
                tiny_encoder, [TEXTS[r]], single(t.tensors["prefix"], t.config, 1), LIMITS
            )
            torch.testing.assert_close(mixed[r], one[0], atol=ATOL, rtol=0)
    # The tasks' prefixes really differ in effect: the same text under two tasks differs.
    other = stack_rows(bank, torch.tensor([1] * len(TEXTS)))
    assert (encoder_features(tiny_encoder, TEXTS, other, LIMITS) - mixed).abs().max() > 1e-3


@torch.no_grad()
def test_encoder_mixed_predictions_equal_alone(tiny_encoder, enc_tasks) -> None:
    items = list(zip(ROW_TASK, TEXTS, strict=True))
    mixed = predict(tiny_encoder, enc_tasks, items, batch_size=len(items))
    for task, rows in groups(ROW_TASK).items():
        alone = predict(tiny_encoder, [enc_tasks[task]], [(0, TEXTS[r]) for r in rows])
        assert [mixed[r] for r in rows] == alone
        assert set(alone) <= set(ENC_SPECS[task].labels)
    # Batches of 3 cut the items differently, the answers stay the same.
    assert predict(tiny_encoder, enc_tasks, items, batch_size=3) == mixed


# --- decoder -----------------------------------------------------------------------------------

DEC_SPECS = [
    classification("sentiment", ("positive", "negative")),
    classification("animal", ("cat", "dog", "bird")),
    TaskSpec(name="summary", kind="generation", target_field="target", description="Write summary"),
    TaskSpec(name="echo", kind="generation", target_field="target"),
]
DEC_SHAPES = [(2, "shifted"), (4, "explicit"), (3, "shifted"), (6, "explicit")]
DEC_ROW_TASK = [0, 2, 1, 3, 2, 0, 1, 3]


@pytest.fixture(scope="module")
def dec_tasks(tiny_decoder) -> list[TrainedTask]:
    return make_tasks(tiny_decoder, DEC_SHAPES, DEC_SPECS, heads=False)


def _scoring_inputs(backbone, tasks, row_task):
    prompts = [
        prompt_ids(backbone, tasks[t].spec, x, LIMITS) for t, x in zip(row_task, TEXTS, strict=True)
    ]
    tails = [
        target_ids(backbone, w, LIMITS)
        for w in ["positive", "good", "cat", "the sky is blue", "no", "a dog", "red", "one"]
    ]
    return prompts, tails


@torch.no_grad()
def test_decoder_mixed_logits_and_logprobs_equal_alone(tiny_decoder, dec_tasks) -> None:
    bank = [(t.tensors["prefix"], t.config) for t in dec_tasks]
    prompts, tails = _scoring_inputs(tiny_decoder, dec_tasks, DEC_ROW_TASK)
    seqs = [p + t for p, t in zip(prompts, tails, strict=True)]
    pad = tiny_decoder.tokenizer.pad_token_id
    mixed_rows = stack_rows(bank, torch.tensor(DEC_ROW_TASK))
    ids, mask = _left_pad(seqs, pad)
    mixed_logits = forward(tiny_decoder, Batch(ids, mask), mixed_rows).logits
    mixed_logp, mixed_mask = tail_logprob(tiny_decoder, prompts, tails, mixed_rows)
    k = mixed_logp.shape[1]
    for task, rows in groups(DEC_ROW_TASK).items():
        t = dec_tasks[task]
        for r in rows:  # each row alone: a batch of one, no padding
            one = single(t.tensors["prefix"], t.config, 1)
            ids1, mask1 = _left_pad([seqs[r]], pad)
            logits1 = forward(tiny_decoder, Batch(ids1, mask1), one).logits[0]
            n = len(seqs[r])
            torch.testing.assert_close(mixed_logits[r, -n:], logits1, atol=ATOL, rtol=0)
            logp1, mask1 = tail_logprob(tiny_decoder, [prompts[r]], [tails[r]], one)
            got = mixed_logp[r, k - logp1.shape[1] :]
            torch.testing.assert_close(got, logp1[0], atol=ATOL, rtol=0)
            assert mixed_mask[r].sum() == mask1.sum() == len(tails[r])
        # the task's rows as their own (differently padded) batch
        logp, _ = tail_logprob(
            tiny_decoder,
            [prompts[r] for r in rows],
            [tails[r] for r in rows],
            single(t.tensors["prefix"], t.config, len(rows)),
        )
        kt = logp.shape[1]
        torch.testing.assert_close(mixed_logp[rows, k - kt :], logp, atol=ATOL, rtol=0)


@torch.no_grad()
def test_decoder_mixed_rank_classification_and_generation(tiny_decoder, dec_tasks) -> None:
    bank = [(t.tensors["prefix"], t.config) for t in dec_tasks]
    for kind, fn in (("classification", rank_classify), ("generation", generate)):
        rows = [r for r, t in enumerate(DEC_ROW_TASK) if DEC_SPECS[t].kind == kind]
        row_task = [DEC_ROW_TASK[r] for r in rows]
        mixed = fn(
            tiny_decoder,
            [DEC_SPECS[t] for t in row_task],
            [TEXTS[r] for r in rows],
            stack_rows(bank, torch.tensor(row_task)),
            LIMITS,
        )
        alone = [
            fn(
                tiny_decoder,
                [DEC_SPECS[t]],
                [TEXTS[r]],
                single(dec_tasks[t].tensors["prefix"], dec_tasks[t].config, 1),
                LIMITS,
            )[0]
            for r, t in zip(rows, row_task, strict=True)
        ]
        assert mixed == alone, kind
    assert any(len(a.split()) > 1 for a in alone), "generation produced nothing to compare"
    assert all(len(a.split()) <= LIMITS.max_target_length for a in alone)


@torch.no_grad()
def test_decoder_predict_mixes_classification_and_generation(tiny_decoder, dec_tasks) -> None:
    items = list(zip(DEC_ROW_TASK, TEXTS, strict=True))
    mixed = predict(tiny_decoder, dec_tasks, items, batch_size=len(items))
    for task, rows in groups(DEC_ROW_TASK).items():
        alone = predict(tiny_decoder, [dec_tasks[task]], [(0, TEXTS[r]) for r in rows])
        assert [mixed[r] for r in rows] == alone
        if DEC_SPECS[task].kind == "classification":
            assert set(alone) <= set(DEC_SPECS[task].labels)
    assert predict(tiny_decoder, dec_tasks, items, batch_size=3) == mixed
    assert predict(tiny_decoder, dec_tasks, items[::-1], batch_size=5) == mixed[::-1]


@torch.no_grad()
def test_tasks_with_different_text_limits_mix(tiny_encoder, tiny_decoder, enc_tasks, dec_tasks):
    """Each row keeps its own task's limits in a mixed batch: the input cut (encoder) and the
    answer length (decoder) of one task do not leak into another's rows."""
    short = TextLimits(max_length=2, max_target_length=1)
    for backbone, tasks, row_task in (
        (tiny_encoder, enc_tasks, ROW_TASK),
        (tiny_decoder, dec_tasks, DEC_ROW_TASK),
    ):
        tasks = [replace(t, limits=short) if i % 2 else t for i, t in enumerate(tasks)]
        items = list(zip(row_task, TEXTS, strict=True))
        mixed = predict(backbone, tasks, items, batch_size=len(items))
        alone = [predict(backbone, [tasks[t]], [(0, x)])[0] for t, x in items]
        assert mixed == alone, backbone.kind
