"""bench.methods' bookkeeping across sittings (`--merge`): a widened sweep chooses among the
earlier runs and the new ones, a rate run again replaces its earlier run, and `complete` says
whether every suite task has every method and the efficiency columns. The real bench runs in
tests/bench/test_bench_speed.py (`--quick`)."""

from __future__ import annotations

from types import SimpleNamespace

from bench import methods as bench_methods
from bench.methods_run import METHODS


def _fake_train(scores: dict[float, float]):
    def train_one(backbone, data, method, config):
        v = scores[config.lr]
        return {"validation": v, "eval": v - 0.01, "metric": "accuracy", "steps": 2,
                "trainable_params": 10, "stored_bytes": 40, "seconds": 0.1,
                "_served": f"task@{config.lr}"}  # fmt: skip

    return train_one


class _Config(SimpleNamespace):
    def with_(self, **kw):
        return _Config(**{**vars(self), **kw})


def test_a_widened_sweep_chooses_among_earlier_and_new_runs(monkeypatch) -> None:
    same = {"metric": "accuracy", "trainable_params": 10, "stored_bytes": 40}
    earlier = [
        {"lr": 1e-3, "validation": 0.8, "eval": 0.79, **same},
        {"lr": 3e-3, "validation": 0.9, "eval": 0.88, **same},
        {"lr": 1e-2, "validation": 0.5, "eval": 0.49, **same},
    ]
    monkeypatch.setattr(bench_methods, "train_one", _fake_train({1e-2: 0.7, 3e-2: 0.95}))
    got = bench_methods.sweep(None, None, "lora", _Config(lr=0.0), (1e-2, 3e-2), earlier)
    assert [r["lr"] for r in got["sweep"]] == [1e-3, 3e-3, 1e-2, 3e-2]
    assert [r["validation"] for r in got["sweep"]] == [0.8, 0.9, 0.7, 0.95]  # 1e-2 replaced
    assert (got["lr"], got["eval"], got["_served"]) == (3e-2, 0.94, "task@0.03")
    monkeypatch.setattr(bench_methods, "train_one", _fake_train({1e-1: 0.1}))
    kept = bench_methods.sweep(None, None, "lora", _Config(lr=0.0), (1e-1,), earlier)
    assert (kept["lr"], kept["eval"]) == (3e-3, 0.88)  # an earlier run stays the best
    assert kept["_served"] == "task@0.1"  # serving only needs a module of the kind


def test_complete_needs_every_task_every_method_and_the_efficiency_columns() -> None:
    doc = {"backbones": {}}
    for name, suite in bench_methods.SUITES.items():
        tasks = {t: {"methods": dict.fromkeys(METHODS, {})} for ts in suite.values() for t in ts}
        doc["backbones"][name] = {
            "tasks": tasks,
            "not_applicable": {"bitfit": "no biases"} if name == "smollm2" else {},
            "efficiency": {"step_seconds": dict.fromkeys(METHODS, 0.1)},
        }
    assert bench_methods.complete(doc)
    del doc["backbones"]["minilm"]["tasks"]["trec"]["methods"]["prompt"]
    assert not bench_methods.complete(doc)
    doc["backbones"]["minilm"]["tasks"]["trec"]["methods"]["prompt"] = {}
    del doc["backbones"]["smollm2"]["efficiency"]["step_seconds"]["lora"]
    assert not bench_methods.complete(doc)
    del doc["backbones"]["smollm2"]
    assert not bench_methods.complete(doc)


def test_a_suite_without_efficiency_columns_yet_still_renders() -> None:
    run = {"eval": 0.8, "lr": 1e-3, "trainable_params": 10, "stored_bytes": 2048}
    doc = {"backbones": {"minilm": {"n_params": 1000, "tasks": {
        "trec": {"group": "catalog", "methods": {"prefix": run}}}}}}  # fmt: skip
    out = bench_methods.render(doc)
    row = out.splitlines()[-1].split()
    assert row[:2] == ["prefix", "0.8000"] and row[-3:] == ["-", "-", "-"]  # not measured


def test_the_summary_gives_no_mean_over_accuracy_and_rouge() -> None:
    from bench.summary_search import methods as summary_methods

    def run(score, metric, rates):
        sweep = [{"lr": r} for r in rates]
        return {"eval": score, "lr": 1e-3, "metric": metric, "trainable_params": 10,
                "stored_bytes": 2048, "sweep": sweep}  # fmt: skip

    machine = {"cores": 2, "threads": 2, "torch": "x"}
    doc = {"bench": "methods", "machine": machine, "setup": {"steps": 200}, "backbones": {
        "minilm": {"n_params": 1000, "tasks": {
            "trec": {"group": "catalog", "methods": {"lora": run(0.8, "accuracy", [1, 2, 3])}},
            "sms": {"group": "heldout", "methods": {"lora": run(0.9, "accuracy", [1, 2, 3, 4])}}}},
        "smollm2": {"n_params": 1000, "tasks": {
            "sms": {"group": "catalog", "methods": {"lora": run(0.9, "accuracy", [1, 2])}},
            "heads": {"group": "catalog", "methods": {"lora": run(0.3, "rouge_l", [1, 2])}}}},
    }}  # fmt: skip
    out = summary_methods(doc)
    minilm, smollm2 = out.split("**minilm**")[1].split("**smollm2**")
    assert "3-4 rates per method" in minilm and "2 rates per method" in smollm2
    assert "| lora | 0.800 (0.001) | 0.900 (0.001) | **0.850** |" in minilm
    assert "`heads` (rouge_l)" in smollm2 and "`sms` |" in smollm2  # accuracy is the default
    assert "| lora | 0.900 (0.001) | 0.300 (0.001) | - |" in smollm2  # no mean across metrics
