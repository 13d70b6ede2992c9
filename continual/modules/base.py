"""The per-task module seam: what a kind of task module (prefix, LoRA, prompt, ...) provides, and
the registry of kinds.

A task's module is the small set of tensors trained for it on the frozen backbone. The core
(training loop, inference, packing, checkpoints, init strategies, similarity) handles it only
through three protocols, and never asks which kind it holds:

- `ModuleConfig`: a frozen, validated dataclass with the module's shapes. Its `kind` names the
  kind (stored with the module); `shapes()` lists the named tensors the module ejects; `check`
  refuses tensors that do not fit; `to_dict`/`from_dict` round-trip.
- `TaskModule`: one object per kind, registered by name (`register_module`). It makes a default
  config for a backbone, builds the trainable `nn.Module` (whose `forward()` returns the named
  tensors, differentiably, and `eject()` detached copies), and lays the ejected tensors of
  several tasks out over the rows of a batch (`rows`, `single`).
- `RowModules`: the modules of one batch's rows, ready for a backbone pass. A row may carry
  virtual positions that precede its tokens in every attention layer (a prefix's keys and
  values: `mask`, `offset`, `past`, and `packed` for packed passes) or in the input (a soft
  prompt's embeddings: `mask`, `offset`, `embeds`; padded passes only), and/or change the
  backbone's activations token by token while a pass runs (`hooks`, e.g. LoRA or IA3). A kind
  uses whichever it needs; the others are empty (V = 0, None, a null context).

Named tensors ("tensors" below) are `dict[str, Tensor]`; names starting with "head." are
reserved for the task head stored beside the module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from continual.backbones import Backbone
from tasks.errors import ConfigError

Tensors = dict[str, torch.Tensor]
#: Per layer (key, value), each `[B, kv_heads, V, head_dim]`: virtual positions in the cache.
Past = list[tuple[torch.Tensor, torch.Tensor]]
#: What stored tensors of records from before module kinds were recorded are.
DEFAULT_KIND = "prefix"
HEAD_PREFIX = "head."


@runtime_checkable
class ModuleConfig(Protocol):
    """Shapes and conventions of one kind of module; frozen, validated on construction."""

    kind: ClassVar[str]
    init: str  # the init strategy the module starts from (`continual.init`)

    @property
    def n_params(self) -> int:
        """Numbers stored per task at inference (the ejected tensors)."""
        ...

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The named tensors the module ejects, with their shapes."""
        ...

    def check(self, tensors: Mapping[str, torch.Tensor]) -> Tensors:
        """`tensors` as a dict if they are exactly `shapes()`; a ConfigError naming the
        mismatch (and its likely cause) otherwise."""
        ...

    def to_dict(self) -> dict[str, Any]: ...

    def with_(self, **changes: Any) -> ModuleConfig: ...


@dataclass(frozen=True)
class PackedModules:
    """A module's part of a packed pass (`continual.packing`): `columns` `[R, L, K]`, True where
    packed token (r, l) may attend to the k-th virtual position its row's cache holds (K may be
    0), and `past`, those K positions per layer (None when K is 0)."""

    columns: torch.Tensor
    past: Past | None


@runtime_checkable
class RowModules(Protocol):
    """The modules of a batch's rows (B rows; rows of one task share one module).

    `mask` `[B, V]`: 1 on each row's virtual positions (rows with fewer are padded and masked;
    V may be 0). `offset` `[B]`: the position of each row's first real token.

    Optional: `embeds()`, the virtual positions as input embeddings `[B, V, hidden]` placed
    before each row's tokens (a soft prompt; `past()` is then None). Rows that have it run
    padded: `packed` is never asked of them. A kind without input positions leaves it out.
    """

    mask: torch.Tensor
    offset: torch.Tensor

    def groups(self) -> torch.Tensor:
        """`[B]`: each row's module, as an index shared by the rows of one task."""
        ...

    def select(self, index: torch.Tensor) -> RowModules:
        """The modules of rows `index` (rows may repeat), e.g. one per label candidate."""
        ...

    def past(self) -> Past | None:
        """The virtual positions as a padded pass's cache, per layer `[B, kv, V, head_dim]`."""
        ...

    def packed(self, segment: torch.Tensor, row: torch.Tensor) -> PackedModules:
        """The module's part of a packed pass. `segment` `[R, L]`: which of the B rows each
        packed token belongs to (-1 on empty row ends); `row` `[B]`: the packed row of each."""
        ...

    def hooks(self, model: nn.Module, token_row: torch.Tensor) -> AbstractContextManager[None]:
        """While the context is open, every forward of `model` is changed per token for a call
        whose input token (i, j) belongs to row `token_row[i, j]` of this batch (-1: none)."""
        ...


class TaskModule(Protocol):
    """One kind of per-task module; registered once by its `kind`."""

    kind: str

    def check_options(self, options: Mapping[str, Any], where: str) -> dict[str, Any]:
        """`options` (of `config_for`, from a command line, stream entry or HTTP arrival)
        checked without a backbone; a ConfigError starting with `where` otherwise."""
        ...

    def config_for(self, backbone: Backbone, **options: Any) -> ModuleConfig:
        """The config for `backbone`'s geometry with `options` (each kind names its own)."""
        ...

    def config_from_dict(self, d: Mapping[str, Any]) -> ModuleConfig:
        """The inverse of `config.to_dict()` (unknown keys are ignored)."""
        ...

    def build(
        self, config: ModuleConfig, *, start: Tensors | None = None, seed: int = 0
    ) -> nn.Module:
        """The trainable module: its `parameters()` train, `forward()` returns the named
        tensors (differentiable), `eject()` detached copies. With `start` (named tensors that
        fit `config`), `eject()` returns exactly `start` before training."""
        ...

    def rows(
        self, parts: Sequence[tuple[Tensors, ModuleConfig]], row_task: torch.Tensor
    ) -> RowModules:
        """Rows of a batch that may mix tasks: `parts` holds one (tensors, config) per task,
        `row_task` `[B]` each row's index into `parts`."""
        ...

    def single(self, tensors: Tensors, config: ModuleConfig, batch_size: int) -> RowModules:
        """The same module on every row (training, single-task evaluation); gradients flow
        back to `tensors`."""
        ...

    def start_from_text(self, backbone: Backbone, config: ModuleConfig, text: str) -> Tensors:
        """Tensors the backbone itself gives for `text` (the `words` init); a kind without
        such a start raises ConfigError."""
        ...


_MODULES: dict[str, TaskModule] = {}


def register_module(module: TaskModule) -> TaskModule:
    """Add a kind of task module under `module.kind`; a duplicate name is an error."""
    if module.kind in _MODULES:
        raise ConfigError(f"task module kind {module.kind!r} is registered twice")
    _MODULES[module.kind] = module
    return module


def module_kinds() -> list[str]:
    return sorted(_MODULES)


def module_kind(name: str) -> TaskModule:
    """The registered kind `name`."""
    if name not in _MODULES:
        raise ConfigError(
            f"unknown task module kind {name!r}; registered kinds are {', '.join(module_kinds())}"
        )
    return _MODULES[name]


def module_for(config: ModuleConfig) -> TaskModule:
    """The kind a config belongs to."""
    return module_kind(config.kind)


def config_from_dict(kind: str, d: Mapping[str, Any]) -> ModuleConfig:
    """A stored config of kind `kind` (records without a kind are `DEFAULT_KIND`)."""
    return module_kind(kind).config_from_dict(d)


def build(config: ModuleConfig, *, start: Tensors | None = None, seed: int = 0) -> nn.Module:
    """The trainable module for `config` (see `TaskModule.build`)."""
    return module_for(config).build(config, start=start, seed=seed)


def check_shapes(
    tensors: Mapping[str, torch.Tensor], want: Mapping[str, tuple[int, ...]], what: str
) -> Tensors:
    """`tensors` as a dict when their names and shapes are exactly `want`; else a ConfigError
    naming `what` (the kind) and the first mismatch."""
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if set(got) != set(want):
        raise ConfigError(
            f"{what} tensors are named {sorted(got)} but the config needs {sorted(want)}"
        )
    for name, shape in want.items():
        if got[name] != tuple(shape):
            raise ConfigError(
                f"{what} tensor {name!r} has shape {got[name]} but the config needs "
                f"{tuple(shape)}; was it trained on another backbone?"
            )
    return dict(tensors)


def refuse_unknown(options: Mapping[str, Any], known: Sequence[str], kind: str, where: str) -> None:
    """A ConfigError starting with `where` when `options` name anything outside `known`."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown {kind} option(s) {unknown}; known: {', '.join(known)}")


def padded_bank(per_task: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task `[P_t, D]` virtual positions as one bank `[n, P_max, D]` (shorter ones
    zero-padded at the end) and its mask `[n, P_max]` (1 on real positions)."""
    p_max = max(int(t.shape[0]) for t in per_task)
    bank = torch.stack(
        [
            t if t.shape[0] == p_max else nn.functional.pad(t, (0, 0, 0, p_max - t.shape[0]))
            for t in per_task
        ]
    )
    mask = torch.stack([(torch.arange(p_max) < t.shape[0]).long() for t in per_task])
    return bank, mask


def split_tensors(tensors: Mapping[str, torch.Tensor]) -> tuple[Tensors, Tensors]:
    """(module tensors, head tensors) of a stored set: head tensors are named `head.*`."""
    module = {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)}
    head = {k: v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    return module, head
