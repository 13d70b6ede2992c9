"""`bench.recipe_sweep` tunes on the catalog only: a held-out task is refused before any model is
loaded unless `--check` says the variants were chosen beforehand."""

from __future__ import annotations

import sys

import pytest

from bench import recipe_sweep


def test_variants_parse_to_name_and_options() -> None:
    assert recipe_sweep.parse_variant("base:") == ("base", {})
    assert recipe_sweep.parse_variant("P64lr:P=64,lr=3e-3") == ("P64lr", {"P": "64", "lr": "3e-3"})


def test_held_out_tasks_are_refused_for_tuning(monkeypatch, tmp_path) -> None:
    out = tmp_path / "sweep.json"
    argv = ["recipe_sweep", "--tasks", "trec", "boolq", "--variant", "base:", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match=r"\['boolq'\] are held-out tasks; tune on the catalog"):
        recipe_sweep.main()
    assert not out.exists()
