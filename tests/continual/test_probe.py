"""The encoder head's probe start (`continual.probe`) and which validated step is kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from continual import probe
from continual.heads import ClassificationHead
from continual.train import TrainConfig, optimize, train
from tasks.errors import ConfigError
from tasks.spec import Example, TaskData, TaskSpec

from .test_train import SENTIMENT, prefix_config, task_data


def _blobs(n_labels: int, n: int = 120, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(n_labels, dim))
    y = rng.integers(0, n_labels, size=n)
    x = centres[y] + rng.normal(0, 1.5, size=(n, dim))
    return torch.tensor(x, dtype=torch.float32), y


@pytest.mark.parametrize("n_labels", [2, 4])
def test_fit_head_reproduces_the_logistic_regression(n_labels: int) -> None:
    from sklearn.linear_model import LogisticRegression

    labels = tuple(f"l{i}" for i in range(n_labels))
    spec = TaskSpec(name="b", kind="classification", labels=labels)
    x, y = _blobs(n_labels)
    examples = [Example(text="t", target=labels[i]) for i in y]
    head = probe.fit_head(ClassificationHead(8, n_labels, dropout=0.0), spec, x, examples)
    ref = LogisticRegression(C=probe.PROBE_C, max_iter=2000, random_state=0).fit(x.double(), y)
    with torch.no_grad():
        logits = head(x).double()
    ours = logits.softmax(-1).numpy()
    np.testing.assert_allclose(ours, ref.predict_proba(x.double().numpy()), atol=1e-5)
    assert (ours.argmax(1) == ref.predict(x.double().numpy())).all()


def test_fit_head_keeps_unseen_labels_unlikely() -> None:
    spec = TaskSpec(name="b", kind="classification", labels=("a", "b", "c"))
    x, y = _blobs(2)
    examples = [Example(text="t", target=("a", "c")[i]) for i in y]
    head = probe.fit_head(ClassificationHead(8, 3, dropout=0.0), spec, x, examples)
    with torch.no_grad():
        predicted = head(x).argmax(-1)
    assert 1 not in predicted.tolist()  # "b" never in the sample, never predicted


def test_probe_start_begins_where_a_random_head_has_to_get_to(tiny_encoder, sentiment) -> None:
    data = task_data(sentiment(160, seed=1), sentiment(40, seed=2))
    runs = {}
    for head_init in ("probe", "random"):
        config = TrainConfig(
            steps=20, batch_size=16, lr=1e-2, eval_every=10, patience=0, head_init=head_init
        )
        runs[head_init] = train(
            tiny_encoder, data, prefix_config(tiny_encoder, 4, "explicit"), config, progress=False
        )
    first = {k: sum(r.losses[:3]) / 3 for k, r in runs.items()}
    assert first["random"] > 0.6  # about ln 2: a random head knows nothing
    assert first["probe"] < 0.5 * first["random"]


def _loop(scores: list[float], config: TrainConfig) -> tuple[int, list[int]]:
    """`optimize` on one parameter with a scripted validation: (best step, steps kept)."""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    values = iter(scores)
    kept: list[int] = []
    loop = optimize(
        params=[w],
        optimizer=opt,
        scheduler=sched,
        loss_of=lambda chunk: (w**2).sum(),
        validate=lambda: next(values),
        on_best=kept.append,
        modules=[],
        train_set=[Example("x", "y")] * 4,
        has_validation=True,
        config=config,
        desc="t",
        progress=False,
    )
    return loop.best_step, kept


def test_the_kept_step_is_never_from_the_first_half_of_training() -> None:
    config = TrainConfig(steps=400, batch_size=1, eval_every=50, patience=0)
    # a lucky early score (step 50) beats everything later: it is not kept
    best, kept = _loop([0.9, 0.5, 0.6, 0.7, 0.72, 0.71, 0.7, 0.72], config)
    assert min(kept) >= 200 and best == 400  # the tie at 400 goes to the longer-trained step


def test_patience_counts_only_from_the_kept_share() -> None:
    config = TrainConfig(steps=400, batch_size=1, eval_every=50, patience=2)
    best, kept = _loop([0.9, 0.8, 0.7, 0.6, 0.7, 0.5, 0.4, 0.3], config)
    # validations at 50..150 neither keep nor count; 200 keeps, 250 keeps (a tie), 300 and 350
    # do not improve on 0.7 and stop it
    assert kept == [200, 250] and best == 250


def test_min_best_share_zero_is_the_old_rule() -> None:
    config = TrainConfig(steps=400, batch_size=1, eval_every=50, patience=0, min_best_share=0)
    best, _ = _loop([0.9, 0.5, 0.6, 0.7, 0.72, 0.71, 0.7, 0.72], config)
    assert best == 50


@pytest.mark.parametrize(
    "change", [{"head_init": "zeros"}, {"min_best_share": 1.5}, {"min_best_share": -0.1}]
)
def test_bad_options_are_refused(change) -> None:
    with pytest.raises(ConfigError, match=next(iter(change))):
        TrainConfig(**change)


def test_probe_is_fitted_on_training_data_only(tiny_encoder, sentiment) -> None:
    """Eval labels flipped: the probe (and so the start) cannot see them."""
    rows, held = sentiment(80, seed=1), sentiment(40, seed=2)
    flipped = [{**r, "label": "negative" if r["label"] == "positive" else "positive"} for r in held]
    config = TrainConfig(steps=1, batch_size=16, lr=1e-9, patience=0, min_best_share=0)
    a = train(tiny_encoder, task_data(rows, held), prefix_config(tiny_encoder, 4, "explicit"),
              config, progress=False)  # fmt: skip
    b = train(tiny_encoder, task_data(rows, flipped), prefix_config(tiny_encoder, 4, "explicit"),
              config, progress=False)  # fmt: skip
    assert torch.equal(a.task.head.linear.weight, b.task.head.linear.weight)


_ = (SENTIMENT, TaskData)
