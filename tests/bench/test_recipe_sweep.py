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


def test_dropout_variant_silences_the_backbone_in_training_and_restores_it(tiny_encoder) -> None:
    import torch

    model = tiny_encoder.model
    ids = torch.tensor([[2, 5, 6, 7, 3]])

    def twice() -> bool:  # two training-mode passes agree only without dropout
        a, b = (model(input_ids=ids).last_hidden_state for _ in range(2))
        return torch.equal(a, b)

    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates and max(rates) > 0  # the tiny BERT has dropout to turn off
    model.train()
    try:
        assert not twice()
        with recipe_sweep.backbone_dropout(tiny_encoder, "0"):
            assert twice()
        assert not twice()
        with recipe_sweep.backbone_dropout(tiny_encoder, None):
            assert not twice()
    finally:
        model.eval()
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == rates
