"""Where prefix files and stored task data live: the workspace folder (default) or any fsspec URL
(`s3://bucket/prefix`, `gs://…`, a shared mount as `file:///mnt/shared/continual`), so several
machines sharing one PostgreSQL registry also share the files its rows name.

    reg = Registry.open(home, url="postgresql+psycopg://…", store="s3://team-bucket/continual")

Both stores keep the same layout under their root (`artifacts/ab/<sha256><suffix>`, and the
store's id in `workspace-id`), so a row's path means the same file in either, and both give the
same guarantees to the registry: a file is named by the sha256 of its bytes, written whole before
the row that names it is committed (an object PUT is atomic; on a mount, a temporary file renamed
into place), and every read re-hashes the bytes and refuses a mismatch. S3 credentials and the
endpoint come from the usual places (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, ~/.aws/...).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.artifacts import (
    ARTIFACTS,
    STORE_ID,
    SUFFIX,
    ArtifactStore,
    StoredFile,
    hash_file,
    missing,
    sha256_bytes,
    tensors_to_bytes,
    verified,
)
from tasks.errors import ConfigError

if TYPE_CHECKING:
    import torch


def open_store(workspace: Path, url: str | None) -> ArtifactStore | FsspecStore:
    """The workspace's own folder when `url` is empty, else the fsspec store at `url`."""
    if not url:
        return ArtifactStore(workspace)
    return FsspecStore(url)


class FsspecStore:
    """The artifact store at an fsspec URL (the methods and guarantees of `ArtifactStore`)."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url.rstrip("/")
        try:
            # no cached instance or listings: other machines write to the same store
            self.fs, self.root = fsspec.core.url_to_fs(
                self.url, skip_instance_cache=True, use_listings_cache=False
            )
        except (ImportError, ValueError) as e:
            raise ConfigError(
                f"store {url}: {str(e).splitlines()[0]}; install the filesystem's package "
                "(s3fs for s3://, gcsfs for gs://) or check the URL"
            ) from None
        self.root = self.root.rstrip("/")
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else ())

    @property
    def location(self) -> str:
        return self.url

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def _where(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def store_id(self, *, create: bool) -> str | None:
        """The store's id (`workspace-id` at its root), made on first use when `create`."""
        path = self._path(STORE_ID)
        try:
            return self.fs.cat_file(path).decode().strip() or None
        except FileNotFoundError:
            if not create:
                return None
        if self.local:
            self.fs.makedirs(self.root, exist_ok=True)
        # Two first users at once may both write; each then reads back what stands (the store
        # has no create-if-absent on every backend), so at worst one registration records an
        # id that the other replaced: `check` then treats its file as another store's.
        self.fs.pipe_file(path, (uuid.uuid4().hex + "\n").encode())
        return self.fs.cat_file(path).decode().strip()

    def put(self, data: bytes, *, suffix: str = SUFFIX) -> StoredFile:
        """Store `data` under its hash (a no-op when an intact copy is already there)."""
        digest = sha256_bytes(data)
        rel = f"{ARTIFACTS}/{digest[:2]}/{digest}{suffix}"
        if self.hash_of(rel) == digest:
            return StoredFile(rel, digest, len(data))
        path = self._path(rel)
        if self.local:  # a mount: write aside, then rename into place (atomic on one filesystem)
            self.fs.makedirs(self._path(f"{ARTIFACTS}/{digest[:2]}"), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex}.part"
            self.fs.pipe_file(tmp, data)
            os.replace(tmp, path)
        else:  # an object store's PUT is atomic: readers see the whole object or none
            self.fs.pipe_file(path, data)
        return StoredFile(rel, digest, len(data), created=True)

    def put_tensors(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> StoredFile:
        return self.put(tensors_to_bytes(tensors, metadata))

    def read_verified(self, rel: str, expected_sha256: str) -> bytes:
        """The bytes of `rel`, or IntegrityError if it is missing or its hash differs."""
        try:
            data = self.fs.cat_file(self._path(rel))
        except FileNotFoundError:
            raise missing(self._where(rel), expected_sha256) from None
        return verified(data, expected_sha256, self._where(rel))

    def load_tensors(self, rel: str, expected_sha256: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load as load_safetensors

        return load_safetensors(self.read_verified(rel, expected_sha256))

    def hash_of(self, rel: str) -> str | None:
        """The sha256 of the file's bytes, None if it is missing."""
        try:
            with self.fs.open(self._path(rel), "rb") as f:
                return hash_file(f)
        except FileNotFoundError:
            return None

    def files(self) -> Iterator[str]:
        """Every file under the artifact folder, relative to the store's root."""
        base = self._path(ARTIFACTS)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return
        for path in sorted(found):
            yield path[len(self.root) + 1 :]

    def age_s(self, rel: str, now: float) -> float:
        try:
            info: dict[str, Any] = self.fs.info(self._path(rel))
        except FileNotFoundError:
            return 0.0
        when = info.get("LastModified") or info.get("mtime") or info.get("created")
        if isinstance(when, datetime):
            return now - when.timestamp()
        return now - float(when) if when is not None else 0.0

    def remove(self, rel: str) -> None:
        try:
            self.fs.rm_file(self._path(rel))
        except FileNotFoundError:
            pass
