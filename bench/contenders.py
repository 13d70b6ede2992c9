"""The three ways to train on a task that the benchmarks compare, on the same batches:

- `ours`: `continual.train.train` itself (the product's loop; its per-step times are read from
  the loop, validation excluded);
- `peft`: PEFT's `PrefixTuningConfig` (same prefix length, the same MLP reparameterization:
  hidden 512, tanh) on the usual Hugging Face head (`...ForSequenceClassification` on encoders,
  `...ForCausalLM` with prompt tokens masked out of the labels on decoders), in a plain PyTorch
  loop;
- `full`: full fine-tuning of the same model classes, every weight trainable.

Every contender tokenizes inside its step (text in, update out), clips gradients at 1.0 and uses
the same fused AdamW; the prompt/target token ids are ours for everybody, so all contenders see
the same tokens. Encoders' PEFT and full contenders pad on the right, as a Hugging Face data
collator does; ours packs (`continual.packing`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from continual.backbones import Backbone, Located
from continual.objectives import TextLimits, prompt_ids, target_ids
from continual.train import TrainConfig, adamw, batches, split_validation, train
from tasks.spec import Example, TaskData, TaskSpec

CONTENDERS = ("ours", "peft", "full")
REPARAM_HIDDEN = 512
PEFT_LR = 1e-3
FULL_LR = 5e-5


@dataclass(frozen=True)
class StepSetup:
    """One step-time measurement: the task, batch size, input cut, prefix length, steps."""

    batch_size: int
    max_length: int
    prefix_length: int
    warmup: int
    steps: int
    seed: int = 0
    #: How ours starts its head. The quick modes (what the tests run) take "random": the probe's
    #: pass over the training data comes before the first step, so it is never in a timed step,
    #: and at a quick size it was most of the run (ablation: 50 of 58 s in `train`).
    head_init: str = "probe"

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            steps=self.warmup + self.steps,
            batch_size=self.batch_size,
            lr=PEFT_LR,
            max_length=self.max_length,
            eval_every=10**9,
            patience=0,
            val_max=8,
            seed=self.seed,
            head_init=self.head_init,
        )


def batch_sequence(data: TaskData, setup: StepSetup) -> list[list[Example]]:
    """The batches `continual.train.train` draws for this setup, in its order."""
    cfg = setup.train_config()
    train_set, _ = split_validation(data, cfg)
    stream = batches(train_set, cfg.batch_size, cfg.seed)
    return [next(stream) for _ in range(cfg.steps)]


def real_tokens(
    bb: Backbone | Located, spec: TaskSpec, chunk: Sequence[Example], limits: TextLimits
) -> int:
    """Tokens of one batch that every contender computes (no padding)."""
    if bb.kind == "encoder":
        enc = bb.tokenizer([e.text for e in chunk], truncation=True, max_length=limits.max_length)
        return sum(len(x) for x in enc["input_ids"])
    return sum(
        len(prompt_ids(bb, spec, e.text, limits)) + len(target_ids(bb, e.target, limits))
        for e in chunk
    )


def run_ours(
    bb: Backbone,
    data: TaskData,
    setup: StepSetup,
    should_stop: Callable[[int, Any], bool] | None = None,
) -> tuple[list[float], int]:
    """(per-step seconds, trainable parameters) of the product's own training loop (warm-up
    steps dropped); `should_stop` is passed to `train` (its time is outside ours' steps)."""
    from continual.modules.prefix import prefix_config_for

    pcfg = prefix_config_for(bb, setup.prefix_length, None)
    result = train(bb, data, pcfg, setup.train_config(), progress=False, should_stop=should_stop)
    return result.step_seconds[setup.warmup :], result.trainable_params


def hf_model(
    bb: Backbone | Located, spec: TaskSpec, *, peft: bool, prefix_length: int = 16
) -> torch.nn.Module:
    """The Hugging Face model a PEFT or full fine-tuning user would train, fresh from disk."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if bb.kind == "encoder":
        model = AutoModelForSequenceClassification.from_pretrained(
            bb.source, num_labels=len(spec.labels), dtype=torch.float32
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(bb.source, dtype=torch.float32)
    if peft:
        model = peft_wrap(model, bb, prefix_length=prefix_length)
    return model


def peft_wrap(
    model: torch.nn.Module, bb: Backbone | Located, *, prefix_length: int
) -> torch.nn.Module:
    from peft import PrefixTuningConfig, get_peft_model

    config = PrefixTuningConfig(
        task_type="SEQ_CLS" if bb.kind == "encoder" else "CAUSAL_LM",
        num_virtual_tokens=prefix_length,
        prefix_projection=True,
        encoder_hidden_size=REPARAM_HIDDEN,
    )
    return get_peft_model(model, config)


def hf_inputs(
    bb: Backbone | Located, spec: TaskSpec, chunk: Sequence[Example], limits: TextLimits
) -> dict[str, torch.Tensor]:
    """One batch as a Hugging Face user feeds it: right-padded ids, mask and labels."""
    tok = bb.tokenizer
    if bb.kind == "encoder":
        enc = tok(
            [e.text for e in chunk],
            padding=True,
            truncation=True,
            max_length=limits.max_length,
            return_tensors="pt",
        )
        index = {label: i for i, label in enumerate(spec.labels)}
        return {**enc, "labels": torch.tensor([index[e.target] for e in chunk])}
    seqs, labels = [], []
    for e in chunk:
        p, t = prompt_ids(bb, spec, e.text, limits), target_ids(bb, e.target, limits)
        seqs.append(p + t)
        labels.append([-100] * len(p) + t)
    width = max(map(len, seqs))
    pad = tok.pad_token_id
    return {
        "input_ids": torch.tensor([s + [pad] * (width - len(s)) for s in seqs]),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs]),
        "labels": torch.tensor([x + [-100] * (width - len(x)) for x in labels]),
    }


class HfStepper:
    """PEFT prefix tuning (`peft`) or full fine-tuning, one timed step at a time on the batches
    of `batch_sequence`."""

    def __init__(self, bb: Backbone | Located, data: TaskData, setup: StepSetup, *, peft: bool):
        torch.manual_seed(setup.seed)
        self.bb, self.spec = bb, data.spec
        self.model = hf_model(bb, data.spec, peft=peft, prefix_length=setup.prefix_length)
        if not peft:
            for p in self.model.parameters():
                p.requires_grad_(True)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = adamw(self.params, lr=PEFT_LR if peft else FULL_LR, weight_decay=0.0)
        self.limits = setup.train_config().limits
        self.batches = iter(batch_sequence(data, setup))
        self.model.train()

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.params)

    def step(self) -> float:
        """One step on the next batch; its seconds."""
        chunk = next(self.batches)
        began = time.perf_counter()
        loss = self.model(**hf_inputs(self.bb, self.spec, chunk, self.limits)).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        loss.item()
        return time.perf_counter() - began


def run_hf(
    bb: Backbone | Located,
    data: TaskData,
    setup: StepSetup,
    *,
    peft: bool,
    after_load: Callable[[], None],
) -> tuple[list[float], int]:
    """(per-step seconds, trainable parameters) of PEFT prefix tuning (`peft`) or full
    fine-tuning alone in this process, on the same batches."""
    stepper = HfStepper(bb, data, setup, peft=peft)
    after_load()
    times = [stepper.step() for _ in range(setup.warmup + setup.steps)]
    return times[setup.warmup :], stepper.trainable


def run_interleaved(bb: Backbone, data: TaskData, setup: StepSetup) -> dict[str, list[float]]:
    """Step times of all three contenders in one process, interleaved step by step (ours' step
    i, then PEFT's, then full fine-tuning's, on the same batch i), so that the machine's drift
    over seconds falls on all three alike. Ours is still `continual.train.train`'s own loop:
    the other two take their step inside its stop hook, outside ours' timed region."""
    others = {c: HfStepper(bb, data, setup, peft=c == "peft") for c in ("peft", "full")}
    times: dict[str, list[float]] = {c: [] for c in others}

    def interleave(step: int, task: Any) -> bool:
        for c, stepper in others.items():
            times[c].append(stepper.step())
        return False

    ours, _ = run_ours(bb, data, setup, should_stop=interleave)
    return {"ours": ours, **{c: t[setup.warmup :] for c, t in times.items()}}


def describe() -> dict[str, Any]:
    return {
        "ours": "continual.train.train: prefix (P, MLP reparam 512), frozen backbone, packed "
        "batches, fused AdamW lr 1e-3",
        "peft": f"PEFT PrefixTuningConfig(num_virtual_tokens=P, prefix_projection=True, "
        f"encoder_hidden_size={REPARAM_HIDDEN}) on the HF task model, right-padded batches, "
        "fused AdamW lr 1e-3",
        "full": "every weight of the HF task model trainable, right-padded batches, fused AdamW "
        "lr 5e-5",
    }
