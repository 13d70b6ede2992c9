"""Prefix tuning on frozen backbones: the prefix, training, evaluation and similar-task init."""
