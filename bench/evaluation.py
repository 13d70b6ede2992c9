"""Evaluation and serving speed, side by side in one run (medians over alternating repeats).

    python -m bench.evaluation            # all three parts
    python -m bench.evaluation --quick    # tiny sizes (what a test runs)

1. Decoder rank classification (smollm2, P = 16): every label's words scored with the prompt
   encoded once and its keys/values shared by the label candidates (`label_scores`), against a
   forward pass per label over prompt + label (the same packed passes otherwise). On trec
   questions (6 labels) and bbc_news articles cut to 128 tokens (5 labels). Predictions must
   be equal.
2. Re-evaluating T = 8 tasks (minilm, 100 eval inputs each): a loop over tasks, each its own
   `evaluate`, against one `predict` over all 800 inputs in mixed-task batches of 32.
3. Serving (minilm): 256 requests from the same 8 tasks in seeded random order, answered in
   micro-batches of 32 as they arrive. Ours: each micro-batch is one mixed-task pass. Grouping
   per task: one pass per task present in the micro-batch, with our code, and with PEFT (8
   prefix adapters on one `PeftModelForFeatureExtraction`, `set_adapter` per group, the task's
   head on the mean-pooled output). Prefixes use PEFT's "shifted" positions so all three must
   give the same answers.

Prefixes and heads are seeded random ones of the real shapes: speed does not depend on trained
values, and equal predictions are checked all the same. Prints tables and writes
bench/results/evaluation.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.common import machine, table, write

TASKS8 = (
    "sms_spam",
    "vader_tweets",
    "vader_movies",
    "trec",
    "bbc_news",
    "imdb",
    "news20",
    "rotten_tomatoes",
)
FULL = {
    "rank_n": 64,
    "rank_repeats": 3,
    "per_task_eval": 100,
    "requests": 256,
    "repeats": 5,
    "micro": 32,
}
QUICK = {
    "rank_n": 8,
    "rank_repeats": 1,
    "per_task_eval": 8,
    "requests": 32,
    "repeats": 1,
    "micro": 8,
}


def timed(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict]:
    """Median seconds per function over `repeats` rounds, the order rotated each round; and
    each function's last result."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    results: dict[str, Any] = {}
    order = list(fns)
    for _ in range(repeats):
        for k in order:
            t0 = time.perf_counter()
            results[k] = fns[k]()
            times[k].append(time.perf_counter() - t0)
        order = order[1:] + order[:1]
    return {k: statistics.median(v) for k, v in times.items()}, {"results": results, "all": times}


def random_task(bb, spec, length: int, positions: str, seed: int):
    from continual.finetune import fresh_head
    from continual.inference import TrainedTask
    from continual.modules import build
    from continual.modules.prefix import prefix_config_for
    from continual.objectives import TextLimits

    config = prefix_config_for(bb, length, positions)
    head = fresh_head(bb, spec, seed)
    if head is not None:
        head.eval()
        with torch.no_grad():
            head.linear.weight.normal_(0, 1, generator=torch.Generator().manual_seed(seed))
    return TrainedTask(
        spec=spec,
        config=config,
        tensors=build(config, seed=seed).eject(),
        head=head,
        limits=TextLimits(max_length=128),
    )


@torch.no_grad()
def _shared_prompt(bb, spec, task, texts: list[str]) -> list[int]:
    from continual.modules import module_for
    from continual.objectives import label_scores

    scores: list[torch.Tensor] = []
    for i in range(0, len(texts), 16):
        chunk = texts[i : i + 16]
        rows = module_for(task.config).single(task.tensors, task.config, len(chunk))
        scores += label_scores(bb, [spec] * len(chunk), chunk, rows, task.limits)
    return [int(s.argmax()) for s in scores]


@torch.no_grad()
def _pass_per_label(bb, spec, task, texts: list[str]) -> list[int]:
    from continual.modules import module_for
    from continual.objectives import prompt_ids, target_ids
    from continual.objectives.decoder import tail_logprob

    preds: list[int] = []
    for i in range(0, len(texts), 16):
        chunk = texts[i : i + 16]
        prompts = [prompt_ids(bb, spec, t, task.limits) for t in chunk]
        rows = module_for(task.config).single(task.tensors, task.config, len(chunk))
        cols = []
        for label in spec.labels:
            tail = target_ids(bb, label, task.limits)
            logp, _ = tail_logprob(bb, prompts, [tail] * len(chunk), rows)
            cols.append(logp.sum(1))
        preds += torch.stack(cols, 1).argmax(1).tolist()
    return preds


def rank_classification(size: dict[str, int]) -> dict[str, Any]:
    from functools import partial

    from continual.backbones import load_backbone
    from tasks.load import DataArgs, load_data

    bb = load_backbone("smollm2")
    out = {}
    for name in ("trec", "bbc_news"):
        data = load_data(DataArgs(dataset=name, max_eval=size["rank_n"], seed=0))
        task = random_task(bb, data.spec, 16, None, seed=1)
        args = (bb, data.spec, task, [e.text for e in data.eval])
        med, extra = timed(
            {
                "shared_prompt": partial(_shared_prompt, *args),
                "pass_per_label": partial(_pass_per_label, *args),
            },
            size["rank_repeats"],
        )
        res = extra["results"]
        out[name] = {
            "labels": len(data.spec.labels),
            "inputs": len(data.eval),
            "median_seconds": med,
            "all_seconds": extra["all"],
            "speedup_shared_over_per_label": med["pass_per_label"] / med["shared_prompt"],
            "predictions_equal": res["shared_prompt"] == res["pass_per_label"],
        }
    return out


def eight_tasks(bb, size: dict[str, int], positions: str | None):
    from tasks.load import DataArgs, load_data

    tasks, evals = [], []
    for seed, name in enumerate(TASKS8):
        data = load_data(DataArgs(dataset=name, max_eval=size["per_task_eval"], seed=0))
        tasks.append(random_task(bb, data.spec, 16, positions, seed=seed))
        evals.append(list(data.eval))
    return tasks, evals


def reevaluation(size: dict[str, int]) -> dict[str, Any]:
    from continual.backbones import load_backbone
    from continual.inference import evaluate, predict

    bb = load_backbone("minilm")
    tasks, evals = eight_tasks(bb, size, None)
    items = [(i, e.text) for i, ev in enumerate(evals) for e in ev]
    mixed_order = random.Random(0).sample(range(len(items)), len(items))

    def per_task() -> list[list[str]]:
        return [list(evaluate(bb, t, ev, batch_size=32).predictions) for t, ev in zip(tasks, evals)]

    def mixed() -> list[list[str]]:
        got = predict(bb, tasks, [items[k] for k in mixed_order], batch_size=32)
        back = [""] * len(items)
        for k, g in zip(mixed_order, got):
            back[k] = g
        out, at = [], 0
        for ev in evals:
            out.append(back[at : at + len(ev)])
            at += len(ev)
        return out

    med, extra = timed({"per_task_loop": per_task, "mixed_batches": mixed}, size["repeats"])
    return {
        "tasks": list(TASKS8),
        "inputs": len(items),
        "median_seconds": med,
        "all_seconds": extra["all"],
        "speedup_mixed_over_per_task": med["per_task_loop"] / med["mixed_batches"],
        "predictions_equal": extra["results"]["per_task_loop"] == extra["results"]["mixed_batches"],
    }


def peft_server(bb, tasks):
    """One PEFT model holding every task's prefix as an adapter (inference mode)."""
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModel

    base = AutoModel.from_pretrained(bb.source, dtype=torch.float32).eval()
    model = None
    for i, t in enumerate(tasks):
        config = PrefixTuningConfig(
            task_type="FEATURE_EXTRACTION",
            num_virtual_tokens=t.config.length,
            inference_mode=True,
        )
        if model is None:
            model = get_peft_model(base, config, adapter_name=f"t{i}")
        else:
            model.add_adapter(f"t{i}", config)
        with torch.no_grad():
            model.prompt_encoder[f"t{i}"].embedding.weight.copy_(t.tensors["prefix"])
    return model.eval()


def serving(size: dict[str, int]) -> dict[str, Any]:
    from continual.backbones import load_backbone
    from continual.inference import predict
    from continual.model import mean_pool

    bb = load_backbone("minilm")
    tasks, evals = eight_tasks(bb, size, "shifted")
    pool = [(i, e.text) for i, ev in enumerate(evals) for e in ev]
    requests = random.Random(0).sample(pool, min(size["requests"], len(pool)))
    micro = [requests[k : k + size["micro"]] for k in range(0, len(requests), size["micro"])]
    peft = peft_server(bb, tasks)
    tok = bb.tokenizer

    def ours_mixed() -> list[str]:
        out: list[str] = []
        for b in micro:
            out += predict(bb, tasks, b, batch_size=len(b))
        return out

    def grouped(answer: Callable[[int, list[str]], list[str]]) -> list[str]:
        out: list[str] = []
        for b in micro:
            got: list[str] = [""] * len(b)
            for i in sorted({i for i, _ in b}):
                rows = [k for k, (j, _) in enumerate(b) if j == i]
                for k, g in zip(rows, answer(i, [b[k][1] for k in rows])):
                    got[k] = g
            out += got
        return out

    def ours_group(i: int, texts: list[str]) -> list[str]:
        return predict(bb, [tasks[i]], [(0, t) for t in texts], batch_size=len(texts))

    @torch.no_grad()
    def peft_group(i: int, texts: list[str]) -> list[str]:
        peft.set_adapter(f"t{i}")
        enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = peft(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        pooled = mean_pool(hidden.last_hidden_state, enc["attention_mask"])
        logits = tasks[i].head(pooled)
        return [tasks[i].spec.labels[int(k)] for k in logits.argmax(-1)]

    med, extra = timed(
        {
            "ours_mixed": ours_mixed,
            "ours_grouped": lambda: grouped(ours_group),
            "peft_grouped": lambda: grouped(peft_group),
        },
        size["repeats"],
    )
    res = extra["results"]
    return {
        "requests": len(requests),
        "micro_batch": size["micro"],
        "tasks_per_micro_batch": statistics.mean(len({i for i, _ in b}) for b in micro),
        "median_seconds": med,
        "all_seconds": extra["all"],
        "speedup_mixed_over_ours_grouped": med["ours_grouped"] / med["ours_mixed"],
        "speedup_mixed_over_peft_grouped": med["peft_grouped"] / med["ours_mixed"],
        "outputs_equal": res["ours_mixed"] == res["ours_grouped"] == res["peft_grouped"],
        "outputs_equal_ours": res["ours_mixed"] == res["ours_grouped"],
        "agreement_with_peft": statistics.mean(
            a == b for a, b in zip(res["ours_mixed"], res["peft_grouped"])
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["rank", "reeval", "serving"], action="append")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    size = QUICK if a.quick else FULL
    parts = a.only or ["rank", "reeval", "serving"]
    began = time.perf_counter()
    doc: dict[str, Any] = {"bench": "evaluation", "quick": a.quick, "machine": machine()}
    doc["sizes"] = size
    if "rank" in parts:
        doc["rank_classification"] = rank_classification(size)
    if "reeval" in parts:
        doc["reevaluation"] = reevaluation(size)
    if "serving" in parts:
        doc["serving"] = serving(size)
    doc["seconds"] = time.perf_counter() - began
    path = write(
        "evaluation_quick" if a.quick else "evaluation", doc, Path(a.out) if a.out else None
    )
    print(render(doc))
    print(f"wrote {path}")
    return 0


def render(doc: dict[str, Any]) -> str:
    rows = []
    for name, r in doc.get("rank_classification", {}).items():
        m = r["median_seconds"]
        rows.append(
            [
                f"rank classification, smollm2, {name} ({r['labels']} labels, {r['inputs']} inputs)",
                f"{m['shared_prompt']:.2f} s shared prompt",
                f"{m['pass_per_label']:.2f} s pass per label",
                f"{r['speedup_shared_over_per_label']:.2f}x",
                r["predictions_equal"],
            ]
        )
    if "reevaluation" in doc:
        r = doc["reevaluation"]
        m = r["median_seconds"]
        rows.append(
            [
                f"re-evaluate 8 tasks, minilm ({r['inputs']} inputs)",
                f"{m['mixed_batches']:.2f} s mixed batches",
                f"{m['per_task_loop']:.2f} s per-task loop",
                f"{r['speedup_mixed_over_per_task']:.2f}x",
                r["predictions_equal"],
            ]
        )
    if "serving" in doc:
        r = doc["serving"]
        m = r["median_seconds"]
        for who in ("ours", "peft"):
            rows.append(
                [
                    f"serving {r['requests']} requests in micro-batches of {r['micro_batch']}"
                    if who == "ours"
                    else "",
                    f"{m['ours_mixed']:.2f} s one mixed pass each",
                    f"{m[who + '_grouped']:.2f} s {who} grouped per task",
                    f"{r['speedup_mixed_over_' + who + '_grouped']:.2f}x",
                    r["outputs_equal_ours"]
                    if who == "ours"
                    else f"{100 * r['agreement_with_peft']:.1f}%",
                ]
            )
    head = ["what", "ours", "against", "speed-up", "same answers"]
    return "evaluation and serving (medians over alternating repeats)\n" + table(head, rows)


if __name__ == "__main__":
    raise SystemExit(main())
