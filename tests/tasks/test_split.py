"""Seeded splits and subsamples: deterministic, stratified, order-keeping; the fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tasks.errors import ConfigError, DataError
from tasks.spec import Example, TaskSpec
from tasks.split import assemble, fingerprint, stratified_split, subsample

ROOT = Path(__file__).resolve().parents[2]


def make(counts: dict[str, int]) -> list[Example]:
    """Examples interleaved across labels, each text unique."""
    rows = [Example(f"{label} {i}", label) for label, n in counts.items() for i in range(n)]
    return sorted(rows, key=lambda ex: (int(ex.text.split()[1]), ex.target))


def test_split_is_deterministic_and_depends_on_seed() -> None:
    data = make({"a": 60, "b": 40})
    first = stratified_split(data, fraction=0.2, seed=3)
    assert stratified_split(data, fraction=0.2, seed=3) == first
    assert stratified_split(data, fraction=0.2, seed=4) != first


def test_split_is_stratified_complete_and_keeps_order() -> None:
    data = make({"a": 80, "b": 20})
    rest, held = stratified_split(data, fraction=0.25, seed=0)
    assert Counter(ex.target for ex in held) == {"a": 20, "b": 5}
    assert Counter(ex.target for ex in rest) == {"a": 60, "b": 15}
    assert sorted(rest + held, key=data.index) == data
    assert not set(rest) & set(held)
    assert list(rest) == sorted(rest, key=data.index)
    assert list(held) == sorted(held, key=data.index)


def test_split_rare_labels_stay_in_train_and_pairs_reach_eval() -> None:
    data = make({"a": 50, "b": 2, "c": 1})
    rest, held = stratified_split(data, fraction=0.1, seed=0)
    assert Counter(ex.target for ex in held)["b"] == 1
    assert "c" in {ex.target for ex in rest}
    assert {ex.target for ex in held} <= {ex.target for ex in rest}


def test_split_unstratified_is_a_plain_draw() -> None:
    data = [Example(f"text {i}", f"ref {i}") for i in range(50)]
    rest, held = stratified_split(data, fraction=0.2, seed=1, stratified=False)
    assert (len(rest), len(held)) == (40, 10)
    assert stratified_split(data, fraction=0.2, seed=1, stratified=False) == (rest, held)


def test_split_rejects_bad_fraction_and_tiny_input() -> None:
    with pytest.raises(ConfigError):
        stratified_split(make({"a": 5, "b": 5}), fraction=1.0, seed=0)
    with pytest.raises(DataError):
        stratified_split([Example("x", "a")], fraction=0.2, seed=0)


def test_subsample_keeps_proportions_and_every_label() -> None:
    data = make({"a": 90, "b": 7, "c": 3})
    small = subsample(data, 20, seed=0)
    counts = Counter(ex.target for ex in small)
    assert len(small) == 20 and set(counts) == {"a", "b", "c"}
    assert counts["a"] == 18
    assert subsample(data, 20, seed=0) == small
    assert subsample(data, 20, seed=1) != small
    assert list(small) == sorted(small, key=data.index)


def test_subsample_edges() -> None:
    data = make({"a": 10, "b": 10, "c": 10})
    assert subsample(data, 100, seed=0) == tuple(data)
    assert len(subsample(data, 2, seed=0)) == 2  # fewer picks than labels
    assert len(subsample(data, 7, seed=0, stratified=False)) == 7
    with pytest.raises(ConfigError):
        subsample(data, 0, seed=0)


def test_split_and_subsample_match_across_processes() -> None:
    """No dependence on PYTHONHASHSEED or process state: a fresh interpreter agrees."""
    code = (
        "import json; from tasks.spec import Example; "
        "from tasks.split import stratified_split, subsample; "
        "d=[Example(f'{l} {i}', l) for i in range(40) for l in 'xyz']; "
        "r, h = stratified_split(d, fraction=0.3, seed=7); s = subsample(d, 9, seed=7); "
        "print(json.dumps([[e.text for e in h], [e.text for e in s]]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    data = [Example(f"{label} {i}", label) for i in range(40) for label in "xyz"]
    _, held = stratified_split(data, fraction=0.3, seed=7)
    small = subsample(data, 9, seed=7)
    assert json.loads(out.stdout) == [[e.text for e in held], [e.text for e in small]]


def test_fingerprint_covers_content_order_and_side() -> None:
    a, b = Example("one", "x"), Example("two", "y")
    assert fingerprint((), ()) == hashlib.sha256(b"").hexdigest()
    assert fingerprint([a], [b]) == fingerprint((a,), (b,))
    assert fingerprint([a], [b]) != fingerprint([b], [a])
    assert fingerprint([a, b], []) != fingerprint([b, a], [])
    assert fingerprint([a, b], []) != fingerprint([a], [b])
    assert fingerprint([a], []) != fingerprint([Example("one", "z")], [])


def test_assemble_records_how_it_split_and_capped() -> None:
    spec = TaskSpec(name="t", kind="classification", labels=("a", "b"), seed=5)
    data = assemble(spec, make({"a": 50, "b": 50}), None, max_train=10, eval_fraction=0.2)
    extra = dict(data.spec.extra)
    assert extra["eval_split"] == "seeded stratified 20% of train, seed 5"
    assert extra["max_train"] == "seeded stratified subsample of 10 of 80, seed 5"
    assert (len(data.train), len(data.eval)) == (10, 20)
    assert data.fingerprint == fingerprint(data.train, data.eval)
    kept = assemble(spec, make({"a": 3, "b": 3}), make({"a": 1, "b": 1}))
    assert "eval_split" not in dict(kept.spec.extra) and len(kept.eval) == 2
