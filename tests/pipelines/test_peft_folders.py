"""Adapters saved by PEFT itself (`save_pretrained`, no sidecar of ours), imported from the
command line: PEFT keeps the short target names it was given (`q_proj`) and no task, so
`registry import` reads the layers off the tensors' names and takes the task (`--name` with
`--labels` or `--kind generation`) and the backbone (`--backbone`) from the user, tries the
module on that backbone, and refuses in one line, with nothing written, what cannot run."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from continual.model import Batch, forward
from continual.modules import module_kind
from registry import Registry
from tests.continual.test_module_seam import TEXTS
from tests.pipelines.test_stream_run import run


def _peft_folder(kind: str, backbone, out: Path) -> Path:
    """`kind` ('lora' or 'ia3') on the tiny Llama, saved by PEFT with short target names and
    weights moved off PEFT's identity start, so the module acts."""
    from peft import IA3Config, LoraConfig, get_peft_model

    if kind == "lora":
        config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                            lora_dropout=0.0, task_type="CAUSAL_LM")  # fmt: skip
    else:
        config = IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                           feedforward_modules=["down_proj"], task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(copy.deepcopy(backbone.model), config)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or "ia3_" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
    model.eval().save_pretrained(out)
    saved = json.loads((out / "adapter_config.json").read_text())
    assert sorted(saved["target_modules"]) == sorted(config.target_modules)  # short names
    return out


def _nothing_written(home: Path) -> None:
    assert not list(home.rglob("*.safetensors"))
    if (home / "registry.db").exists():
        code, doc, err = run("registry", "tasks", "--home", home)
        assert code == 0 and doc["tasks"] == [], err


@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_a_peft_saved_adapter_is_imported_with_a_task_and_a_backbone(
    kind, tiny_decoder, tiny_decoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    from peft import PeftModel

    folder = _peft_folder(kind, tiny_decoder, tmp_path / "adapter")
    home = tmp_path / "home"
    code, doc, err = run("registry", "import", folder, "--home", home, "--backbone",
                         tiny_decoder_dir, "--name", "heads", "--kind", "generation")  # fmt: skip
    assert code == 0, err
    assert doc["imported"]["kind"] == kind and doc["imported"]["task"] == "heads"
    with Registry.open(home, tracking_uri="none") as reg:
        tensors, record = reg.load_prefix(reg.prefix("heads").id, tiny_decoder.fingerprint)
    assert record.backbone_name == tiny_decoder.name  # the backbone's record, not PEFT's name
    config = module_kind(kind).config_from_dict(record.config)
    theirs_model = PeftModel.from_pretrained(copy.deepcopy(tiny_decoder.model), folder).eval()
    tok = tiny_decoder.tokenizer(TEXTS, return_tensors="pt", padding=True)
    batch = Batch(tok["input_ids"], tok["attention_mask"])
    real = batch.attention_mask.bool()
    with torch.no_grad():
        theirs = theirs_model(**tok).logits
        ours = forward(tiny_decoder, batch, module_kind(kind).single(tensors, config, len(TEXTS)))
        plain = forward(tiny_decoder, batch, None)
    torch.testing.assert_close(ours.logits[real], theirs[real], atol=1e-4, rtol=0)
    assert (ours.logits - plain.logits)[real].abs().max() > 1e-3  # the module acts
    # served by name alone: the stored backbone record loads without --backbone
    code, doc, err = run("predict", "--task", "heads", "--home", home, *TEXTS[:2])
    assert code == 0, err
    assert len(doc["predictions"]) == 2

    # a classification task on a decoder needs no head (its labels are ranked as words)
    rows = sentiment(12, seed=2)
    ev = write_jsonl("e.jsonl", rows)
    code, _, err = run("registry", "import", folder, "--home", home, "--backbone",
                       tiny_decoder_dir, "--name", "mood", "--labels", "positive,negative")  # fmt: skip
    assert code == 0, err
    code, doc, err = run("evaluate", "--task", "mood", "--eval", ev, "--home", home)
    assert code == 0, err
    assert doc["n"] == 12 and doc["metric"] == "accuracy" and 0.0 <= doc["score"] <= 1.0

    # with only the fingerprint the layers are read off the tensors the same way
    other = tmp_path / "other"
    code, _, err = run("registry", "import", folder, "--home", other, "--backbone-fingerprint",
                       tiny_decoder.fingerprint, "--name", "heads", "--kind", "generation")  # fmt: skip
    assert code == 0, err
    with Registry.open(other, tracking_uri="none") as reg:
        again, _ = reg.load_prefix(reg.prefix("heads").id, tiny_decoder.fingerprint)
    assert again.keys() == tensors.keys() and all(torch.equal(again[k], tensors[k]) for k in again)


def test_what_cannot_run_is_refused_in_one_line_with_nothing_written(
    tiny_decoder, tiny_decoder_dir, tiny_encoder, tiny_encoder_dir, tmp_path
) -> None:
    folder = _peft_folder("lora", tiny_decoder, tmp_path / "adapter")
    home = tmp_path / "home"

    def refused(*argv, where: str = "") -> str:
        code, _, err = run("registry", "import", *argv, "--home", home)
        assert code == 2 and len(err) == 1, err
        assert where in err[0]
        _nothing_written(home)
        return err[0]

    line = refused(folder)
    assert "--backbone NAME_OR_FOLDER" in line  # neither backbone nor fingerprint
    line = refused(folder, "--backbone", tiny_decoder_dir, where=str(folder))
    assert "--name TASK" in line and "--labels" in line  # no task
    assert "--name" in refused(folder, "--labels", "a,b")
    assert "--labels" in refused(folder, "--name", "x", "--kind", "classification")
    assert "--kind generation" in refused(folder, "--name", "x")
    # an encoder's classification needs a head, which no PEFT adapter carries
    prompt = tmp_path / "prompt"
    from peft import PromptTuningConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(tiny_encoder.model),
                           PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=2))  # fmt: skip
    model.save_pretrained(prompt)
    line = refused(prompt, "--backbone", tiny_encoder_dir, "--name", "x", "--labels", "a,b")
    assert "needs a task head" in line and "registry export" in line
    # the encoder's LoRA on the decoder: layers it does not have
    from peft import LoraConfig

    theirs = get_peft_model(copy.deepcopy(tiny_encoder.model),
                            LoraConfig(r=2, target_modules=["query", "value"]))  # fmt: skip
    theirs.save_pretrained(tmp_path / "bert-lora")
    line = refused(tmp_path / "bert-lora", "--backbone", tiny_decoder_dir, "--name", "x",
                   "--kind", "generation")  # fmt: skip
    assert "does not run on backbone tiny-llama" in line and "encoder.layer.0" in line
    # matrices of another width than the backbone's layers
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "adapter_config.json").write_text((folder / "adapter_config.json").read_text())
    weights = load_file(folder / "adapter_model.safetensors")
    weights = {k: torch.zeros(v.shape[0], v.shape[1] + 3) if ".lora_A." in k else v
               for k, v in weights.items()}  # fmt: skip
    save_file(weights, wrong / "adapter_model.safetensors")
    line = refused(wrong, "--backbone", tiny_decoder_dir, "--name", "x", "--kind", "generation")
    assert "does not run on backbone" in line and "trained on" in line
    # a saved head (modules_to_save) beside the matrices cannot come along
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "adapter_config.json").write_text((folder / "adapter_config.json").read_text())
    weights = load_file(folder / "adapter_model.safetensors")
    save_file({**weights, "base_model.model.score.weight": torch.zeros(2, 4)},
              extra / "adapter_model.safetensors")  # fmt: skip
    line = refused(extra, "--backbone", tiny_decoder_dir, "--name", "x", "--kind", "generation")
    assert "score.weight" in line
    # per-layer ranks: our LoRA has one rank
    config = json.loads((folder / "adapter_config.json").read_text())
    (extra / "adapter_config.json").write_text(
        json.dumps({**config, "rank_pattern": {"q_proj": 4}})
    )
    save_file(weights, extra / "adapter_model.safetensors")
    line = refused(extra, "--backbone", tiny_decoder_dir, "--name", "x", "--kind", "generation")
    assert "rank_pattern" in line


def test_a_task_is_refused_for_a_folder_that_carries_its_own(
    tiny_encoder_dir, write_jsonl, sentiment, tmp_path
) -> None:
    from tests.pipelines.test_module_exchange import _train

    home = tmp_path / "home"
    _train("lora", tiny_encoder_dir, write_jsonl, sentiment, home)
    out = tmp_path / "adapter"
    code, _, err = run("registry", "export", "t", "--format", "peft",
                       "--out", out, "--home", home)  # fmt: skip
    assert code == 0, err
    other = tmp_path / "other"
    code, _, err = run("registry", "import", out, "--home", other, "--name", "u", "--labels", "a,b")
    assert (
        code == 2
        and len(err) == 1
        and "carries its own task spec" in err[0]
        and "--labels" in err[0]
    )
    _nothing_written(other)
    code, doc, err = run("registry", "import", out, "--home", other, "--backbone", tiny_encoder_dir)
    assert code == 0, err  # our export, tried on its backbone and kept with its head
    assert doc["imported"]["task"] == "t" and doc["imported"]["kind"] == "lora"
