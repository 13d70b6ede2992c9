"""Where the work runs: the device and the dtype, decided once at the top and passed down.

    rt = resolve("auto", "bfloat16")       # or resolve() for $CONTINUAL_DEVICE / _DTYPE, else cpu
    backbone = load_backbone("minilm", runtime=rt)

`auto` takes CUDA when torch sees a GPU, else Apple's MPS, else the CPU. CPU float32 is the
default and stays bitwise reproducible (the same predictions hash run after run); other devices
and dtypes are not bitwise deterministic, so the no-forgetting evidence records the runtime and
compares scores within `SCORE_TOLERANCE` beside the hashes (`deterministic` says which applies).

The backbone's weights take the dtype; a task's trainable module (the prefix) keeps float32
master weights and is cast to the backbone's dtype where it enters attention, and losses and
heads are computed in float32.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from tasks.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: Off the bitwise-reproducible runtime, a re-evaluation's score may move by float rounding on
#: near-tie inputs: the evidence accepts this much (a fraction: 0.005 = half a point).
SCORE_TOLERANCE = 0.005


@dataclass(frozen=True)
class Runtime:
    """A resolved device (`cpu`, `cuda`, `cuda:1`, `mps`) and dtype name."""

    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)} (--dtype, "
                "$CONTINUAL_DTYPE)"
            )
        if self.device.split(":")[0] not in DEVICES[1:]:
            raise ConfigError(
                f"device {self.device!r} is not one of {', '.join(DEVICES)} (--device, "
                "$CONTINUAL_DEVICE)"
            )

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def deterministic(self) -> bool:
        """Whether runs here are bitwise reproducible (CPU float32)."""
        return self.device == "cpu" and self.dtype == "float32"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CPU = Runtime()


def resolve(device: str | None = None, dtype: str | None = None) -> Runtime:
    """The runtime for `device` and `dtype` (None: $CONTINUAL_DEVICE / $CONTINUAL_DTYPE, else
    cpu and float32); `auto` picks the best device present. A device that is asked for by name
    but not present is one clear error."""
    device = (device or os.environ.get("CONTINUAL_DEVICE") or "cpu").strip().lower()
    dtype = (dtype or os.environ.get("CONTINUAL_DTYPE") or "float32").strip().lower()
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    runtime = Runtime(device=device, dtype=dtype)
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device}: torch sees no CUDA GPU here (torch {torch.__version__}); use "
            "--device cpu or auto"
        )
    if kind == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ConfigError(f"device {device}: MPS is not available here; use --device cpu or auto")
    if kind == "cpu" and dtype == "float16":
        raise ConfigError(
            "dtype float16 on the CPU: torch's CPU kernels are slow or missing for it; use "
            "bfloat16 or float32 there"
        )
    return runtime
