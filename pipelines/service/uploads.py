"""`POST /v1/datasets`: a multipart upload streamed to disk, validated, stored by content.

The body is read chunk by chunk and refused (413) as soon as it passes the size limit. Each
file lands in a private folder under the workspace (`uploads/<random>/<its own name>`), is read
by `tasks.sources.load_files`, the very checks and one-line messages of `continual train
--train FILE`, and is stored in the registry's data store; the folder is removed whatever
happens, so a refused upload leaves nothing behind.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from registry import DatasetRecord, Registry
from tasks.errors import DataError
from tasks.sources import load_files
from tasks.spec import TaskData

FIELDS = ("train", "eval", "text_field", "label_field", "target_field", "kind", "name")


class TooLarge(Exception):
    pass


async def read_form(request: Request, limit: int) -> dict[str, Any]:
    """The multipart form, refused past `limit` bytes; files stay spooled on disk."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge()

    async def limited() -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                raise TooLarge()
            yield chunk

    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        raise DataError("send the dataset as multipart/form-data with a 'train' file")
    try:
        form = await MultiPartParser(request.headers, limited(), max_files=2, max_fields=16).parse()
    except MultiPartException as e:
        raise DataError(f"the upload is not valid multipart/form-data: {e.message}") from None
    unknown = [k for k in form.keys() if k not in FIELDS]
    if unknown:
        raise DataError(f"unknown form field {unknown[0]!r}; known: {', '.join(FIELDS)}")
    return dict(form.items())


def safe_name(name: str | None, fallback: str) -> str:
    """A file name to write under (its suffix kept: it tells the format). A name with a
    folder in it (`../../x.jsonl`, `C:\\data\\x.csv`) is refused, not trimmed: no client sends
    one for an honest upload."""
    if name and ("/" in name or "\\" in name or name.startswith("..")):
        raise DataError(
            f"upload file name {name[:80]!r} has a folder in it; send a plain file name such "
            "as train.jsonl"
        )
    base = Path(name or "").name
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    return cleaned[:120] or fallback


def validate(form: dict[str, Any], workspace: Path) -> TaskData:
    """Write the uploaded files to a private folder, read them as `train --train` would."""
    train = form.get("train")
    if not isinstance(train, UploadFile):
        raise DataError("the upload needs a 'train' file (JSONL, CSV/TSV or Parquet)")
    eval_ = form.get("eval")
    if eval_ is not None and not isinstance(eval_, UploadFile):
        raise DataError("'eval' must be a file, not a text field")
    text = {k: form.get(k) for k in FIELDS[2:]}
    for k, v in text.items():
        if v is not None and not isinstance(v, str):
            raise DataError(f"form field {k!r} must be text, not a file")
    if text["label_field"] and text["target_field"]:
        raise DataError("give label_field or target_field, not both")
    kind = text["kind"] or "classification"
    folder = workspace / "uploads" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        paths = {}
        for side, up in (("train", train), ("eval", eval_)):
            if up is None:
                continue
            name = safe_name(up.filename, f"{side}.jsonl")
            if side == "eval" and name == paths["train"].name:
                name = f"eval-{name}"
            path = folder / name
            with open(path, "wb") as out:
                up.file.seek(0)
                shutil.copyfileobj(up.file, out, 1 << 20)
            paths[side] = path
        try:
            data = load_files(
                name=text["name"] or "upload",
                train=paths["train"],
                eval=paths.get("eval"),
                kind=kind,
                text_field=text["text_field"] or "text",
                target_field=(
                    text["label_field"]
                    or text["target_field"]
                    or ("label" if kind == "classification" else "target")
                ),
            )
        except DataError as e:  # name the user's file, not the folder it was written to
            raise DataError(str(e).replace(f"{folder}/", "")) from None
        # The spec says "upload", not the private folder: equal data is stored once, one id.
        return TaskData(
            spec=data.spec.with_(source="upload"),
            train=data.train,
            eval=data.eval,
            fingerprint=data.fingerprint,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def store(reg: Registry, data: TaskData) -> dict[str, Any]:
    return describe(reg.data.put(data), data)


def describe(record: DatasetRecord, data: TaskData) -> dict[str, Any]:
    """A stored dataset as the API shows it (the upload's answer and GET /v1/datasets/{id})."""
    return {
        "id": record.sha256,
        "sha256": record.sha256,
        "rows": record.n_train + record.n_eval,
        "train": record.n_train,
        "eval": record.n_eval,
        "kind": data.spec.kind,
        "labels": list(data.spec.labels),
        "fingerprint": record.fingerprint,
        "created_at": record.created_at.isoformat(),
    }


def where_in(message: str) -> dict[str, Any]:
    """The field and row a one-line data error names, for the JSON error body."""
    row = re.search(r"\b(?:row|line) (\d+)", message)
    field = re.search(r"field '([^']+)'", message)
    return {"field": field.group(1) if field else None, "row": int(row.group(1)) if row else None}
