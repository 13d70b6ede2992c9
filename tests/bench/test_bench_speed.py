"""The speed benchmarks run end to end in their quick modes on the real backbones and data, and
their JSON holds what the full runs report: each contender's medians and the ratios the targets
name. The analytic FLOP count is checked on a literal shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.flops import Shape, train_step_flops

ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, out: Path, *extra: str) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--quick", "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def test_flops_count_on_a_literal_shape() -> None:
    # 1 layer, hidden 4, 2 heads of 2, 1 kv head, intermediate 8, BERT-style MLP, vocab 10
    s = Shape(1, 4, 2, 1, 2, 8, gated=False, vocab=10, causal=False)
    assert s.qkv_macs == 4 * (2 + 2) * 2 and s.rest_macs == 2 * 2 * 4 + 2 * 4 * 8
    f = train_step_flops(s, [3], prefix_length=2, scored_positions=0, reparam_hidden=5)
    assert f["linear_forward"] == 2 * 3 * (32 + 80)
    assert f["linear_backward"] == 2 * 3 * 80  # layer 0's q/k/v get no input gradient
    assert f["attention_forward"] == 2 * 2 * (3 * 3 + 3 * 2) * 2 * 2
    assert f["attention_backward"] == 2 * f["attention_forward"]
    assert f["lm_head_forward"] == 0
    flat = 1 * 2 * 1 * 2
    assert f["reparam_forward_backward"] == 3 * 2 * 2 * (4 * 5 + 5 * flat)
    causal = Shape(1, 4, 2, 1, 2, 8, gated=True, vocab=10, causal=True)
    g = train_step_flops(causal, [3], prefix_length=2, scored_positions=2)
    assert g["attention_forward"] == 2 * 2 * (6 + 3 * 2) * 2 * 2  # 1+2+3 causal pairs
    assert g["lm_head_forward"] == g["lm_head_backward"] == 2 * 2 * 4 * 10
    assert g["total"] == pytest.approx(sum(v for k, v in g.items() if k != "total"))


@pytest.mark.integration
@pytest.mark.slow
def test_train_step_quick(tmp_path: Path) -> None:
    doc, stdout = run_bench("train_step", tmp_path / "ts.json")
    s = doc["setups"]["minilm-trec-64"]
    assert set(s["contenders"]) == {"ours", "peft", "full"}
    for c in s["contenders"].values():
        assert c["median_step_seconds"] > 0 and c["peak_rss_mb"] > 100
        assert c["tokens_per_second"] > c["examples_per_second"] > 0
    # the same prefix module on both sides (P 16, MLP 512, and the same 6-label head)
    assert (
        s["contenders"]["ours"]["trainable_params"] == s["contenders"]["peft"]["trainable_params"]
    )
    assert s["contenders"]["full"]["trainable_params"] > 20_000_000
    for key in ("ratio_ours_over_peft", "ratio_ours_over_full", "peak_memory_ratio_ours_over_full"):
        assert s[key] > 0
    assert doc["machine"]["threads"] >= 1 and "peft" in doc["machine"]
    assert "ours/peft" in stdout


@pytest.mark.integration
@pytest.mark.slow
def test_time_to_accuracy_quick(tmp_path: Path) -> None:
    doc, _ = run_bench("time_to_accuracy", tmp_path / "tta.json")
    run = doc["runs"]["minilm-trec"]
    for c in ("ours", "peft-trainer", "peft-trainer-matched"):
        got = run["contenders"][c]
        assert got["reached_every_round"], got  # the quick target (0.0) is met at once
        assert got["median_seconds_to_target"] > 0
        assert got["median_steps_to_target"] >= 1, got  # a step was trained before it
        assert 0.0 <= got["runs"][0]["best_score"] <= 1.0
    assert run["ratios"]["peft-trainer"]["ratio"] > 0
    trainer = run["contenders"]["peft-trainer"]["runs"][0]["trainer"]
    assert trainer["batch_size"] == 8 and trainer["warmup"] == 0  # Trainer's defaults
    matched = run["contenders"]["peft-trainer-matched"]["runs"][0]["trainer"]
    assert matched["batch_size"] == 16 and matched["warmup"] == 0.06


@pytest.mark.integration
@pytest.mark.slow
def test_efficiency_quick(tmp_path: Path) -> None:
    doc, _ = run_bench("efficiency", tmp_path / "eff.json")
    r = doc["runs"]["minilm"]
    assert 0 < r["fraction_of_matmul"] < 1.5
    assert r["achieved_flops_median"] > 1e9 and r["matmul_flops_median"] > 1e9


@pytest.mark.integration
@pytest.mark.slow
def test_evaluation_quick(tmp_path: Path) -> None:
    doc, _ = run_bench("evaluation", tmp_path / "ev.json", "--only", "reeval", "--only", "serving")
    assert doc["reevaluation"]["predictions_equal"]
    s = doc["serving"]
    assert s["outputs_equal_ours"] and s["agreement_with_peft"] == 1.0
    assert s["speedup_mixed_over_peft_grouped"] > 0


@pytest.mark.integration
@pytest.mark.slow
def test_ablation_quick(tmp_path: Path) -> None:
    doc, _ = run_bench("ablation", tmp_path / "ab.json")
    s = doc["setups"]["minilm-trec-64"]
    assert set(s["median_step_seconds"]) >= {"all", "padded", "before", "torch-dropout"}
    assert s["ratio_to_all"]["all"] == 1.0


@pytest.mark.integration
@pytest.mark.slow
def test_methods_quick(tmp_path: Path) -> None:
    """bench.methods --quick: full fine-tuning and LoRA on two minilm tasks, with what the
    full run reports (the sweep, parameters, stored bytes, step time, memory, serving)."""
    doc, out = run_bench("methods", tmp_path / "m.json")
    r = doc["backbones"]["minilm"]
    assert doc["complete"] and set(r["tasks"]) == {"trec", "sms_spam"}
    for task in r["tasks"].values():
        full, lora = task["methods"]["full"], task["methods"]["lora"]
        assert 0 <= lora["eval"] <= 1 and lora["sweep"][0]["lr"] == lora["lr"]
        assert lora["trainable_params"] < full["trainable_params"] / 100
        assert lora["stored_bytes"] < full["stored_bytes"] / 100
    eff = r["efficiency"]
    assert set(eff["step_seconds"]) == {"full", "lora"} and eff["serving_items_per_second"]
    assert all(m["peak_rss_mb"] >= m["rss_loaded_mb"] > 0 for m in eff["memory"].values())
    assert "trainable %" in out
