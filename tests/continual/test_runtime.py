"""Device and dtype, decided once: resolving them, a backbone loaded in bfloat16 (on the CPU,
where it can be checked here), the weights' check without a copy, and CPU float32 unchanged."""

from __future__ import annotations

import math

import pytest
import torch

from continual.backbones import fingerprint, load_backbone
from continual.inference import evaluate
from continual.modules.prefix import prefix_config_for
from continual.runtime import CPU, Runtime, resolve
from continual.train import TrainConfig, train
from tasks.errors import ConfigError
from tasks.spec import Example, TaskData, TaskSpec
from tasks.split import fingerprint as data_fingerprint

BF16 = Runtime(device="cpu", dtype="bfloat16")


def test_resolve_defaults_environment_and_refusals(monkeypatch) -> None:
    monkeypatch.delenv("CONTINUAL_DEVICE", raising=False)
    monkeypatch.delenv("CONTINUAL_DTYPE", raising=False)
    assert resolve() == CPU and CPU.deterministic
    monkeypatch.setenv("CONTINUAL_DTYPE", "bfloat16")
    assert resolve() == BF16 and not BF16.deterministic
    assert resolve(dtype="float32") == CPU  # an argument wins over the environment
    auto = resolve("auto", "float32")
    assert auto.device == ("cuda" if torch.cuda.is_available() else auto.device)
    with pytest.raises(ConfigError, match="dtype 'int8' is not one of"):
        resolve("cpu", "int8")
    with pytest.raises(ConfigError, match="device 'tpu' is not one of"):
        resolve("tpu")
    with pytest.raises(ConfigError, match="float16 on the CPU"):
        resolve("cpu", "float16")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU here"):
            resolve("cuda")


def _data(spec: TaskSpec, n: int = 24) -> TaskData:
    words = ("good fine great", "bad awful poor")
    rows = tuple(
        Example(text=f"{words[i % 2]} {i}", target=spec.labels[i % 2] if spec.labels else "ok")
        for i in range(n)
    )
    return TaskData(spec=spec, train=rows, eval=rows[:8], fingerprint=data_fingerprint(rows, ()))


@pytest.mark.parametrize("which", ["tiny_encoder_dir", "tiny_decoder_dir"])
def test_a_bfloat16_backbone_trains_and_evaluates(request, which) -> None:
    folder = request.getfixturevalue(which)
    plain = load_backbone(str(folder))
    bb = load_backbone(str(folder), runtime=BF16)
    assert {p.dtype for p in bb.model.parameters()} == {torch.bfloat16}
    assert bb.fingerprint == plain.fingerprint  # the weights as read, whatever the runtime
    spec = TaskSpec(name="t", kind="classification", labels=("yes", "no"))
    config = TrainConfig(steps=6, batch_size=8, lr=1e-2, eval_every=3, patience=0)
    result = train(bb, _data(spec), prefix_config_for(bb, 3, None), config, progress=False)
    assert all(math.isfinite(x) for x in result.losses)
    assert all(t.dtype == torch.float32 for t in result.task.tensors.values())  # master weights
    ev = evaluate(bb, result.task, _data(spec).eval, batch_size=4)
    assert ev.n == 8 and set(ev.predictions) <= {"yes", "no"}
    assert bb.unchanged()


def test_the_weights_check_sees_an_in_place_write(tiny_encoder_dir) -> None:
    bb = load_backbone(str(tiny_encoder_dir))
    assert bb.unchanged() and fingerprint(bb.model) == bb.fingerprint
    with torch.no_grad():
        next(bb.model.parameters()).mul_(1.0)  # same values, but written in place
    assert not bb.unchanged()
