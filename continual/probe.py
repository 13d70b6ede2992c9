"""A linear probe on the frozen features: the encoder head's starting point (LP-FT).

A randomly initialised head makes the first gradients into the prefix noise, and AdamW turns
noise into full-size steps: the prefix drifts wherever the noise points while the head has not
yet learned anything. On tasks whose classes the frozen features separate only weakly, that
drift can wash the input out of the pooled features before the head finds a signal, and the
run stalls at the label prior (measured: feature spread across inputs 3.1 -> 0.39 in 60 steps,
loss stuck at 0.69). Fitting the head first on the features the prefix starts from (Kumar et al.
2022, "linear probing then fine-tuning") gives the prefix an informative gradient from step 1.

The probe is multinomial logistic regression (scikit-learn, L2, lbfgs) on at most
`PROBE_MAX` training examples, deterministic for a given seed and data.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
import torch

from continual.backbones import Backbone
from continual.heads import ClassificationHead
from continual.objectives import TextLimits, encoder_features
from continual.prefix import PrefixConfig, RowPrefix, single
from tasks.spec import Example, TaskSpec

#: Examples the probe is fitted on (a forward pass each, no backward).
PROBE_MAX = 1000
#: Inverse L2 strength; scikit-learn's default.
PROBE_C = 1.0
#: How an encoder's head starts (`TrainConfig.head_init`): "probe" fits it to the starting
#: features first (`start_head`), "random" is a small random linear layer.
HEAD_INITS = ("probe", "random")


@torch.no_grad()
def features(
    backbone: Backbone,
    texts: Sequence[str],
    prefix_of: Callable[[int], RowPrefix | None],
    limits: TextLimits,
    batch_size: int = 32,
) -> torch.Tensor:
    """Pooled features `[N, H]` of `texts` in eval mode; `prefix_of(n)` gives the rows' prefix."""
    was_training = backbone.model.training
    backbone.model.eval()
    try:
        out = []
        for i in range(0, len(texts), batch_size):
            chunk = list(texts[i : i + batch_size])
            rows: RowPrefix | None = prefix_of(len(chunk))
            out.append(encoder_features(backbone, chunk, rows, limits))
        return torch.cat(out)
    finally:
        backbone.model.train(was_training)


def fit_head(
    head: ClassificationHead,
    spec: TaskSpec,
    feats: torch.Tensor,
    examples: Sequence[Example],
    *,
    seed: int = 0,
) -> ClassificationHead:
    """Set `head`'s linear layer to a logistic-regression probe of `feats` (in place)."""
    from sklearn.linear_model import LogisticRegression

    index = {label: i for i, label in enumerate(spec.labels)}
    y = np.array([index[e.target] for e in examples])
    x = feats.double().numpy()
    present = sorted(set(y.tolist()))
    if len(present) < 2:
        return head  # nothing to separate: keep the random start
    model = LogisticRegression(C=PROBE_C, max_iter=2000, random_state=seed).fit(x, y)
    w = np.zeros((len(spec.labels), x.shape[1]))
    b = np.full(len(spec.labels), -10.0)  # labels absent from the probe's sample start unlikely
    if len(present) == 2:  # scikit-learn keeps one row for binary problems: logit difference
        w[present[1]], b[present[1]] = model.coef_[0] / 2, model.intercept_[0] / 2
        w[present[0]], b[present[0]] = -model.coef_[0] / 2, -model.intercept_[0] / 2
    else:
        for row, label in enumerate(model.classes_):
            w[label], b[label] = model.coef_[row], model.intercept_[row]
    with torch.no_grad():
        head.linear.weight.copy_(torch.from_numpy(w).float())
        head.linear.bias.copy_(torch.from_numpy(b).float())
    return head


def start_head(
    backbone: Backbone,
    head: ClassificationHead,
    spec: TaskSpec,
    train_set: Sequence[Example],
    start: torch.Tensor,
    prefix_config: PrefixConfig,
    limits: TextLimits,
    *,
    seed: int,
    batch_size: int,
) -> ClassificationHead:
    """Fit `head` (in place) on a seeded sample of at most `PROBE_MAX` training examples, on the
    features under the prefix training starts from (`start`, flat)."""
    sample = random.Random(seed).sample(list(train_set), min(len(train_set), PROBE_MAX))
    feats = features(
        backbone,
        [e.text for e in sample],
        lambda n: single(start, prefix_config, n),
        limits,
        batch_size=batch_size,
    )
    return fit_head(head, spec, feats, sample, seed=seed)
