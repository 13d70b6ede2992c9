"""PEFT adapter folders for module kinds beside the prefix: LoRA, (IA)³ and prompt tuning out
and back in.

LoRA: `adapter_config.json` (`peft_type: LORA`, r, lora_alpha, target_modules as the layers'
full names, no dropout, no bias) and `adapter_model.safetensors` with
`base_model.model.<layer>.lora_A.weight` `[r, in]` and `.lora_B.weight` `[out, r]`, what
`PeftModel.save_pretrained` writes. (IA)³: `peft_type: IA3`, target_modules and
feedforward_modules, and `base_model.model.<layer>.ia3_l` (`[out, 1]` for a key or value layer,
`[1, in]` for a feed-forward layer, scaled at its input). Prompt tuning: `peft_type:
PROMPT_TUNING`, num_virtual_tokens, token_dim, one transformer submodule, and
`prompt_embeddings` `[P, hidden]`. P-tuning v2's deep prompts go out as a prefix-tuning adapter
(`registry.exchange`); BitFit has no PEFT format. The registry does not import `continual`:
tensors are named here as the plugins name them (`lora.{i}.A`, `ia3.{i}`, `prompt`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError

TASK_TYPE_FOR_KIND = {"classification": "SEQ_CLS", "generation": "CAUSAL_LM"}
PEFT_TYPES = {"lora": "LORA", "ia3": "IA3", "prompt": "PROMPT_TUNING"}
ROOT = "base_model.model."


def adapter_for(
    kind: str, cfg: dict[str, Any], tensors: dict[str, Any], task_kind: str, base: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(adapter_config, adapter weights) of a stored module of `kind`; a kind PEFT has no
    adapter for is one line."""
    common = {
        "task_type": TASK_TYPE_FOR_KIND.get(task_kind, "FEATURE_EXTRACTION"),
        "base_model_name_or_path": base,
        "revision": None,
        "inference_mode": True,
    }
    if kind == "prompt":
        adapter = {
            "peft_type": "PROMPT_TUNING",
            "num_virtual_tokens": int(cfg["length"]),
            "token_dim": int(cfg["hidden_size"]),
            "num_transformer_submodules": 1,
            "prompt_tuning_init": "RANDOM",
        }
        return common | adapter, {"prompt_embeddings": tensors["prompt"]}
    targets = list(cfg["targets"])
    if kind == "lora":
        weights = {}
        for i, name in enumerate(targets):
            weights[f"{ROOT}{name}.lora_A.weight"] = tensors[f"lora.{i}.A"]
            weights[f"{ROOT}{name}.lora_B.weight"] = tensors[f"lora.{i}.B"]
        adapter = {
            "peft_type": "LORA",
            "r": int(cfg["rank"]),
            "lora_alpha": cfg["alpha"],
            "lora_dropout": 0.0,
            "target_modules": targets,
            "bias": "none",
            "fan_in_fan_out": False,
            "use_rslora": False,
        }
        return common | adapter, weights
    if kind == "ia3":
        ff = [n for n, f in zip(targets, cfg["feedforward"], strict=True) if f]
        weights = {
            f"{ROOT}{name}.ia3_l": (
                tensors[f"ia3.{i}"].view(1, -1) if f else tensors[f"ia3.{i}"].view(-1, 1)
            )
            for i, (name, f) in enumerate(zip(targets, cfg["feedforward"], strict=True))
        }
        adapter = {"peft_type": "IA3", "target_modules": targets, "feedforward_modules": ff}
        return common | adapter, weights
    raise ConfigError(
        f"PEFT has no adapter format for a {kind} module; export it with --format safetensors"
    )


def module_from_adapter(
    path: Path, adapter: dict[str, Any], weights: dict[str, Any]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(kind, config, tensors) of a PEFT LoRA, (IA)³ or prompt-tuning adapter; anything else
    is one line."""
    peft_type = adapter.get("peft_type")
    if peft_type == "PROMPT_TUNING":
        return _prompt(path, adapter, weights)
    if peft_type == "LORA":
        if adapter.get("bias", "none") != "none" or adapter.get("use_dora"):
            raise ConfigError(f"{path}: only LoRA adapters without bias or DoRA can be imported")
        targets = _layers(path, adapter, weights, (".lora_A.weight", ".lora_B.weight"))
        tensors, dims = {}, []
        for i, name in enumerate(targets):
            a, b = _weight(path, weights, f"{name}.lora_A.weight"), None
            b = _weight(path, weights, f"{name}.lora_B.weight")
            tensors[f"lora.{i}.A"], tensors[f"lora.{i}.B"] = a, b
            dims.append([int(a.shape[1]), int(b.shape[0])])
        rank = int(adapter["r"])
        alpha = float(adapter.get("lora_alpha", rank))
        if adapter.get("use_rslora"):
            raise ConfigError(f"{path}: rank-stabilized LoRA (use_rslora) cannot be imported")
        if adapter.get("rank_pattern") or adapter.get("alpha_pattern"):
            raise ConfigError(f"{path}: a LoRA with per-layer ranks or alphas (rank_pattern, "
                              "alpha_pattern) cannot be imported; one rank for every layer can")  # fmt: skip
        if adapter.get("fan_in_fan_out"):
            raise ConfigError(
                f"{path}: fan_in_fan_out LoRA (GPT-2's Conv1D layers) cannot be imported"
            )
        config = {"targets": targets, "dims": dims, "rank": rank, "alpha": alpha}
        return "lora", config, tensors
    if peft_type == "IA3":
        targets = _layers(path, adapter, weights, (".ia3_l",))
        ff = adapter.get("feedforward_modules") or []
        ff = {ff} if isinstance(ff, str) else set(ff)
        tensors, dims, on_input = {}, [], []
        for i, name in enumerate(targets):
            w = _weight(path, weights, f"{name}.ia3_l")
            is_ff = name in ff or any(name.endswith(f".{f}") for f in ff)
            tensors[f"ia3.{i}"] = w.reshape(-1)
            dims.append(int(w.numel()))
            on_input.append(is_ff)
        return "ia3", {"targets": targets, "dims": dims, "feedforward": on_input}, tensors
    raise ConfigError(
        f"{path}: peft_type {peft_type!r} cannot be imported; PREFIX_TUNING, PROMPT_TUNING, "
        "LORA and IA3 can"
    )


def _prompt(
    path: Path, adapter: dict[str, Any], weights: dict[str, Any]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    if adapter.get("num_transformer_submodules", 1) != 1:
        raise ConfigError(
            f"{path}: only prompts for one transformer submodule (encoder-only or decoder-only "
            "backbones) can be imported"
        )
    if "prompt_embeddings" not in weights:
        raise ConfigError(f"{path}: the adapter has no tensor prompt_embeddings")
    embeds = weights["prompt_embeddings"]
    want = (adapter.get("num_virtual_tokens"), adapter.get("token_dim"))
    if embeds.dim() != 2 or tuple(embeds.shape) != want:
        raise ConfigError(
            f"{path}: prompt_embeddings has shape {tuple(embeds.shape)} but num_virtual_tokens "
            f"and token_dim say {want}"
        )
    config = {"length": int(embeds.shape[0]), "hidden_size": int(embeds.shape[1])}
    return "prompt", config, {"prompt": embeds}


def _layers(path: Path, adapter: dict[str, Any], weights: dict[str, Any], suffixes) -> list[str]:
    """The adapted layers' full names: `target_modules` where it lists them (our exports), else
    read off the tensors' names (PEFT saves the short names or the pattern it was given),
    layer 2 before layer 10. A tensor of anything else (a saved head, embedding LoRA) is one line."""
    found: dict[str, None] = {}
    for key in weights:
        end = next((x for x in suffixes if key.endswith(x)), None)
        if end is None:
            raise ConfigError(
                f"{path}: the adapter also holds {key!r} (a saved head or another kind of "
                "layer), which cannot be imported; only the adapter's own layers can"
            )
        found[key.removeprefix(ROOT)[: -len(end)]] = None
    listed = adapter.get("target_modules")
    if isinstance(listed, list) and listed and set(listed) == set(found):
        return list(listed)
    if not found:
        raise ConfigError(f"{path}: the adapter holds no tensors")
    return sorted(
        found, key=lambda n: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", n)]
    )


def _weight(path: Path, weights: dict[str, Any], name: str) -> Any:
    for key in (f"{ROOT}{name}", name):
        if key in weights:
            return weights[key]
    raise ConfigError(f"{path}: the adapter has no tensor {ROOT}{name}")
