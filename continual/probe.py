"""A linear probe on the frozen features: the encoder head's starting point (LP-FT).

A randomly initialised head makes the first gradients into the prefix noise, and AdamW turns
noise into full-size steps: the prefix drifts wherever the noise points while the head has not
yet learned anything. On tasks whose classes the frozen features separate only weakly, that
drift can wash the input out of the pooled features before the head finds a signal, and the
run stalls at the label prior (measured: feature spread across inputs 3.1 -> 0.39 in 60 steps,
loss stuck at 0.69). Fitting the head first on the features the prefix starts from (Kumar et al.
2022, "linear probing then fine-tuning") gives the prefix an informative gradient from step 1.

The probe is multinomial logistic regression (scikit-learn, L2, lbfgs) on at most
`PROBE_MAX` training examples, deterministic for a given seed and data. The objective that has
a head on pooled features computes them and calls `fit_head`
(`continual.objectives.encoder_classification`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from continual.heads import ClassificationHead
from tasks.spec import Example, TaskSpec

#: Examples the probe is fitted on (a forward pass each, no backward).
PROBE_MAX = 1000
#: Inverse L2 strength; scikit-learn's default.
PROBE_C = 1.0
#: How an encoder's head starts (`TrainConfig.head_init`): "probe" fits it to the starting
#: features first (`Objective.fit_head`), "random" is a small random linear layer.
HEAD_INITS = ("probe", "random")


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
    x = feats.detach().double().cpu().numpy()
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
    with torch.no_grad():  # copy_ moves the values to wherever the head lives
        head.linear.weight.copy_(torch.from_numpy(w).float())
        head.linear.bias.copy_(torch.from_numpy(b).float())
    return head
