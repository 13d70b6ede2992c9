"""A full disk, a read-only disk, a file-size limit or an unreachable database ends a command
with one line saying what to do; any other error is not dressed up as one."""

from __future__ import annotations

import errno

import pytest
from sqlalchemy import exc as sa_exc

from pipelines.cli_output import storage_trouble


@pytest.mark.parametrize(
    "error,words",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/ws/artifacts/ab/x.part"),
         ["No space left on device writing /ws/artifacts/ab/x.part", "free some space"]),
        (OSError(errno.EROFS, "Read-only file system"), ["Read-only file system", "make it writable"]),
        (OSError(errno.EFBIG, "File too large"), ["File too large", "raise the file-size limit"]),
        (sa_exc.OperationalError("INSERT", {}, Exception("database or disk is full")),
         ["the database could not write (database or disk is full)", "free some space"]),
        (sa_exc.OperationalError("SELECT", {}, Exception("connection failed: could not connect")),
         ["the registry database stayed unreachable", "once it is back"]),
    ],
)  # fmt: skip
def test_storage_errors_are_one_line(error: BaseException, words: list[str]) -> None:
    line = storage_trouble(error)
    assert line is not None and "\n" not in line
    assert all(w in line for w in words), line
    assert "run the same command again" in line


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOENT, "No such file or directory"),
        ValueError("a bug"),
        sa_exc.OperationalError("SELEC", {}, Exception("syntax error")),
    ],
)
def test_other_errors_are_left_alone(error: BaseException) -> None:
    assert storage_trouble(error) is None
