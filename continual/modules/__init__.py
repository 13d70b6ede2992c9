"""Per-task modules: the seam (`continual.modules.base`) and the built-in kinds.

A new kind lives in its own folder here, calls `register_module` when imported, and is added
with one line below.
"""

from continual.modules.base import (
    DEFAULT_KIND,
    ModuleConfig,
    PackedModules,
    Past,
    RowModules,
    TaskModule,
    Tensors,
    build,
    check_shapes,
    config_from_dict,
    module_for,
    module_kind,
    module_kinds,
    register_module,
    split_tensors,
)

from continual.modules import prefix as prefix  # registers "prefix"  # isort: skip
from continual.modules import lora as lora  # registers "lora"  # isort: skip
from continual.modules import ptuning as ptuning  # registers "ptuning"  # isort: skip
from continual.modules import ia3 as ia3  # registers "ia3"  # isort: skip
from continual.modules import bitfit as bitfit  # registers "bitfit"  # isort: skip
from continual.modules import prompt as prompt  # registers "prompt"  # isort: skip

__all__ = [
    "DEFAULT_KIND",
    "ModuleConfig",
    "PackedModules",
    "Past",
    "RowModules",
    "TaskModule",
    "Tensors",
    "build",
    "check_shapes",
    "config_from_dict",
    "module_for",
    "module_kind",
    "module_kinds",
    "register_module",
    "split_tensors",
]
