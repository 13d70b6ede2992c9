"""Packed passes (`continual.packing`): the layout, the mask, and THE property: every segment's
outputs (and a prefix's gradient) equal those of the padded path, for mixed tasks with prefixes
of different lengths and position conventions, under sdpa and eager attention."""

from __future__ import annotations

import copy

import pytest
import torch

from continual import packing
from continual.modules.prefix import PrefixConfig, single, stack_rows
from continual.modules.prefix.packed import row_banks
from continual.objectives import TextLimits, encoder_features, prompt_ids, target_ids
from continual.objectives.decoder import tail_logprob
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
]
ROW_TASK = [0, 1, 1, 0, 1, 0]


def test_layout_balances_rows_longest_first_within_capacity() -> None:
    rows = packing.layout([5, 9, 3, 7, 2, 6], capacity=16)
    assert sorted(i for r in rows for i in r) == list(range(6))
    fills = [sum([5, 9, 3, 7, 2, 6][i] for i in r) for r in rows]
    assert len(rows) == 2 and max(fills) <= 16 and max(fills) - min(fills) <= 2
    assert rows[0][0] == 1  # the longest goes first
    assert packing.layout([5, 9, 3, 7, 2, 6], capacity=16) == rows  # deterministic
    # a segment longer than the capacity widens the rows (to its length) rather than failing
    assert packing.layout([40, 3], capacity=16) == [[0], [1]]
    assert packing.layout([40, 3, 30], capacity=16) == [[0], [2, 1]]
    assert packing.layout([], capacity=16) == []


def test_pack_restarts_positions_per_segment() -> None:
    p = packing.pack([[7, 8, 9], [5], [4, 4]], [0, 2, 0], pad_id=0, capacity=3)
    for i, (seq, first) in enumerate(zip([[7, 8, 9], [5], [4, 4]], [0, 2, 0])):
        r, s, n = int(p.row[i]), int(p.start[i]), int(p.length[i])
        assert n == len(seq)
        assert p.input_ids[r, s : s + n].tolist() == seq
        assert p.position_ids[r, s : s + n].tolist() == list(range(first, first + n))
        assert (p.segment[r, s : s + n] == i).all()
    assert int((p.segment == -1).sum()) == p.input_ids.numel() - 6


def _config(backbone, length: int, positions: str) -> PrefixConfig:
    g = backbone.geometry
    return PrefixConfig(
        length=length,
        layers=g.layers,
        kv_heads=g.kv_heads,
        head_dim=g.head_dim,
        hidden_size=g.hidden_size,
        positions=positions,
    )


def _bank(backbone, shapes):
    gen = torch.Generator().manual_seed(0)
    out = []
    for length, positions in shapes:
        c = _config(backbone, length, positions)
        out.append((torch.randn(length, c.flat_dim, generator=gen), c))
    return out


def test_layout_keeps_a_task_s_segments_together_where_they_fit() -> None:
    lengths, tasks = [4, 4, 4, 4, 2, 2, 2, 2], [0, 0, 1, 1, 0, 0, 1, 1]
    rows = packing.layout(lengths, capacity=12, groups=tasks)
    assert sorted(i for r in rows for i in r) == list(range(8))
    assert all(sum(lengths[i] for i in r) <= 12 for r in rows)
    assert [len({tasks[i] for i in r}) for r in rows] == [1, 1]
    mixed = packing.layout(lengths, capacity=12)  # without groups the longest-first fill mixes
    assert any(len({tasks[i] for i in r}) > 1 for r in mixed)
    # one task: rows are balanced as without groups (no first-fit towards full rows)
    assert packing.layout(lengths, capacity=12, groups=[3] * 8) == mixed


def test_rows_hold_only_their_tasks_prefixes(tiny_encoder) -> None:
    bank = _bank(tiny_encoder, [(2, "explicit"), (3, "explicit"), (3, "explicit")])
    rows = stack_rows(bank, torch.tensor([0, 1, 1, 2]))
    p = packing.pack(
        [[5] * 6, [6] * 6, [7] * 5, [8] * 5], [0] * 4, 0, capacity=12, groups=[0, 1, 1, 2]
    )
    banks = row_banks(p.n_rows, p.row, *rows.distinct())
    held = [sorted(set(banks.task[r][banks.valid[r]].tolist())) for r in range(p.n_rows)]
    per_row = [
        sorted({[0, 1, 1, 2][i] for i in range(4) if int(p.row[i]) == r}) for r in range(p.n_rows)
    ]
    assert held == per_row
    assert banks.index.shape[1] == 3 * max(len(h) for h in held)  # P_max 3 per held task


def test_mask_keeps_segments_and_tasks_apart(tiny_encoder) -> None:
    bank = _bank(tiny_encoder, [(2, "explicit"), (3, "shifted")])
    rows = stack_rows(bank, torch.tensor([0, 1]))
    p = packing.pack([[5, 6], [7, 8, 9]], [0, 3], pad_id=0, capacity=8)
    columns = rows.packed(p.segment, p.row).columns
    m = packing.attention_mask(p, columns, causal=False, dtype=None)[0, 0]  # one row: 6 + 5 cols
    assert m.shape == (5, 6 + 5)
    seg = p.segment[0].tolist()
    a, b = seg.index(0), seg.index(1)
    # prefix bank: task 0 holds columns 0-1 (2 real of P_max 3), task 1 columns 3-5
    assert m[a, :6].tolist() == [True, True, False, False, False, False]
    assert m[b, :6].tolist() == [False, False, False, True, True, True]
    assert m[a, 6 + a] and not m[a, 6 + b] and not m[b, 6 + a]
    causal = packing.attention_mask(p, columns, causal=True, dtype=None)[0, 0]
    assert causal[b + 1, 6 + b] and not causal[b, 6 + b + 1]
    additive = packing.attention_mask(p, columns, causal=False, dtype=torch.float32)[0, 0]
    assert (additive[m] == 0).all() and (additive[~m] == torch.finfo(torch.float32).min).all()


@pytest.fixture(params=["continual", "sdpa", "eager"])
def attn(request):
    return request.param


def _with_attention(backbone, impl: str):
    twin = copy.copy(backbone)
    twin.model = copy.deepcopy(backbone.model)
    twin.model.config._attn_implementation = impl
    for m in twin.model.modules():
        if hasattr(m, "config"):
            m.config._attn_implementation = impl
    return twin


def _padded(monkeypatch, fn, *args):
    with monkeypatch.context() as m:
        m.setattr(packing, "packable", lambda backbone: False)
        return fn(*args)


def test_encoder_packed_features_equal_padded(tiny_encoder, attn, monkeypatch) -> None:
    bb = _with_attention(tiny_encoder, attn)
    assert packing.packable(bb)
    rows = stack_rows(_bank(bb, [(4, "explicit"), (2, "shifted")]), torch.tensor(ROW_TASK))
    with torch.no_grad():
        packed = encoder_features(bb, TEXTS, rows, LIMITS)
        padded = _padded(monkeypatch, encoder_features, bb, TEXTS, rows, LIMITS)
        plain = encoder_features(bb, TEXTS, None, LIMITS)
        plain_padded = _padded(monkeypatch, encoder_features, bb, TEXTS, None, LIMITS)
    torch.testing.assert_close(packed, padded, atol=ATOL, rtol=0)
    torch.testing.assert_close(plain, plain_padded, atol=ATOL, rtol=0)
    assert (packed - plain).abs().max() > 1e-3  # the prefixes do act


def test_encoder_prefix_gradient_equals_padded(tiny_encoder, monkeypatch) -> None:
    ((flat, config),) = _bank(tiny_encoder, [(4, "explicit")])

    def grad(fn_packable: bool) -> torch.Tensor:
        x = flat.clone().requires_grad_(True)
        rows = single(x, config, len(TEXTS))
        if fn_packable:
            feats = encoder_features(tiny_encoder, TEXTS, rows, LIMITS)
        else:
            feats = _padded(monkeypatch, encoder_features, tiny_encoder, TEXTS, rows, LIMITS)
        (feats**2).sum().backward()
        return x.grad

    torch.testing.assert_close(grad(True), grad(False), atol=1e-4, rtol=1e-4)


def _decoder_inputs(bb):
    specs = [
        TaskSpec(name="s", kind="classification", labels=("yes", "no"), description="Say"),
        TaskSpec(name="g", kind="generation", target_field="target"),
    ]
    prompts = [prompt_ids(bb, specs[t], x, LIMITS) for t, x in zip(ROW_TASK, TEXTS)]
    tails = [target_ids(bb, w, LIMITS) for w in ["yes", "no", "a dog", "cat", "the sky is", "x"]]
    return prompts, tails


def test_decoder_packed_tail_logprob_equals_padded(tiny_decoder, attn, monkeypatch) -> None:
    bb = _with_attention(tiny_decoder, attn)
    prompts, tails = _decoder_inputs(bb)
    rows = stack_rows(_bank(bb, [(3, "shifted"), (5, "explicit")]), torch.tensor(ROW_TASK))
    with torch.no_grad():
        for prefix in (rows, None):
            lp, m = tail_logprob(bb, prompts, tails, prefix)
            lp2, m2 = _padded(monkeypatch, tail_logprob, bb, prompts, tails, prefix)
            torch.testing.assert_close(lp, lp2, atol=ATOL, rtol=0)
            assert torch.equal(m, m2)
            assert int(m.sum()) == sum(len(t) for t in tails)


def test_decoder_prefix_gradient_equals_padded(tiny_decoder, monkeypatch) -> None:
    prompts, tails = _decoder_inputs(tiny_decoder)
    ((flat, config),) = _bank(tiny_decoder, [(3, "shifted")])

    def grad(packed: bool) -> torch.Tensor:
        x = flat.clone().requires_grad_(True)
        rows = single(x, config, len(prompts))
        args = (tiny_decoder, prompts, tails, rows)
        lp, _ = tail_logprob(*args) if packed else _padded(monkeypatch, tail_logprob, *args)
        lp.sum().backward()
        return x.grad

    torch.testing.assert_close(grad(True), grad(False), atol=1e-4, rtol=1e-4)
