"""The project's exception types.

A `ContinualError` is something a user caused and can fix: the CLI prints its message as one line
and exits non-zero, without a traceback. Anything else escaping is a bug and keeps its traceback.
They live in `tasks/`, the bottom layer, so every package can raise them.
"""

from __future__ import annotations


class ContinualError(Exception):
    """A user-caused error: one line naming the input, the place and the fix."""

    exit_code = 2


class DataError(ContinualError):
    """Task data that cannot be used: missing file or field, empty split, bad label, bad text."""


class AssetError(ContinualError):
    """A backbone or dataset asset that cannot be fetched or fails its checksum."""


class ConfigError(ContinualError):
    """An invalid option, config value or name."""


class IntegrityError(ContinualError):
    """A stored artifact whose bytes or provenance do not match its record."""
