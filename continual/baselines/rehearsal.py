"""The continual-learning field's regularized and rehearsal baselines (issue 18), each a
sequential fine-tuning of one trainable copy with one more loss term:

- `replay` (experience replay, Chaudhry et al. 2019, "tiny episodic memories"): after each
  task, `memory` examples of it are kept (class-balanced: an equal share per label, the rest to
  the first labels); each step adds the mean loss of a batch drawn from the memory, as large as
  the new task's batch, to the new task's loss. Earlier tasks' heads train on their examples.
- `ewc` (elastic weight consolidation, Kirkpatrick et al. 2017, in its online form, Schwarz et
  al. 2018): after each task, the diagonal empirical Fisher of its loss (the mean squared
  gradient over `fisher_samples` training examples, one at a time) is added to a running sum and
  the weights are kept as the anchor; each step adds `(lambda / 2) * sum F (theta - anchor)^2`.
- `lwf` (learning without forgetting, Li & Hoiem 2017): before a task trains, every earlier
  head's outputs on the new task's inputs are recorded; each step adds `alpha * T^2 * KL(old ||
  new)` of the earlier heads' temperature-`T` distributions on the batch. Encoders only (its
  targets are a head's outputs; a decoder answers in text).

Each keeps what it needs in its saved state (the memory, the Fisher and anchor, the heads).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file

from continual.backbones import Backbone
from continual.baselines.base import register_baseline
from continual.baselines.forgetting import SequentialFT
from continual.finetune import finetune, fresh_head
from continual.modules import ModuleConfig
from continual.objectives import encoder_features, objective_for
from continual.train import TrainConfig, split_validation
from tasks.errors import ConfigError
from tasks.spec import Example, TaskData, TaskSpec


class _Sequential(SequentialFT):
    """Sequential fine-tuning with `extra(data, config)` as one more loss term per step."""

    def extra(self, data: TaskData, config: TrainConfig):  # -> Callable | None
        return None

    def after(self, data: TaskData, config: TrainConfig) -> None:
        """What to keep once `data` is learnt."""

    def learn(self, data: TaskData, config: TrainConfig, *, progress: bool) -> dict[str, Any]:
        config = self.train_config(config)
        head = fresh_head(self.backbone, data.spec, config.seed)
        old = [p for h in self.heads.values() for p in h.parameters()]
        for h in self.heads.values():
            h.train()
        result = finetune(
            self.copy, head, data, config, progress=progress,
            extra_loss=self.extra(data, config), more_params=old,
        )  # fmt: skip
        for h in self.heads.values():
            h.eval()
        if head is not None:
            self.heads[data.spec.name] = head.eval()
        self.tasks.append(data.spec.name)
        self.after(data, config)
        return {
            "steps": result.steps,
            "best_step": result.best_step,
            "seconds": result.seconds,
            "lr": config.lr,
        }


def balanced_memory(examples: Sequence[Example], k: int, seed: int) -> list[Example]:
    """`k` examples with an equal share per label (the remainder to the first labels in sorted
    order; a label with too few gives what it has and the rest go to the others)."""
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = {}
    for e in examples:
        by_label.setdefault(e.target, []).append(e)
    for rows in by_label.values():
        rng.shuffle(rows)
    labels = sorted(by_label)
    out: list[Example] = []
    want = dict.fromkeys(labels, 0)
    left = min(k, len(examples))
    while left:  # deal one slot at a time to the labels that still have examples
        for label in labels:
            if left and want[label] < len(by_label[label]):
                want[label] += 1
                left -= 1
    for label in labels:
        out += by_label[label][: want[label]]
    return out


@register_baseline
class Replay(_Sequential):
    method = "replay"
    default_options: ClassVar[dict[str, Any]] = {"lr": 5e-5, "memory": 50, "seed": 0}
    MEMORY = "memory.json"

    def __init__(self, backbone: Backbone, prefix_config: ModuleConfig, options: dict[str, Any]):
        super().__init__(backbone, prefix_config, options)
        k = self.options["memory"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"baseline replay: memory must be a whole number >= 1, got {k!r}")
        self.memory: dict[str, dict[str, Any]] = {}  # task -> {"spec": ..., "examples": [...]}

    def extra(self, data: TaskData, config: TrainConfig):
        if not self.memory:
            return None
        pool = [(task, e) for task, m in self.memory.items() for e in m["examples"]]
        rng = random.Random(f"{self.options['seed']}-{len(self.tasks)}")
        specs = {task: TaskSpec.from_dict(m["spec"]) for task, m in self.memory.items()}

        def replayed(chunk: Sequence[Example]) -> torch.Tensor:
            drawn = [pool[rng.randrange(len(pool))] for _ in range(len(chunk))]
            total = 0.0
            for task in sorted({t for t, _ in drawn}):
                rows = [e for t, e in drawn if t == task]
                loss = objective_for(self.copy, specs[task]).loss(
                    self.copy, self.heads.get(task), specs[task], [e.text for e in rows],
                    [e.target for e in rows], None, config.limits,
                )  # fmt: skip
                total = total + loss * len(rows)
            return total / len(drawn)

        return replayed

    def after(self, data: TaskData, config: TrainConfig) -> None:
        train, _ = split_validation(data, config)
        kept = balanced_memory(train, int(self.options["memory"]), int(self.options["seed"]))
        self.memory[data.spec.name] = {"spec": data.spec.to_dict(), "examples": kept}

    def save_weights(self, folder: Path) -> None:
        super().save_weights(folder)
        plain = {
            task: {"spec": m["spec"], "examples": [[e.text, e.target] for e in m["examples"]]}
            for task, m in self.memory.items()
        }
        (folder / self.MEMORY).write_text(json.dumps(plain, sort_keys=True))

    def load_weights(self, folder: Path) -> None:
        super().load_weights(folder)
        raw = json.loads((folder / self.MEMORY).read_text())
        self.memory = {
            task: {
                "spec": m["spec"],
                "examples": [Example(text, target) for text, target in m["examples"]],
            }
            for task, m in raw.items()
        }


@register_baseline
class EWC(_Sequential):
    method = "ewc"
    default_options: ClassVar[dict[str, Any]] = {
        "lr": 5e-5,
        "lambda": 1000.0,
        "fisher_samples": 200,
    }
    STATE = "ewc.safetensors"

    def __init__(self, backbone: Backbone, prefix_config: ModuleConfig, options: dict[str, Any]):
        super().__init__(backbone, prefix_config, options)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self) -> torch.Tensor:
        """`(lambda / 2) * sum F (theta - anchor)^2` over the copy's weights."""
        total = None
        for name, p in self.copy.model.named_parameters():
            if name in self.fisher:
                diff = p - self.anchor[name].to(p.device)
                term = (self.fisher[name].to(p.device) * diff * diff).sum()
                total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return float(self.options["lambda"]) / 2 * total

    def extra(self, data: TaskData, config: TrainConfig):
        return (lambda chunk: self.penalty()) if self.fisher else None

    def after(self, data: TaskData, config: TrainConfig) -> None:
        train, _ = split_validation(data, config)
        rows = train[: int(self.options["fisher_samples"])]
        head = self.heads.get(data.spec.name)
        objective = objective_for(self.copy, data.spec)
        params = dict(self.copy.model.named_parameters())
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        model = self.copy.model
        was = model.training
        model.eval()
        try:
            for e in rows:
                model.zero_grad(set_to_none=True)
                loss = objective.loss(
                    self.copy, head, data.spec, [e.text], [e.target], None, config.limits
                )
                loss.backward()
                for n, p in params.items():
                    if p.grad is not None:
                        fisher[n] += p.grad.detach() ** 2
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was)
        for n in fisher:
            fisher[n] /= max(len(rows), 1)
            self.fisher[n] = self.fisher.get(n, torch.zeros_like(fisher[n])) + fisher[n]
            self.anchor[n] = params[n].detach().clone()

    def save_weights(self, folder: Path) -> None:
        super().save_weights(folder)
        if self.fisher:
            flat = {f"fisher/{k}": v.contiguous() for k, v in self.fisher.items()}
            flat |= {f"anchor/{k}": v.contiguous() for k, v in self.anchor.items()}
            save_file(flat, str(folder / self.STATE))

    def load_weights(self, folder: Path) -> None:
        super().load_weights(folder)
        if (folder / self.STATE).exists():
            # Read onto the backbone's device, where the next task's penalty and Fisher live.
            flat = load_file(str(folder / self.STATE), device=str(self.backbone.device))
            self.fisher = {k[7:]: v for k, v in flat.items() if k.startswith("fisher/")}
            self.anchor = {k[7:]: v for k, v in flat.items() if k.startswith("anchor/")}


@register_baseline
class LwF(_Sequential):
    method = "lwf"
    default_options: ClassVar[dict[str, Any]] = {"lr": 5e-5, "alpha": 1.0, "temperature": 2.0}

    def __init__(self, backbone: Backbone, prefix_config: ModuleConfig, options: dict[str, Any]):
        if backbone.kind != "encoder":
            raise ConfigError(
                "baseline lwf distils earlier heads' outputs, which only an encoder's tasks "
                f"have; {backbone.name} is a {backbone.kind}"
            )
        super().__init__(backbone, prefix_config, options)

    def targets(self, texts: Sequence[str], limits) -> dict[str, torch.Tensor]:
        """Every earlier head's temperature-T probabilities on `texts`, with the copy as it is."""
        t = float(self.options["temperature"])
        model = self.copy.model
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                feats = torch.cat([
                    encoder_features(self.copy, list(texts[i : i + 32]), None, limits)
                    for i in range(0, len(texts), 32)
                ])  # fmt: skip
                return {
                    task: torch.softmax(head.eval()(feats) / t, dim=-1)
                    for task, head in self.heads.items()
                }
        finally:
            model.train(was)

    def extra(self, data: TaskData, config: TrainConfig):
        if not self.heads:
            return None
        train, _ = split_validation(data, config)
        texts = [e.text for e in train]
        old = self.targets(texts, config.limits)
        where = {text: i for i, text in enumerate(texts)}
        t, alpha = float(self.options["temperature"]), float(self.options["alpha"])

        def distilled(chunk: Sequence[Example]) -> torch.Tensor:
            idx = torch.tensor([where[e.text] for e in chunk])
            feats = encoder_features(self.copy, [e.text for e in chunk], None, config.limits)
            total = torch.zeros((), device=feats.device)
            for task, head in self.heads.items():
                logp = torch.log_softmax(head(feats) / t, dim=-1)
                target = old[task][idx]
                total = total + torch.sum(target * (torch.log(target + 1e-12) - logp)) / len(chunk)
            return alpha * t * t * total

        return distilled
