"""A prefix exported with `continual registry export T --format peft` loads in PEFT
(`PeftModel.from_pretrained` on a fresh copy of the same backbone) and gives our outputs within
1e-4 on every real token of a padded batch: last hidden states on minilm, logits on smollm2.

Position conventions. PEFT feeds a prefix as a key/value cache, so real tokens sit at positions
P..P+T-1 ("shifted"), and it adds P to any `position_ids` it is given
(`PeftModel._adjust_prompt_learning_kwargs`). Our encoders default to "explicit" (0..T-1):
- a minilm prefix trained with `--positions shifted` matches PEFT as exported;
- an explicit one is exported with a note saying so, and matches PEFT when we run it shifted, or
  when PEFT is given position ids that land on 0..T-1 (ours minus P, which PEFT adds back).
Padding. transformers derives positions from the cache length alone, ignoring padding (only
`generate` computes them from the attention mask), so for the left-padded decoder batches we
use, PEFT needs `position_ids` from the mask; right-padded, it needs nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from continual.backbones import Backbone, fingerprint, load_backbone
from continual.model import Batch, forward
from continual.modules.prefix import PrefixConfig, TrainablePrefix, prefix_config_for, single
from pipelines.jobs import task_prefix_from_registry
from registry import Registry
from tasks.spec import TaskSpec

pytestmark = pytest.mark.integration

ATOL = 1e-4
TEXTS = ["the movie was really very good , i loved it", "bad", "a fine film , not great"]


# --- helpers -----------------------------------------------------------------------------------


def padded(backbone: Backbone, side: str) -> Batch:
    """`TEXTS` tokenized by the backbone's tokenizer, padded on `side`."""
    tok = backbone.tokenizer
    rows = [tok(t)["input_ids"] for t in TEXTS]
    width, pad = max(map(len, rows)), tok.pad_token_id
    ids, mask = [], []
    for r in rows:
        fill = width - len(r)
        ids.append(r + [pad] * fill if side == "right" else [pad] * fill + r)
        mask.append([1] * len(r) + [0] * fill if side == "right" else [0] * fill + [1] * len(r))
    assert len(set(map(len, rows))) == len(rows), "texts of different lengths make padding"
    return Batch(torch.tensor(ids), torch.tensor(mask))


def ours(backbone: Backbone, batch: Batch, flat: torch.Tensor | None, config: PrefixConfig):
    prefix = None if flat is None else single(flat, config, batch.input_ids.shape[0])
    with torch.no_grad():
        out = forward(backbone, batch, prefix)
    return out.last_hidden_state if backbone.kind == "encoder" else out.logits


def theirs(peft_model: Any, backbone: Backbone, batch: Batch, **kwargs: Any) -> torch.Tensor:
    with torch.no_grad():
        out = peft_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)
    return out.last_hidden_state if backbone.kind == "encoder" else out.logits


def explicit_positions(batch: Batch) -> torch.Tensor:
    """0..len-1 over each row's real tokens (what `generate` computes from the mask)."""
    return (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)


def max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    real = mask.bool()
    return float((a[real] - b[real]).abs().max())


def load_peft(backbone: Backbone, adapter: Path) -> Any:
    """PEFT on a fresh copy of the backbone's weights (checked to be the same backbone)."""
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForCausalLM

    loader = AutoModelForCausalLM if backbone.kind == "decoder" else AutoModel
    base = loader.from_pretrained(backbone.source, dtype=torch.float32).eval()
    assert fingerprint(base) == backbone.fingerprint
    return PeftModel.from_pretrained(base, str(adapter)).eval()


def register_random(home: Path, backbone: Backbone, task: TaskSpec, config: PrefixConfig):
    """Register a random (reparameterized-init) prefix as `pipelines.jobs.run_train` would."""
    flat = TrainablePrefix(config, seed=7).eject()["prefix"]
    with Registry.open(home, tracking_uri="none") as reg:
        reg.register_prefix(
            task=task,
            data_fingerprint="0" * 64,
            backbone=backbone.info(),
            tensors={"prefix": flat},
            prefix_config={
                **config.to_dict(),
                "backbone": backbone.name,
                "task_type": "SEQ_CLS" if backbone.kind == "encoder" else "CAUSAL_LM",
            },
            train_summary={"steps": 0, "seconds": 0.0, "final_loss": None, "losses": []},
            run={
                "seed": 0,
                "config": {},
                "packages": {},
                "backbone_fingerprint": backbone.fingerprint,
            },
        )


def export_and_reload(cli, home: Path, task: str, backbone: Backbone, out: Path):
    """`registry export --format peft`, then our own copy of the prefix from the registry."""
    r = cli("registry", "export", task, "--format", "peft", "--out", out, "--json", "--home", home)
    assert r.rc == 0, r.err
    assert set(r.out["files"]) >= {"adapter_config.json", "adapter_model.safetensors"}
    with Registry.open(home, tracking_uri="none") as reg:
        loaded = task_prefix_from_registry(reg, task, backbone)
    sidecar = json.loads((out / "continual_export.json").read_text())
    adapter = json.loads((out / "adapter_config.json").read_text())
    c = loaded.config
    assert adapter["num_virtual_tokens"] == c.length and adapter["num_layers"] == c.layers
    assert adapter["token_dim"] == c.kv_heads * c.head_dim
    assert adapter["num_attention_heads"] == c.kv_heads
    return loaded, sidecar


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> Backbone:
    return load_backbone("minilm")


@pytest.fixture(scope="module")
def smollm2() -> Backbone:
    return load_backbone("smollm2")


# --- minilm ------------------------------------------------------------------------------------


def test_minilm_shifted_prefix_matches_peft(
    minilm, cli, train_argv, task_files, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    trained = cli(
        *train_argv("minilm", task_files, "sentiment", home),
        "--positions", "shifted", "--prefix-length", "6", "--steps", "2", "--max-train", "32",
        "--batch-size", "8", "--eval-every", "1000", "--tracking-uri", "none",
    )  # fmt: skip
    assert trained.rc == 0, trained.err
    loaded, sidecar = export_and_reload(cli, home, "sentiment", minilm, tmp_path / "peft")
    assert loaded.config.positions == "shifted" and "note" not in sidecar
    peft_model = load_peft(minilm, tmp_path / "peft")

    batch = padded(minilm, "right")
    mine = ours(minilm, batch, loaded.tensors["prefix"], loaded.config)
    assert max_diff(mine, theirs(peft_model, minilm, batch), batch.attention_mask) < ATOL
    # Not vacuous: the prefix does change the hidden states.
    bare = ours(minilm, batch, None, loaded.config)
    assert max_diff(mine, bare, batch.attention_mask) > 1e-2


def test_minilm_explicit_prefix_is_flagged_and_matches_peft_under_one_convention(
    minilm, cli, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    config = prefix_config_for(minilm, 6, None)
    assert config.positions == "explicit"  # the encoders' default
    task = TaskSpec(name="explicit-task", kind="classification", labels=("yes", "no"))
    register_random(home, minilm, task, config)
    loaded, sidecar = export_and_reload(cli, home, task.name, minilm, tmp_path / "peft")
    assert "'explicit'" in sidecar["note"] and "'shifted'" in sidecar["note"]
    assert sidecar["prefix_config"]["positions"] == "explicit"
    peft_model = load_peft(minilm, tmp_path / "peft")

    batch = padded(minilm, "right")
    mask = batch.attention_mask
    mine = ours(minilm, batch, loaded.tensors["prefix"], loaded.config)
    peft_default = theirs(peft_model, minilm, batch)
    # The conventions really differ: as exported, PEFT does not reproduce our outputs ...
    assert max_diff(mine, peft_default, mask) > 1e-3
    # ... but ours forced to PEFT's shifted positions matches PEFT ...
    forced = ours(minilm, batch, loaded.tensors["prefix"], loaded.config.with_(positions="shifted"))
    assert max_diff(forced, peft_default, mask) < ATOL
    # ... and PEFT given explicit positions matches ours (PEFT adds P to what it is given).
    p = loaded.config.length
    peft_explicit = theirs(peft_model, minilm, batch, position_ids=explicit_positions(batch) - p)
    assert max_diff(mine, peft_explicit, mask) < ATOL


# --- smollm2 -----------------------------------------------------------------------------------


def test_smollm2_prefix_logits_match_peft(smollm2, cli, tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = prefix_config_for(smollm2, 5, None)
    assert config.positions == "shifted"  # the decoders' default, PEFT's
    register_random(home, smollm2, TaskSpec(name="gen-task", kind="generation"), config)
    loaded, sidecar = export_and_reload(cli, home, "gen-task", smollm2, tmp_path / "peft")
    assert "note" not in sidecar
    peft_model = load_peft(smollm2, tmp_path / "peft")

    # Right padding: PEFT's default positions are right for every real token.
    batch = padded(smollm2, "right")
    mine = ours(smollm2, batch, loaded.tensors["prefix"], loaded.config)
    assert max_diff(mine, theirs(peft_model, smollm2, batch), batch.attention_mask) < ATOL
    assert max_diff(mine, ours(smollm2, batch, None, config), batch.attention_mask) > 1e-2

    # Left padding (how we run decoders): PEFT needs positions from the mask, as generate()
    # would compute them; it adds P itself.
    batch = padded(smollm2, "left")
    mine_left = ours(smollm2, batch, loaded.tensors["prefix"], loaded.config)
    peft_left = theirs(peft_model, smollm2, batch, position_ids=explicit_positions(batch))
    assert max_diff(mine_left, peft_left, batch.attention_mask) < ATOL
    # Without them only the row that has no padding agrees (transformers' positions ignore it).
    full = int(batch.attention_mask.sum(-1).argmax())
    no_pos = theirs(peft_model, smollm2, batch)
    assert float((mine_left[full] - no_pos[full]).abs().max()) < ATOL


# --- prompt tuning -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_a_soft_prompt_matches_peft_prompt_tuning(name, request, cli, tmp_path: Path) -> None:
    """A prompt (`--module prompt`) exported as a PROMPT_TUNING adapter: PEFT puts the same
    embeddings before the input and computes our outputs on every real token. Right padding:
    PEFT ignores position ids under prompt tuning, so its positions are right only there (we
    run decoders left-padded; our positions skip padding either way)."""
    from continual.modules import module_kind

    backbone = request.getfixturevalue(name)
    plugin = module_kind("prompt")
    config = plugin.config_for(backbone, length=5)
    tensors = plugin.build(config, seed=3).eject()
    home, out = tmp_path / "home", tmp_path / "peft"
    task = TaskSpec(name="p", kind="classification", labels=("yes", "no"))
    with Registry.open(home, tracking_uri="none") as reg:
        reg.register_prefix(
            task=task, data_fingerprint="0" * 64, backbone=backbone.info(), tensors=tensors,
            prefix_config={**config.to_dict(), "backbone": backbone.name},
            train_summary={"steps": 0, "seconds": 0.0, "final_loss": None, "losses": []},
            run={"seed": 0, "config": {}, "packages": {},
                 "backbone_fingerprint": backbone.fingerprint},
            kind="prompt",
        )  # fmt: skip
    r = cli("registry", "export", "p", "--format", "peft", "--out", out, "--json", "--home", home)
    assert r.rc == 0, r.err
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "PROMPT_TUNING" and adapter["num_virtual_tokens"] == 5
    peft_model = load_peft(backbone, out)
    batch = padded(backbone, "right")
    rows = plugin.single(tensors, config, batch.input_ids.shape[0])
    with torch.no_grad():
        out_ours = forward(backbone, batch, rows)
        bare = forward(backbone, batch, None)
    pick = "last_hidden_state" if backbone.kind == "encoder" else "logits"
    mine = getattr(out_ours, pick)
    peft_out = theirs(peft_model, backbone, batch)[:, 5:]
    assert max_diff(mine, peft_out, batch.attention_mask) < ATOL
    assert max_diff(mine, getattr(bare, pick), batch.attention_mask) > 1e-2  # the prompt acts


# --- an adapter PEFT saved itself --------------------------------------------------------------


def test_a_lora_that_peft_saved_on_smollm2_comes_in_from_the_command_line(
    smollm2, cli, tmp_path: Path
) -> None:
    """LoRA on the real smollm2 as PEFT users save it (short target names, no task of ours):
    `registry import --backbone smollm2 --name --kind generation` registers it, our LoRA
    computes PEFT's logits, and the task then answers by name."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(smollm2.source, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))  # fmt: skip
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # PEFT starts B at zero: move it so the adapter acts
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    out, home = tmp_path / "adapter", tmp_path / "home"
    model.eval().save_pretrained(out)
    assert json.loads((out / "adapter_config.json").read_text())["target_modules"] != []
    r = cli("registry", "import", out, "--backbone", "smollm2", "--name", "heads", "--kind",
            "generation", "--json", "--home", home)  # fmt: skip
    assert r.rc == 0, r.err
    assert r.out["imported"]["kind"] == "lora" and r.out["imported"]["backbone_name"] == "smollm2"
    with Registry.open(home, tracking_uri="none") as reg:
        loaded = task_prefix_from_registry(reg, "heads", smollm2)
    assert len(loaded.config.targets) == 2 * smollm2.model.config.num_hidden_layers
    batch = padded(smollm2, "left")
    from continual.modules import module_kind

    rows = module_kind("lora").single(loaded.tensors, loaded.config, batch.input_ids.shape[0])
    with torch.no_grad():
        mine = forward(smollm2, batch, rows).logits
        bare = forward(smollm2, batch, None).logits
    peft_out = theirs(model, smollm2, batch, position_ids=explicit_positions(batch))
    assert max_diff(mine, peft_out, batch.attention_mask) < ATOL
    assert max_diff(mine, bare, batch.attention_mask) > 1e-2  # the adapter acts
    r = cli("predict", "--task", "heads", "Summarise: the cat sat on the mat.", "--json",
            "--home", home)  # fmt: skip
    assert r.rc == 0, r.err
    assert len(r.out["predictions"]) == 1
