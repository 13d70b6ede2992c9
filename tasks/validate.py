"""Checks on task data before anything is trained on it.

Every problem raises `DataError` with one line that names the input (file or wheel member), the
place (1-based data row, or field) and the fix, e.g.

    data/train.jsonl: row 7: field 'label' is missing; every row needs it (or pass --label-field)

Data rows are counted from 1 and do not include a CSV header line. Local files are checked in the
order they are read: the path, the bytes (valid UTF-8), the fields, each row, then the splits
together (non-empty, enough labels, no eval label that training never sees).
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tasks.errors import DataError
from tasks.spec import Example

# Extension -> the `datasets` packaged builder that reads it.
FORMATS: dict[str, str] = {
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
}
# Text files are read as "utf-8-sig": plain UTF-8, less a leading byte-order mark (what Windows
# tools and spreadsheet exports write first). CRLF line ends need nothing: the csv module and
# JSON both take "\r\n" as a line end or whitespace.
TEXT_ENCODING = "utf-8-sig"
BOM = b"\xef\xbb\xbf"
TEXT_FLAG = "--text-field"
TARGET_FLAG = {"classification": "--label-field", "generation": "--target-field"}


def check_file(path: Path) -> str:
    """Return the `datasets` builder for `path` after checking it exists and is a known format."""
    if not path.exists():
        raise DataError(
            f"{path}: file not found; check the path (it is read relative to {Path.cwd()})"
        )
    if not path.is_file():
        raise DataError(
            f"{path}: is a folder, not a data file; name a .jsonl, .csv, .tsv or .parquet file"
        )
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; "
            f"convert it to one of {', '.join(FORMATS)}"
        )
    return fmt


def starts_with_bom(path: Path) -> bool:
    """Whether the file begins with a UTF-8 byte-order mark."""
    with open(path, "rb") as f:
        return f.read(len(BOM)) == BOM


def check_bytes(path: Path, *, split: str = "train", chunk: int = 1 << 20) -> None:
    """Fail on an empty file, or on the first byte that is not UTF-8 (naming line and offset).

    Done on the raw bytes because the parsers' own messages name neither. Parquet is only checked
    for being empty: its strings are UTF-8 by the format's definition.
    """
    if path.suffix.lower() == ".parquet":
        if path.stat().st_size == 0:
            raise DataError(f"{path}: the file is empty; the {split} split needs at least one row")
        return
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset, lines, blank = 0, 1, True
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            pending = len(decoder.getstate()[0])  # an unfinished character from the last block
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                # e.object is the pending bytes + this block; the pending bytes hold no newline.
                line = lines + e.object.count(b"\n", 0, e.start)
                if offset == 0 and block[:2] in (b"\xff\xfe", b"\xfe\xff"):
                    raise DataError(
                        f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); "
                        "re-save it as UTF-8, e.g. iconv -f utf-16 -t utf-8"
                    ) from None
                raise DataError(
                    f"{path}: line {line} (byte offset {offset - pending + e.start}) is not valid "
                    f"UTF-8 (byte 0x{e.object[e.start]:02x}); re-save the file as UTF-8, "
                    "e.g. iconv -f latin1 -t utf-8"
                ) from None
            if not block:
                break
            blank = blank and not block.strip()
            offset += len(block)
            lines += block.count(b"\n")
    if blank:
        raise DataError(f"{path}: the file is empty; the {split} split needs at least one row")


def check_table(path: Path, sep: str) -> list[str]:
    """The header of a CSV/TSV file, after checking every data row has as many fields.

    The parser would otherwise drop or shift extra fields with only a warning. Blank lines are
    skipped (and not counted as rows), as the parser does.
    """
    with open(path, encoding=TEXT_ENCODING, newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next(reader, [])
        if not header:
            raise DataError(f"{path}: the file is empty; it needs a header line naming the fields")
        if len(set(header)) != len(header):
            raise DataError(f"{path}: the header repeats a field name ({header}); make them unique")
        row = 0
        try:
            for cells in reader:
                if not cells:
                    continue
                row += 1
                if len(cells) != len(header):
                    raise DataError(
                        f"{path}: row {row}: has {len(cells)} fields but the header has "
                        f"{len(header)}; quote any value containing {sep!r} and give every row "
                        "all fields"
                    )
        except csv.Error as e:
            raise DataError(f"{path}: after row {row}: {e}; check the quoting") from None
    return header


def check_json_lines(path: Path) -> None:
    """Fail on the first JSONL line that is not a JSON object, naming its row."""
    row = 0
    with open(path, encoding=TEXT_ENCODING) as f:
        for line in f:
            if not line.strip():
                continue
            row += 1
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}: row {row}: not valid JSON ({e.msg} at column {e.colno}); "
                    "each line must be one JSON object"
                ) from None
            if not isinstance(value, dict):
                raise DataError(
                    f"{path}: row {row}: is a JSON {type(value).__name__}, not an object; "
                    'each line must look like {"text": ..., "label": ...}'
                )


def check_fields(
    where: str, columns: Sequence[str], *, text_field: str, target_field: str, kind: str
) -> None:
    """Fail when the text or target field is not a column of the data, listing the ones there."""
    for field, flag in ((text_field, TEXT_FLAG), (target_field, TARGET_FLAG[kind])):
        if field not in columns:
            have = ", ".join(repr(c) for c in columns) or "none"
            raise DataError(
                f"{where}: field {field!r} is missing (fields present: {have}); "
                f"rename the column or pass {flag}"
            )


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or not str(value).strip()


def rows_to_examples(
    where: str,
    texts: Sequence[Any],
    targets: Sequence[Any],
    *,
    text_field: str,
    target_field: str,
    kind: str,
) -> tuple[Example, ...]:
    """Turn column values into examples, failing on the first row with a missing or blank value.

    Text and target are `str(value)` with surrounding whitespace stripped, so a label 1 read from
    JSON and "1" read from CSV become the same word.
    """
    out: list[Example] = []
    flag = TARGET_FLAG[kind]
    for row, (text, target) in enumerate(zip(texts, targets, strict=True), start=1):
        if _blank(target):
            raise DataError(
                f"{where}: row {row}: field {target_field!r} is missing or empty; every row needs "
                f"it (fill it in, drop the row, or pass {flag})"
            )
        for field, value in ((target_field, target), (text_field, text)):
            if isinstance(value, (list, tuple, dict, set)) or getattr(value, "ndim", 0) > 0:
                raise DataError(
                    f"{where}: row {row}: field {field!r} is a {type(value).__name__}, not one "
                    "text or word; give each row a single value"
                )
        if text is None or (isinstance(text, float) and text != text):
            raise DataError(
                f"{where}: row {row}: field {text_field!r} is missing; every row needs it "
                f"(fill it in, drop the row, or pass {TEXT_FLAG})"
            )
        if not str(text).strip():
            raise DataError(
                f"{where}: row {row}: field {text_field!r} is empty or blank; "
                "give the row some text or drop it"
            )
        out.append(Example(text=str(text).strip(), target=str(target).strip()))
    return tuple(out)


def check_nonempty(
    where: str, examples: Sequence[Example], split: str, *, dropped: str = ""
) -> None:
    """Fail when a split has no rows (`dropped` says what filtering removed, if any)."""
    if not examples:
        after = f" after dropping {dropped}" if dropped else ""
        raise DataError(
            f"{where}: the {split} split has 0 rows{after}; it needs at least one row "
            "(check the file is the one you meant)"
        )


def check_labels(
    train_where: str,
    train: Sequence[Example],
    eval_where: str | None,
    eval: Sequence[Example] | None,
    *,
    labels: Sequence[str] | None = None,
    target_field: str = "label",
) -> tuple[str, ...]:
    """Check classification labels; return their order (`labels` if given, else `label_order`).

    Fails on a label outside the given `labels` ("unknown label"), on fewer than two distinct
    training labels, and on an eval label that never occurs in training ("unseen label": the
    model could never predict it).
    """
    sides: list[tuple[str, Sequence[Example]]] = [(train_where, train)]
    if eval is not None and eval_where is not None:
        sides.append((eval_where, eval))
    if labels is not None:
        allowed = set(labels)
        for where, rows in sides:
            for row, ex in enumerate(rows, start=1):
                if ex.target not in allowed:
                    raise DataError(
                        f"{where}: row {row}: unknown label {ex.target!r} in field "
                        f"{target_field!r}; the given labels are {list(labels)}: add it to them "
                        "or fix the row"
                    )
    seen = set(_targets(train))
    if len(seen) < 2:
        raise DataError(
            f"{train_where}: field {target_field!r} has {len(seen)} distinct label(s) "
            f"({', '.join(sorted(seen)) or 'none'}); classification needs at least 2: add rows "
            "of another class or use kind 'generation'"
        )
    if eval is not None and eval_where is not None:
        for row, ex in enumerate(eval, start=1):
            if ex.target not in seen:
                raise DataError(
                    f"{eval_where}: row {row}: unseen label {ex.target!r} never occurs in the "
                    f"train data ({train_where}); add training rows with it or drop the row"
                )
    return tuple(labels) if labels is not None else label_order(seen)


def label_order(labels: Iterable[str]) -> tuple[str, ...]:
    """Labels sorted: by number when every label is an integer ("2" before "10"), else as text."""
    unique = set(labels)
    if all(_is_int(x) for x in unique):
        return tuple(sorted(unique, key=int))
    return tuple(sorted(unique))


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _targets(rows: Iterable[Example]) -> Iterable[str]:
    return (ex.target for ex in rows)
