"""What a task module is trained for and how it predicts, per (backbone kind, task kind).

- encoder × classification: mean-pooled hidden states -> a per-task head -> label logits.
- decoder × classification: text to text; predicts by ranking the label words after the prompt.
- decoder × generation: text to text; predicts by greedy decoding.

Each pair is a module of this package that registers an `Objective` on import; a new pair is a
new module plus one line below. Look one up with `objective_for(backbone, spec)`.
"""

from continual.objectives.base import (
    Objective,
    TextLimits,
    objective,
    objective_for,
    objectives,
    register_objective,
)
from continual.objectives.decoder import (
    decoder_loss,
    generate,
    label_scores,
    prompt_ids,
    rank_classify,
    target_ids,
)
from continual.objectives.encoder import encoder_batch, encoder_features, features

from continual.objectives import decoder_classification as decoder_classification  # isort: skip
from continual.objectives import decoder_generation as decoder_generation  # isort: skip
from continual.objectives import encoder_classification as encoder_classification  # isort: skip
from continual.objectives.encoder_classification import encoder_loss  # isort: skip

__all__ = [
    "Objective",
    "TextLimits",
    "decoder_loss",
    "encoder_batch",
    "encoder_features",
    "encoder_loss",
    "features",
    "generate",
    "label_scores",
    "objective",
    "objective_for",
    "objectives",
    "prompt_ids",
    "rank_classify",
    "register_objective",
    "target_ids",
]
