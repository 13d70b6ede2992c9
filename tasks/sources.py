"""Tasks from local data files (JSONL, CSV/TSV, Parquet) or, where a hub is reachable, hub names.

`load_files` is the one entry point. Files are read through the `datasets` library (its cache kept
under the asset cache, never in the working folder) after `tasks.validate` has checked the path
and the bytes; every row is checked before a `TaskData` is returned.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tasks.assets import cache_root
from tasks.errors import ConfigError, DataError
from tasks.spec import KINDS, Example, TaskData, TaskSpec, check_name
from tasks.split import assemble
from tasks.validate import (
    TEXT_ENCODING,
    check_bytes,
    check_fields,
    check_file,
    check_json_lines,
    check_labels,
    check_nonempty,
    check_table,
    rows_to_examples,
    starts_with_bom,
)

# "imdb" or "owner/name": no extension, no leading dot or slash, at most one slash.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_HUB_SPLITS = {"train": ("train",), "eval": ("test", "validation")}


def _datasets_cache() -> str:
    path = cache_root() / "hf-datasets"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _looks_like_hub_id(source: str) -> bool:
    return bool(_HUB_ID.match(source)) and not Path(source).suffix


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Hide `datasets`' progress bars and error logs for one read (we raise our own message)."""
    from datasets.utils import logging as ds_logging

    was_on = ds_logging.is_progress_bar_enabled()
    level = ds_logging.get_verbosity()
    ds_logging.disable_progress_bar()
    ds_logging.set_verbosity(ds_logging.CRITICAL)
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)
        if was_on:
            ds_logging.enable_progress_bar()


def _one_line(e: BaseException) -> str:
    """The innermost cause of `e` as `Type: message` on one line (wrappers say little)."""
    for _ in range(20):  # chains are short; the bound only guards against a cycle
        inner = e.__cause__ or e.__context__
        if inner is None:
            break
        e = inner
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _read_file(path: Path, side: str) -> Any:
    """The whole file as a `datasets.Dataset`, after the path and byte checks."""
    import datasets

    fmt = check_file(path)
    check_bytes(path, split=side)
    options: dict[str, Any] = {}
    if path.suffix.lower() == ".jsonl":
        check_json_lines(path)
    if fmt == "csv":
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        # Every cell as a string: "007" stays "007", "NA" stays "NA", and a label reads the
        # same as it does from JSON; an empty cell is "" and fails the row checks.
        options = {
            "sep": sep,
            "features": _string_features(path, sep),
            "keep_default_na": False,
            "na_filter": False,
            "index_col": False,  # a row with an extra field is an error, not an index
        }
    if fmt in ("json", "csv") and starts_with_bom(path):
        options["encoding"] = TEXT_ENCODING  # the parsers would keep the mark in the first field
    try:
        with _quiet_datasets():
            return datasets.load_dataset(
                fmt, data_files=str(path), split="train", cache_dir=_datasets_cache(), **options
            )
    except (TypeError, AttributeError, NameError):
        raise  # our bug, not the file's
    except ValueError as e:
        if "corresponds to no data" not in str(e):
            raise DataError(_unparsable(path, e)) from None
        raise DataError(
            f"{path}: the {side} split has 0 rows; it needs at least one row of data"
        ) from None
    except Exception as e:  # the parsers raise many types; all mean "this file does not parse"
        raise DataError(_unparsable(path, e)) from None


def _unparsable(path: Path, e: BaseException) -> str:
    return (
        f"{path}: could not be parsed as {path.suffix.lstrip('.').upper()} ({_one_line(e)}); "
        "check the file's format"
    )


def _string_features(path: Path, sep: str) -> Any:
    """`datasets.Features` typing every column of the (checked) CSV/TSV header as a string."""
    import datasets

    header = check_table(path, sep)
    return datasets.Features({c: datasets.Value("string") for c in header})


def _read_hub(name: str, side: str) -> Any:
    """The `train` (or, for eval, `test`/`validation`) split of hub dataset `name`."""
    import datasets

    try:
        with _quiet_datasets():
            found = datasets.load_dataset(name, cache_dir=_datasets_cache())
    except Exception as e:
        raise DataError(
            f"{name}: not a local file, and loading it as a hub dataset failed ({_one_line(e)}); "
            "check the path, or the dataset id and network access"
        ) from None
    for split in _HUB_SPLITS[side]:
        if split in found:
            return found[split]
    raise DataError(
        f"{name}: the hub dataset has no {' or '.join(_HUB_SPLITS[side])} split "
        f"(it has {', '.join(found)}); pass a local file instead"
    )


def _read(source: str | Path, side: str) -> tuple[str, Any]:
    """(name used in messages, dataset) for a local path or a hub id."""
    text = str(source)
    if isinstance(source, str) and not Path(text).exists() and _looks_like_hub_id(text):
        return text, _read_hub(text, side)
    return text, _read_file(Path(source), side)


def _examples(
    where: str, ds: Any, *, text_field: str, target_field: str, kind: str
) -> tuple[Example, ...]:
    check_fields(
        where, ds.column_names, text_field=text_field, target_field=target_field, kind=kind
    )
    targets: Sequence[Any] = ds[target_field]
    feature = ds.features.get(target_field)
    if hasattr(feature, "int2str") and hasattr(feature, "names"):
        # A hub ClassLabel stores ints; its names are the label words.
        targets = [feature.int2str(t) if isinstance(t, int) and t >= 0 else t for t in targets]
    return rows_to_examples(
        where, ds[text_field], targets, text_field=text_field, target_field=target_field, kind=kind
    )


def load_files(
    *,
    name: str,
    train: str | Path,
    eval: str | Path | None = None,
    kind: str = "classification",
    text_field: str = "text",
    target_field: str = "label",
    description: str = "",
    labels: Sequence[str] | None = None,
    seed: int = 0,
    max_train: int | None = None,
    eval_fraction: float = 0.2,
) -> TaskData:
    """Read a task from local files (or hub ids) and return it validated, split and fingerprinted.

    `train` and `eval` are `.jsonl`/`.json`, `.csv`, `.tsv` or `.parquet` files; a string that is
    no existing path but looks like a hub id (`name` or `owner/name`) is loaded with
    `datasets.load_dataset` (its `train` split, or `test`/`validation` for `eval`). Without
    `eval`, a seeded stratified `eval_fraction` of train is held out (recorded in `spec.extra`).
    Label values become words (`str(value).strip()`), ordered as `labels` if given, else sorted.
    `max_train` keeps a seeded stratified subsample of train. For `kind="generation"`,
    `target_field` holds the reference text and the task has no labels.
    """
    check_name(name)
    if kind not in KINDS:
        raise ConfigError(f"task {name}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if text_field == target_field:
        raise ConfigError(f"task {name}: text and target fields are both {text_field!r}")
    if kind == "generation" and labels:
        raise ConfigError(f"task {name}: a generation task takes no labels; drop them")
    if max_train is not None and max_train < 1:
        raise ConfigError(f"task {name}: max_train must be at least 1, got {max_train}")
    if not 0.0 < eval_fraction < 1.0:
        raise ConfigError(
            f"task {name}: eval_fraction must be between 0 and 1, got {eval_fraction}"
        )
    fields = {"text_field": text_field, "target_field": target_field, "kind": kind}

    train_where, train_ds = _read(train, "train")
    train_rows = _examples(train_where, train_ds, **fields)
    check_nonempty(train_where, train_rows, "train")
    eval_where: str | None = None
    eval_rows: tuple[Example, ...] | None = None
    if eval is not None:
        eval_where, eval_ds = _read(eval, "eval")
        eval_rows = _examples(eval_where, eval_ds, **fields)
        check_nonempty(eval_where, eval_rows, "eval")
    elif len(train_rows) < 2:
        raise DataError(
            f"{train_where}: 1 row is too few to hold out an eval split; add rows or pass an "
            "eval file"
        )
    words: tuple[str, ...] = ()
    if kind == "classification":
        words = check_labels(
            train_where,
            train_rows,
            eval_where,
            eval_rows,
            labels=list(labels) if labels is not None else None,
            target_field=target_field,
        )
    source = "files:" + str(train) + (f",{eval}" if eval is not None else "")
    spec = TaskSpec(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        text_field=text_field,
        target_field=target_field,
        labels=words,
        description=description or _default_description(kind, words, text_field, target_field),
        source=source,
        seed=seed,
    )
    return assemble(spec, train_rows, eval_rows, max_train=max_train, eval_fraction=eval_fraction)


def _default_description(kind: str, labels: Sequence[str], text_field: str, target: str) -> str:
    """A one-line task description when the user gives none (used to embed and compare tasks)."""
    if kind == "classification":
        return f"Classify the {text_field} as one of: {', '.join(labels)}."
    return f"Write the {target} for the {text_field}."
