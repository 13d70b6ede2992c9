"""Content-addressed safetensors files under `<workspace>/artifacts/ab/abcdef....safetensors`.

A file's name is the sha256 of its bytes. Writes go to a temporary file in the same folder, are
fsynced, renamed into place with `os.replace` and the folder fsynced, so a crash leaves either
no file or the whole file, and only then does the caller commit the row that points at it. Every
read re-hashes the bytes and refuses a mismatch. Never pickles.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.errors import IntegrityError

if TYPE_CHECKING:
    import torch

ARTIFACTS = "artifacts"
SUFFIX = ".safetensors"
TEMP_PREFIX = ".tmp-"
REPAIR_HINT = "run `continual registry check --repair`"
STORE_ID = "workspace-id"  # beside artifacts/, never inside it (it would count as an orphan)


@dataclass(frozen=True)
class StoredFile:
    """A file in the store: `path` is relative to the workspace."""

    path: str
    sha256: str
    n_bytes: int
    created: bool = False  # this call wrote it (it was not in the store before)


@contextmanager
def undone_on_error(store: Any, db: Any) -> Iterator[list[StoredFile]]:
    """A list to add the files a block puts in `store` to: if the block raises, those it
    created are removed again unless a committed row references them (another process may
    have stored the same bytes meanwhile): the row that was to reference them never
    committed, so a refused or failed write, a full disk included, leaves no file behind. A
    process killed in the block cannot clean up: its files stay as young orphans for
    `check --repair`."""
    written: list[StoredFile] = []
    try:
        yield written
    except BaseException:
        for f in written:
            if f.created:
                with suppress(Exception):  # the database may be what failed
                    if not db.read(lambda uow, sha=f.sha256: uow.references(sha)):
                        store.remove(f.path)
        raise


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verified(data: bytes, expected_sha256: str, where: str) -> bytes:
    """`data` if its sha256 is `expected_sha256`, else IntegrityError naming `where`."""
    actual = sha256_bytes(data)
    if actual != expected_sha256:
        raise IntegrityError(
            f"artifact {where} is corrupt: expected sha256 {expected_sha256}, found {actual}; "
            f"{REPAIR_HINT}"
        )
    return data


def missing(where: str, expected_sha256: str) -> IntegrityError:
    return IntegrityError(
        f"artifact {where} is missing (expected sha256 {expected_sha256}); {REPAIR_HINT}"
    )


def hash_file(f: Any) -> str:
    """The sha256 of an open binary file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors encoding of `tensors` (copied to contiguous CPU memory) with `metadata`."""
    from safetensors.torch import save as save_safetensors

    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return canonical_header(save_safetensors(plain, metadata=metadata))


def canonical_header(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted. safetensors writes its
    `__metadata__` from a hash map whose order changes from process to process, so the same
    tensors and metadata gave different bytes, and different content addresses, in each run."""
    import json
    import struct

    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format's 8-byte alignment of the data that follows
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


class ArtifactStore:
    """The workspace's artifact folder."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.root = workspace / ARTIFACTS

    @property
    def location(self) -> str:
        """Where the files are, as registrations record it (the workspace folder)."""
        return str(self.workspace)

    def store_id(self, *, create: bool) -> str | None:
        """This store's id: a random UUID kept in `<workspace>/workspace-id`, made on first use
        when `create` (None before that). Registrations record it with their run, so a database
        shared by several workspaces knows which store holds each prefix's file (a path alone
        would not do: two machines can use the same workspace path). Two processes creating it
        at once agree: the file is published with a hard link, and the first link wins."""
        path = self.workspace / STORE_ID
        try:
            return path.read_text().strip() or None
        except FileNotFoundError:
            if not create:
                return None
        self.workspace.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.workspace, prefix=TEMP_PREFIX, suffix=".part")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(uuid.uuid4().hex + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process made it first: theirs stands
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path.read_text().strip()

    def put(self, data: bytes, *, suffix: str = SUFFIX) -> StoredFile:
        """Store `data` under its hash (a no-op when an intact copy is already there)."""
        digest = sha256_bytes(data)
        rel = f"{ARTIFACTS}/{digest[:2]}/{digest}{suffix}"
        final = self.workspace / rel
        if final.exists() and self.hash_of(rel) == digest:
            os.utime(final)  # fresh again: `check --repair` spares young unreferenced files
            return StoredFile(rel, digest, len(data))
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=TEMP_PREFIX, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        return StoredFile(rel, digest, len(data), created=True)

    def put_tensors(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> StoredFile:
        return self.put(tensors_to_bytes(tensors, metadata))

    def read_verified(self, rel: str, expected_sha256: str) -> bytes:
        """The bytes of `rel`, or IntegrityError if it is missing or its hash differs."""
        path = self.workspace / rel
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise missing(str(path), expected_sha256) from None
        return verified(data, expected_sha256, str(path))

    def load_tensors(self, rel: str, expected_sha256: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load as load_safetensors

        return load_safetensors(self.read_verified(rel, expected_sha256))

    def hash_of(self, rel: str) -> str | None:
        """The sha256 of the file's bytes, None if it is missing."""
        try:
            with open(self.workspace / rel, "rb") as f:
                return hash_file(f)
        except FileNotFoundError:
            return None

    def files(self) -> Iterator[str]:
        """Every file under the artifact folder (temporary leftovers included), workspace-relative."""
        if not self.root.exists():
            return
        for path in sorted(self.root.rglob("*")):
            if path.is_file():
                yield path.relative_to(self.workspace).as_posix()

    def age_s(self, rel: str, now: float) -> float:
        try:
            return now - (self.workspace / rel).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def remove(self, rel: str) -> None:
        (self.workspace / rel).unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
