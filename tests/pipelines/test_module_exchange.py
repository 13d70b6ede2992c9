"""LoRA, (IA)³ and prompt-tuning modules out as PEFT adapters and back: PEFT's `PeftModel.from_pretrained`
loads the folder and computes what our module computes (within 1e-4), `registry import` brings
it back as the same module (equal predictions), and our own folders keep the kind. A kind PEFT
has no format for (BitFit) is one line."""

from __future__ import annotations

import copy

import pytest
import torch

from continual.backbones import load_backbone
from continual.model import Batch, forward
from continual.modules import module_kind
from registry import Registry
from tests.continual.test_module_seam import TEXTS
from tests.pipelines.test_module_arrivals import FAST
from tests.pipelines.test_stream_run import run


def _train(kind: str, tiny_encoder_dir, write_jsonl, sentiment, home) -> str:
    train = write_jsonl("t.jsonl", sentiment(48, seed=1))
    ev = write_jsonl("e.jsonl", sentiment(24, seed=2))
    code, _, err = run(
        "train", "--backbone", tiny_encoder_dir, "--train", train, "--eval", ev, "--name", "t",
        "--home", home, *FAST, "--module", kind, "--max-length", "64",
    )  # fmt: skip
    assert code == 0, err
    return ev


@pytest.mark.parametrize("kind", ["lora", "ia3", "prompt"])
def test_a_module_goes_out_as_a_peft_adapter_and_comes_back(
    kind, tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    from peft import PeftModel

    home, out = tmp_path / "home", tmp_path / "adapter"
    ev = _train(kind, tiny_encoder_dir, write_jsonl, sentiment, home)
    code, _, err = run("registry", "export", "t", "--format", "peft", "--out", out, "--home", home)
    assert code == 0, err
    backbone = load_backbone(str(tiny_encoder_dir))
    with Registry.open(home, tracking_uri="none") as reg:
        tensors, record = reg.load_prefix(reg.prefix("t").id, backbone.fingerprint)
    config = module_kind(kind).config_from_dict(record.config)
    theirs_model = PeftModel.from_pretrained(copy.deepcopy(backbone.model), out).eval()
    tok = backbone.tokenizer(TEXTS, return_tensors="pt", padding=True)
    own = {k: v for k, v in tensors.items() if not k.startswith("head.")}
    rows = module_kind(kind).single(own, config, len(TEXTS))
    batch = Batch(tok["input_ids"], tok["attention_mask"])
    real = batch.attention_mask.bool()  # a pad's own output is never read
    with torch.no_grad():
        theirs = theirs_model(**tok).last_hidden_state
        theirs = theirs[:, theirs.shape[1] - batch.input_ids.shape[1] :]  # a prompt's tokens first
        ours = forward(backbone, batch, rows).last_hidden_state
        plain = forward(backbone, batch, None).last_hidden_state
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-4, rtol=0)
    assert (ours - plain)[real].abs().max() > 1e-5  # the module acts

    code, doc, err = run("evaluate", "--task", "t", "--eval", ev, "--home", home)
    assert code == 0, err
    other = tmp_path / "other"
    code, _, err = run("registry", "import", out, "--home", other)
    assert code == 0, err
    with Registry.open(other, tracking_uri="none") as reg:
        assert reg.prefix("t").kind == kind
    code, again, err = run("evaluate", "--task", "t", "--eval", ev, "--home", other)
    assert code == 0, err
    assert again["predictions_sha256"] == doc["predictions_sha256"]


def test_our_own_folder_keeps_the_kind_and_bitfit_has_no_peft_format(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    home = tmp_path / "home"
    _train("bitfit", tiny_encoder_dir, write_jsonl, sentiment, home)
    code, doc, err = run(
        "registry", "export", "t", "--format", "peft", "--out", tmp_path / "x", "--home", home
    )
    assert code == 2 and "PEFT has no adapter format for a bitfit module" in "\n".join(err)
    assert not (tmp_path / "x").exists()  # refused before anything is written
    code, _, err = run(
        "registry", "export", "t", "--format", "safetensors", "--out", tmp_path / "ours",
        "--home", home,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run("registry", "import", tmp_path / "ours", "--home", tmp_path / "other")
    assert code == 0, err
    with Registry.open(tmp_path / "other", tracking_uri="none") as reg:
        assert reg.prefix("t").kind == "bitfit"


def test_a_prompt_adapter_saved_by_peft_itself_is_imported_as_a_prompt(
    tiny_encoder_dir, tmp_path
) -> None:
    """A file written by another tool: PEFT's own `save_pretrained` of a prompt-tuning model
    (no sidecar of ours), imported through the library with a task spec and the backbone's
    fingerprint, is registered as a prompt that computes what PEFT computes."""
    from peft import PromptTuningConfig, get_peft_model

    from tasks.spec import TaskSpec

    backbone = load_backbone(str(tiny_encoder_dir))
    peft_model = get_peft_model(
        copy.deepcopy(backbone.model),
        PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=3),
    ).eval()
    with torch.no_grad():  # PEFT's own random start, moved so the prompt is not trivial
        table = peft_model.prompt_encoder["default"].embedding.weight
        table.copy_(torch.randn(table.shape, generator=torch.Generator().manual_seed(4)))
    peft_model.save_pretrained(tmp_path / "adapter")
    with Registry.open(tmp_path / "home", tracking_uri="none") as reg:
        record = reg.import_(
            tmp_path / "adapter",
            backbone_fingerprint=backbone.fingerprint,
            task=TaskSpec(name="p", kind="classification", labels=("a", "b")),
        )
        tensors, record = reg.load_prefix(record.id, backbone.fingerprint)
    assert record.kind == "prompt" and record.config["length"] == 3
    config = module_kind("prompt").config_from_dict(record.config)
    tok = backbone.tokenizer(TEXTS, return_tensors="pt", padding=True)
    batch = Batch(tok["input_ids"], tok["attention_mask"])
    with torch.no_grad():
        theirs = peft_model(**tok).last_hidden_state[:, 3:]
        ours = forward(backbone, batch, module_kind("prompt").single(tensors, config, len(TEXTS)))
    real = batch.attention_mask.bool()
    torch.testing.assert_close(ours.last_hidden_state[real], theirs[real], atol=1e-4, rtol=0)
