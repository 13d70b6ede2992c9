"""The pieces of `bench.methods`: one method trained on one task at one learning rate, its
memory alone in a process (`python -m bench.worker method_memory --spec JSON`), its step time
interleaved with the others, and its mixed-batch serving throughput."""

from __future__ import annotations

import time
from typing import Any

import torch

METHODS = ("full", "prefix", "lora", "prompt", "ptuning", "ia3", "bitfit")
#: A small sweep per method around its usual rate (full fine-tuning's is the BERT paper's
#: range; the modules' the rates their papers and PEFT's examples use, one each way; prompt
#: tuning's centre is PEFT's prompt-tuning example's 3e-2 with AdamW).
LRS = {
    "full": (2e-5, 5e-5, 1e-4),
    "prefix": (3e-4, 1e-3, 3e-3),
    "lora": (3e-4, 1e-3, 3e-3),
    "prompt": (1e-2, 3e-2, 1e-1),
    "ptuning": (3e-3, 1e-2, 3e-2),
    "ia3": (1e-3, 3e-3, 1e-2),
    "bitfit": (3e-4, 1e-3, 3e-3),
}


def module_config(method: str, backbone: Any) -> Any:
    from continual.modules import module_kind

    options = {"length": 16} if method in ("prefix", "ptuning") else {}
    return module_kind(method).config_for(backbone, **options)


def applicable(method: str, backbone: Any) -> str | None:
    """None, or why `method` cannot run on `backbone` (BitFit on a model without biases)."""
    from tasks.errors import ConfigError

    if method == "full":
        return None
    try:
        module_config(method, backbone)
    except ConfigError as e:
        return str(e)
    return None


def stored_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def train_one(backbone: Any, data: Any, method: str, config: Any) -> dict[str, Any]:
    """Train `method` with `config`; its best validation value, eval score, what it trains and
    stores, and the trained task (for serving), or the fine-tuned copy and head for `full`."""
    from continual.finetune import evaluate_plain, finetune, fresh_head, trainable_copy
    from continual.inference import evaluate
    from continual.train import train
    from continual.train.data import split_validation

    began = time.perf_counter()
    if method == "full":
        copy = trainable_copy(backbone)
        head = fresh_head(copy, data.spec, config.seed)
        result = finetune(copy, head, data, config, progress=False)
        _, val = split_validation(data, config)
        kw = {"batch_size": config.eval_batch_size, "limits": config.limits}
        value = evaluate_plain(copy, head, data.spec, val, **kw).score if val else None
        ev = evaluate_plain(copy, head, data.spec, data.eval, **kw)
        params = dict(copy.model.named_parameters())
        params |= {f"head.{k}": v for k, v in (head.named_parameters() if head else [])}
        trainable = sum(p.numel() for p in params.values())
        stored = stored_bytes({k: v.detach() for k, v in params.items()})
        served = (copy, head)
        steps = result.steps
        copy.model.requires_grad_(False)
    else:
        result = train(backbone, data, module_config(method, backbone), config, progress=False)
        values = dict(result.validations)
        value = values.get(result.best_step, max(values.values())) if values else None
        ev = evaluate(backbone, result.task, data.eval, batch_size=config.eval_batch_size)
        head = result.task.head
        heads = {f"head.{k}": v for k, v in (head.state_dict().items() if head else [])}
        trainable = result.trainable_params
        stored = stored_bytes(result.task.tensors) + stored_bytes(heads)
        served = result.task
        steps = result.steps
    if data.spec.kind == "generation" and value is not None:
        value = float(value)
    return {
        "validation": value,
        "eval": ev.score,
        "metric": ev.metric,
        "steps": steps,
        "trainable_params": trainable,
        "stored_bytes": stored,
        "seconds": time.perf_counter() - began,
        "_served": served,
    }


def step_times(backbone: Any, data: Any, methods: list[str], steps: int, rounds: int, config):
    """Per-step seconds of each method, rounds of `steps` steps taken by turns (the order
    rotated each round) in this one process, no validation: the machine's drift falls on all."""
    from continual.finetune import finetune, fresh_head, trainable_copy
    from continual.train import train

    cfg = config.with_(steps=steps, eval_every=steps + 1, patience=0, head_init="random")
    times: dict[str, list[float]] = {m: [] for m in methods}
    copy = trainable_copy(backbone) if "full" in methods else None
    for r in range(rounds):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for m in order:
            if m == "full":
                head = fresh_head(copy, data.spec, 0)
                res = finetune(copy, head, data, cfg, progress=False)
                times[m].append(res.seconds / max(res.steps, 1))
            else:
                res = train(backbone, data, module_config(m, backbone), cfg, progress=False)
                times[m] += list(res.step_seconds[1:])  # the first step warms caches
    return times


def serving(backbone: Any, trained: dict[str, list[Any]], items, about, batch_size: int):
    """Items per second answering `items` ((task index, text), tasks interleaved): a module
    kind's tasks share passes (`continual.inference.predict`); fine-tuned copies cannot, so
    each task's items go through its own model. `about`: each task's (spec, text limits)."""
    from continual.finetune import predict_plain
    from continual.inference import predict

    out = {}
    for method, tasks in trained.items():
        began = time.perf_counter()
        if method == "full":
            for k, (copy, head) in enumerate(tasks):
                texts = [t for i, t in items if i == k]
                spec, limits = about[k]
                predict_plain(copy, head, spec, texts, batch_size=batch_size, limits=limits)
        else:
            predict(backbone, tasks, items, batch_size=batch_size)
        out[method] = len(items) / (time.perf_counter() - began)
    return out


def _status_mb(key: str) -> float:
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Peak resident memory while one method trains a few steps, alone in this process. The
    peak is reset after the backbone and data are loaded (Linux `clear_refs`), so it is the
    training's own: loading a dataset can peak higher than a small model's training."""
    from pathlib import Path

    from continual.backbones import load_backbone
    from continual.train import TrainConfig
    from tasks.load import DataArgs, load_data

    backbone = load_backbone(spec["backbone"])
    data = load_data(DataArgs(dataset=spec["dataset"], max_train=200, max_eval=16, seed=0))
    config = TrainConfig(
        steps=spec["steps"], eval_every=spec["steps"] + 1, patience=0, head_init="random",
        batch_size=spec["batch_size"], max_length=spec["max_length"],
    )  # fmt: skip
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set
    loaded = _status_mb("VmRSS")
    step_times(backbone, data, [spec["method"]], spec["steps"], 1, config)
    return {"peak_rss_mb": _status_mb("VmHWM"), "rss_loaded_mb": loaded}
