"""Per-task modules (prefix tuning first) on frozen backbones: the module seam, objectives,
training, evaluation and similar-task init."""
