"""Task data kept by the registry: an arriving task's examples, stored once, content-addressed.

    record = reg.data.put(data)                 # TaskData -> DatasetRecord (idempotent)
    data = reg.data.get(record.sha256)          # the same TaskData, fingerprint checked

Every re-evaluation reads a task's examples from here, so deleting or editing the user's
source file afterwards changes nothing, and a worker on another machine needs no access to the
user's paths. The file is gzip-compressed JSON lines (gzip's timestamp zeroed, so equal data
gives equal bytes and one file): a header line with the format, the task spec and the data
fingerprint, then one `[split, text, target]` line per example, the same lines the data
fingerprint hashes. It lives in the artifact store beside the prefixes (`artifacts/ab/<sha256>
.data.jsonl.gz`), written atomically before the row that points at it is committed.
"""

from __future__ import annotations

import gzip
import io
import json
from typing import TYPE_CHECKING, Any

from registry.artifacts import StoredFile, undone_on_error
from registry.records import DatasetRecord
from registry.uow import Database
from tasks.errors import IntegrityError
from tasks.spec import Example, TaskData, TaskSpec
from tasks.split import fingerprint

if TYPE_CHECKING:
    from registry.artifacts import ArtifactStore
    from registry.blobs import FsspecStore

FORMAT = "continual.data/1"
SUFFIX = ".data.jsonl.gz"


def encode(data: TaskData) -> bytes:
    """The stored bytes of `data` (deterministic)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz:
        header = {
            "format": FORMAT,
            "spec": data.spec.to_dict(),
            "fingerprint": data.fingerprint,
            "n_train": len(data.train),
            "n_eval": len(data.eval),
        }
        gz.write((json.dumps(header, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))
        for side, rows in (("train", data.train), ("eval", data.eval)):
            for ex in rows:
                line = json.dumps([side, ex.text, ex.target], ensure_ascii=False)
                gz.write(line.encode("utf-8") + b"\n")
    return buf.getvalue()


def decode(blob: bytes, where: str) -> TaskData:
    """The TaskData in `blob`, refusing a file whose examples do not hash to its fingerprint."""
    try:
        # "\n" only: str.splitlines() also breaks at \r, \x85, \u2028 ... inside the texts
        lines = gzip.decompress(blob).decode("utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        header = json.loads(lines[0])
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')!r} is not {FORMAT!r}")
        train: list[Example] = []
        eval_: list[Example] = []
        for line in lines[1:]:
            side, text, target = json.loads(line)
            (train if side == "train" else eval_).append(Example(text=text, target=target))
        spec = TaskSpec.from_dict(header["spec"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise IntegrityError(f"stored task data {where} cannot be read: {e}") from None
    found = fingerprint(train, eval_)
    if found != header["fingerprint"]:
        raise IntegrityError(
            f"stored task data {where}: examples hash to {found[:12]}…, the file says "
            f"{header['fingerprint'][:12]}…"
        )
    return TaskData(spec=spec, train=tuple(train), eval=tuple(eval_), fingerprint=found)


class DataStore:
    """Stored task data of one registry: files in the artifact store, rows in `datasets`."""

    def __init__(self, db: Database, artifacts: ArtifactStore | FsspecStore) -> None:
        self.db = db
        self.artifacts = artifacts

    def stage(self, data: TaskData, written: list[StoredFile] | None = None) -> dict[str, Any]:
        """Write `data`'s file (atomically) and return the `datasets` row that will point at it,
        for a caller that commits the row with its own (e.g. a job's) in one unit of work.
        The file is added to `written` (see `registry.artifacts.undone_on_error`)."""
        stored = self.artifacts.put(encode(data), suffix=SUFFIX)
        if written is not None:
            written.append(stored)
        return {
            "sha256": stored.sha256,
            "path": stored.path,
            "n_bytes": stored.n_bytes,
            "n_train": len(data.train),
            "n_eval": len(data.eval),
            "fingerprint": data.fingerprint,
            "format": FORMAT,
        }

    def put(self, data: TaskData) -> DatasetRecord:
        """Store `data` (a no-op when the same bytes are stored); returns its record."""
        with undone_on_error(self.artifacts, self.db) as written:
            row = self.stage(data, written)
            self.db.write(lambda uow: uow.datasets.add(**row), retry_conflicts=True)
        return self.record(row["sha256"])

    def attach(self, prefix_id: int, data: TaskData) -> DatasetRecord:
        """Store `data` as the data of a prefix registered before the data store existed (its
        first re-evaluation reads it from the user's files once, then never again)."""
        record = self.put(data)
        self.db.write(lambda uow: uow.prefixes.set_data(prefix_id, record.sha256))
        return record

    def count(self) -> int:
        """How many datasets the registry stores."""
        return len(self.db.read(lambda uow: uow.datasets.paths()))

    def record(self, sha256: str) -> DatasetRecord:
        found = self.db.read(lambda uow: uow.datasets.get(sha256))
        if found is None:
            raise IntegrityError(f"stored task data {sha256[:12]}… is not in the registry")
        return found

    def get(self, sha256: str) -> TaskData:
        """The stored data, its bytes and examples verified."""
        record = self.record(sha256)
        blob = self.artifacts.read_verified(record.path, record.sha256)
        return decode(blob, f"{record.path}")
