"""Export as a PEFT adapter or as our own safetensors files, and import either back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from registry_testkit import FINGERPRINT, GEOMETRY, prefix_config, register, spec
from safetensors.torch import load_file

from registry import Registry
from tasks.errors import ConfigError, IntegrityError

P, LAYERS, KV, HD = (GEOMETRY[k] for k in ("length", "layers", "kv_heads", "head_dim"))


def test_peft_export_format(reg: Registry, tmp_path: Path) -> None:
    record = register(reg, "trec")
    out = tmp_path / "peft"
    result = reg.export("trec", "peft", out)
    assert set(result.files) == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "continual_export.json",
        "continual_head.safetensors",
    }
    config = json.loads((out / "adapter_config.json").read_text())
    assert config == {
        "peft_type": "PREFIX_TUNING",
        "task_type": "SEQ_CLS",
        "num_virtual_tokens": P,
        "token_dim": KV * HD,
        "num_layers": LAYERS,
        "num_attention_heads": KV,
        "num_transformer_submodules": 1,
        "encoder_hidden_size": 16,
        "prefix_projection": False,
        "base_model_name_or_path": "tiny-random",
        "revision": None,
        "inference_mode": True,
    }
    weights = load_file(out / "adapter_model.safetensors")
    assert list(weights) == ["prompt_embeddings"]
    assert weights["prompt_embeddings"].shape == (P, LAYERS * 2 * KV * HD)
    stored, _ = reg.load_prefix("trec", FINGERPRINT)
    assert torch.equal(weights["prompt_embeddings"], stored["prefix"])
    assert set(load_file(out / "continual_head.safetensors")) == {"head.weight", "head.bias"}
    sidecar = json.loads((out / "continual_export.json").read_text())
    assert "note" not in sidecar  # trained with PEFT's own "shifted" positions
    assert sidecar["backbone"]["fingerprint"] == FINGERPRINT and sidecar["sha256"] == record.sha256


def test_peft_export_notes_another_position_convention(reg: Registry, tmp_path: Path) -> None:
    register(reg, "gen", kind="generation", prefix_config=prefix_config(positions="explicit"))
    reg.export("gen", "peft", tmp_path / "peft")
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM"
    note = json.loads((tmp_path / "peft" / "continual_export.json").read_text())["note"]
    assert "'explicit'" in note and "'shifted'" in note


def test_peft_round_trip(reg: Registry, tmp_path: Path) -> None:
    register(reg, "trec", seed=5)
    reg.export("trec", "peft", tmp_path / "peft")
    with pytest.raises(ConfigError, match="pass --new-version"):
        reg.import_(tmp_path / "peft")
    imported = reg.import_(tmp_path / "peft", new_version=True)
    assert imported.version == 2 and imported.is_current
    a, _ = reg.load_prefix("trec", FINGERPRINT, version=1)
    b, _ = reg.load_prefix("trec", FINGERPRINT, version=2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert reg.prefix("trec").config == reg.prefix("trec", version=1).config
    with pytest.raises(IntegrityError, match="--backbone or the matching --backbone-fingerprint"):
        reg.import_(tmp_path / "peft", backbone_fingerprint="0" * 64, new_version=True)


def test_a_bare_peft_adapter_needs_a_fingerprint_and_a_task(reg: Registry, tmp_path: Path) -> None:
    register(reg, "trec")
    out = tmp_path / "peft"
    reg.export("trec", "peft", out)
    (out / "continual_export.json").unlink()
    with pytest.raises(ConfigError, match="pass --backbone NAME_OR_FOLDER"):
        reg.import_(out)
    with pytest.raises(ConfigError, match="no task spec"):
        reg.import_(out, backbone_fingerprint="9" * 64)
    imported = reg.import_(out, backbone_fingerprint="9" * 64, task=spec("from-peft"))
    assert imported.backbone_fingerprint == "9" * 64 and imported.backbone_name == "tiny-random"
    assert (
        imported.config["positions"] == "shifted" and imported.n_stored == P * LAYERS * 2 * KV * HD
    )
    tensors, _ = reg.load_prefix("from-peft", "9" * 64)
    assert set(tensors) == {"prefix"}


def test_safetensors_round_trip(reg: Registry, tmp_path: Path) -> None:
    record = register(reg, "trec", lineage=None)
    out = tmp_path / "ours"
    result = reg.export("trec", "safetensors", out)
    assert set(result.files) == {"prefix.safetensors", "prefix.json"}
    data = (out / "prefix.safetensors").read_bytes()
    assert hashlib.sha256(data).hexdigest() == record.sha256  # byte-identical to the store
    about = json.loads((out / "prefix.json").read_text())
    assert about["task"]["name"] == "trec" and about["backbone"]["fingerprint"] == FINGERPRINT
    assert about["prefix_config"] == record.config and about["train"]["losses"] == [1.5, 1.0, 0.5]
    imported = reg.import_(out, new_version=True)
    assert imported.version == 2 and imported.train.steps == 3
    (out / "prefix.safetensors").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(IntegrityError, match="does not match prefix.json"):
        reg.import_(out, new_version=True)


def test_export_and_import_errors(reg: Registry, tmp_path: Path) -> None:
    register(reg, "trec")
    with pytest.raises(ConfigError, match="not one of peft, safetensors"):
        reg.export("trec", "onnx", tmp_path / "x")
    with pytest.raises(ConfigError, match="holds neither"):
        reg.import_(tmp_path)


def test_peft_loads_the_exported_adapter(reg: Registry, tmp_path: Path) -> None:
    """The real PEFT library reads our adapter into a tiny Llama with the same geometry."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    register(reg, "gen", kind="generation")
    reg.export("gen", "peft", tmp_path / "peft")
    config = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=KV,
        head_dim=HD,
    )
    model = peft.PeftModel.from_pretrained(
        transformers.LlamaForCausalLM(config), str(tmp_path / "peft")
    )
    loaded = model.prompt_encoder["default"].embedding.weight
    stored, _ = reg.load_prefix("gen", FINGERPRINT)
    assert torch.equal(loaded.detach(), stored["prefix"])
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[1, 2, 3]]))
    assert out.logits.shape == (1, 3, 32)
