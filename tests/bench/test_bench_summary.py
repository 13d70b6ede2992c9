"""`bench.summary` turns the committed speed-bench JSON into the tables of docs/BENCHMARKS.md:
every ratio a target names appears, bounds are shown as bounds, per-run notes are kept, and the
document holds exactly what a fresh render gives (nobody edited a figure by hand)."""

from __future__ import annotations

import json

from bench import summary
from bench.common import RESULTS


def test_committed_tables_match_the_json() -> None:
    text = summary.DOC.read_text()
    inside = text.split(summary.BEGIN, 1)[1].split(summary.END, 1)[0]
    assert inside.strip() == summary.render().strip()


def test_every_target_ratio_is_rendered() -> None:
    tables = summary.render()
    steps = json.loads((RESULTS / "train_step.json").read_text())
    for name, s in steps["setups"].items():
        assert f"`{name}` | **{s['ratio_ours_over_peft']:.2f}**" in tables
    tta = json.loads((RESULTS / "time_to_accuracy.json").read_text())
    for entry in tta["runs"].values():
        for contender, r in entry["ratios"].items():
            shown = f"**{r['ratio']:.2f}**" if "ratio" in r else f"**≤ {r['at_most']:.2f}**"
            assert f"ours / {contender} (≤ 0.7) | {shown}" in tables
        if entry.get("note"):
            assert entry["note"] in tables


def test_a_missing_result_says_how_to_make_it(monkeypatch) -> None:
    monkeypatch.setattr(summary, "_load", lambda name: None)
    tables = summary.render()
    assert "(not run yet: `python -m bench.train_step`)" in tables
