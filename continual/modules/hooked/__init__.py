"""What the kinds that change layer outputs while a pass runs (LoRA, (IA)³, BitFit) share: the
linear layers they target (`targets`), and their per-row application (`RowHooks`)."""

from continual.modules.hooked.rows import Change, RowHooks, stack
from continual.modules.hooked.targets import resolve_targets

__all__ = ["Change", "RowHooks", "resolve_targets", "stack"]
