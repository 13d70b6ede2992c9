"""`python -m bench.similar_init --quick` runs end to end on the real minilm and data, and its
JSON holds what the full run reports (few-shot per strategy, steps to 90%, calibration)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_similar_init_quick(tmp_path: Path) -> None:
    out = tmp_path / "similar_init.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.similar_init", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["machine"]["cores"] >= 1
    (pair,) = doc["pairs"]
    assert (pair["source"], pair["target"], pair["relation"]) == (
        "vader_movies",
        "rotten_tomatoes",
        "related",
    )
    shots = pair["few_shot"]["16"]
    assert set(shots) == {"random", "words", "nearest", "weighted", "auto"}
    assert all(0.0 <= v["mean"] <= 1.0 and len(v["per_seed"]) == 1 for v in shots.values())
    # auto resolves to one of the others, and its run is that one's
    assert shots["auto"] == shots[pair["auto_resolves_to"]]
    assert pair["similarity"] > doc["calibration"]["threshold"]  # a related pair clears it
    assert set(pair["steps_to_90"]) == {"random", "auto"}
    # one bar for both strategies: 90% of the random run's final validation score
    rand = pair["steps_to_90"]["random"]
    assert pair["steps_to_90_bar"] == [pytest.approx(0.9 * f) for f in rand["final_val"]]
    for got in pair["steps_to_90"].values():
        for step, vals in zip(got["per_seed"], got["curve"]):
            reached = [s for s, v in vals if v >= pair["steps_to_90_bar"][0]]
            assert step == (reached[0] if reached else vals[-1][0] + 3)
    assert "few-shot accuracy" in done.stdout
