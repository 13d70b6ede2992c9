"""How alike two tasks are, from the frozen backbone: task embeddings and module similarity.

- **Task embedding** (`task_embedding`): the mean, over a seeded sample of the task's inputs,
  of `layer_features` (the backbone's mean-pooled hidden states at up to six evenly spaced
  layers, each unit-normed, concatenated), mixed half and half with the same for its label
  words (classification) or a sample of its targets (generation). The labels matter (as
  reported when this was designed, on minilm: with inputs alone a new e-mail spam task looked
  closer to tweet sentiment than to SMS spam; with the label words in, it found SMS spam). The
  layers matter too: measured on minilm over the
  twelve catalog tasks, the last layer alone put news20 nearest to SMS spam (bbc_news 0.44);
  all six layers put it nearest to bbc_news (0.80), and every sentiment task nearest to another
  sentiment task.
- **Module similarity** (SPoT, Vu et al. 2022): the cosine of two ejected task modules, each
  named tensor average-pooled over its first axis (a prefix's positions), concatenated in name
  order (`module_vector`; for a prefix, SPoT's prefix vector).
- **Mixing** (`mix_tensors`): a similarity-weighted average of source modules, tensor by
  tensor, weights a softmax of similarity over a temperature (ATTEMPT / multitask prompt
  tuning's source mixtures).

Similarities are computed with scikit-learn. Features are float32 numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from continual.backbones import Backbone
from continual.model import Batch, mean_pool, position_ids
from tasks.errors import ConfigError
from tasks.spec import Example, TaskSpec

#: Sample size and label weight of a task embedding (the registry records them with it).
EMBED_SAMPLE = 128
LABEL_WEIGHT = 0.5
FEATURE_MAX_LENGTH = 128


def embedding_method(backbone: Backbone) -> str:
    """The registry method name of task embeddings on `backbone`: embeddings are comparable
    only on the same weights, so the name carries the backbone's fingerprint."""
    return f"mean-pool:{backbone.fingerprint[:16]}"


@torch.no_grad()
def pooled_features(
    backbone: Backbone,
    texts: Sequence[str],
    *,
    layers: Sequence[int] = (-1,),
    batch_size: int = 32,
    max_length: int = FEATURE_MAX_LENGTH,
) -> np.ndarray:
    """`[n, len(layers) * hidden]` float32: each text's mean-pooled hidden states at `layers`
    (indices into the model's hidden states, embeddings = 0), concatenated, no prefix."""
    if not texts:
        return np.zeros((0, backbone.geometry.hidden_size * len(layers)), np.float32)
    tok = backbone.tokenizer
    was_training = backbone.model.training
    backbone.model.eval()
    out = []
    try:
        for start in range(0, len(texts), batch_size):
            enc = tok(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            dev = backbone.device
            batch = Batch(enc["input_ids"].to(dev), enc["attention_mask"].to(dev))
            kwargs = dict(backbone.traits.plain_forward)
            res = backbone.model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=position_ids(batch.attention_mask, None),
                output_hidden_states=True,
                **kwargs,
            )
            pooled = [mean_pool(res.hidden_states[i].float(), batch.attention_mask) for i in layers]
            out.append(torch.cat(pooled, dim=-1).cpu().numpy())
    finally:
        backbone.model.train(was_training)
    return np.concatenate(out).astype(np.float32)


def spaced_layers(backbone: Backbone, k: int = 6) -> tuple[int, ...]:
    """Up to `k` evenly spaced hidden-state indices (1 = first layer), the last one included."""
    n = backbone.geometry.layers
    k = min(k, n)
    return tuple(sorted({round(n - i * n / k) for i in range(k)}))


def layer_features(
    backbone: Backbone,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = FEATURE_MAX_LENGTH,
) -> np.ndarray:
    """`[n, layers * hidden]`: `pooled_features` at `spaced_layers`, each layer's block
    unit-normed so that every layer weighs the same."""
    layers = spaced_layers(backbone)
    raw = pooled_features(
        backbone, texts, layers=layers, batch_size=batch_size, max_length=max_length
    )
    blocks = raw.reshape(len(texts), len(layers), backbone.geometry.hidden_size)
    norms = np.linalg.norm(blocks, axis=-1, keepdims=True)
    return (blocks / np.maximum(norms, 1e-12)).reshape(len(texts), -1).astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def sample_texts(examples: Sequence[Example], n: int, seed: int) -> list[str]:
    """A seeded sample of up to `n` input texts (the same for the same data and seed)."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(examples))[:n]
    return [examples[i].text for i in sorted(idx)]


def label_texts(spec: TaskSpec, examples: Sequence[Example], n: int, seed: int) -> list[str]:
    """What stands for a task's outputs: its label words, or a sample of its targets."""
    if spec.kind == "classification":
        return list(spec.labels)
    rng = np.random.default_rng(seed + 1)
    idx = rng.permutation(len(examples))[:n]
    return [examples[i].target for i in sorted(idx)]


def task_embedding(
    backbone: Backbone,
    spec: TaskSpec,
    examples: Sequence[Example],
    *,
    n: int = EMBED_SAMPLE,
    seed: int = 0,
    label_weight: float = LABEL_WEIGHT,
) -> np.ndarray:
    """A unit vector for a task: `(1 - w) * inputs + w * labels`, each part the unit-normed
    mean of `layer_features` (see the module docstring)."""
    if not examples:
        raise ConfigError(f"task {spec.name}: no examples to embed")
    if not 0.0 <= label_weight <= 1.0:
        raise ConfigError(f"label weight must be in [0, 1], got {label_weight}")
    inputs = _unit(layer_features(backbone, sample_texts(examples, n, seed)).mean(0))
    outputs = label_texts(spec, examples, n, seed)
    if not outputs or label_weight == 0.0:
        return inputs.astype(np.float32)
    labels = _unit(layer_features(backbone, outputs).mean(0))
    return _unit((1.0 - label_weight) * inputs + label_weight * labels).astype(np.float32)


def module_vector(tensors: Mapping[str, torch.Tensor]) -> np.ndarray:
    """SPoT's representation of an ejected module: each named tensor averaged over its first
    axis and flattened, concatenated in name order (a prefix `{"prefix": [P, flat_dim]}` gives
    its `[flat_dim]` mean over positions)."""
    if not tensors:
        raise ConfigError("a task module has at least one tensor to compare")
    parts = []
    for name in sorted(tensors):
        t = tensors[name]
        if t.dim() < 1:
            raise ConfigError(f"module tensor {name!r} is a scalar; nothing to average over")
        parts.append(t.detach().float().mean(0).reshape(-1).cpu().numpy())
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def similarities(query: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Cosine similarity of one vector `[d]` to each row of `keys` `[n, d]` -> `[n]`."""
    if keys.shape[0] == 0:
        return np.zeros(0, np.float32)
    if query.shape[-1] != keys.shape[-1]:
        raise ConfigError(
            f"cannot compare a {query.shape[-1]}-dim vector with {keys.shape[-1]}-dim ones "
            "(different backbones or prefix shapes)"
        )
    from sklearn.metrics.pairwise import cosine_similarity  # here: sklearn costs ~1.5 s to import

    return cosine_similarity(query.reshape(1, -1), keys)[0].astype(np.float32)


@dataclass(frozen=True)
class Neighbour:
    """An earlier task and how similar it is to the query, under `method`."""

    task: str
    score: float
    method: str


def rank(
    query: np.ndarray, keys: dict[str, np.ndarray], method: str, top: int | None = None
) -> list[Neighbour]:
    """The tasks of `keys` by decreasing similarity to `query` (ties by name)."""
    names = sorted(keys)
    if not names:
        return []
    sims = similarities(query, np.stack([keys[n] for n in names]))
    order = sorted(range(len(names)), key=lambda i: (-float(sims[i]), names[i]))
    out = [Neighbour(names[i], float(sims[i]), method) for i in order]
    return out if top is None else out[:top]


def mix_weights(scores: Sequence[float], temperature: float) -> np.ndarray:
    """Softmax of `scores / temperature` (a small temperature tends to the nearest source)."""
    if temperature <= 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    s = np.asarray(scores, dtype=np.float64) / temperature
    s = np.exp(s - s.max())
    return (s / s.sum()).astype(np.float32)


def mix_tensors(
    modules: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """The weighted average of modules of one kind and shape, tensor by tensor."""
    if not modules:
        raise ConfigError("no source modules to mix")
    names = {tuple(sorted(m)) for m in modules}
    if len(names) != 1:
        raise ConfigError(f"source modules differ in their tensors: {sorted(names)}")
    w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
    out = {}
    for name in sorted(next(iter(names))):
        shapes = {tuple(m[name].shape) for m in modules}
        if len(shapes) != 1:
            raise ConfigError(f"source modules' {name!r} differ in shape: {sorted(shapes)}")
        stacked = torch.stack([m[name].detach().float() for m in modules])
        out[name] = (w.view(-1, *([1] * (stacked.dim() - 1))) * stacked).sum(0)
    return out
