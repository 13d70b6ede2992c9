"""Fixtures for the tasks tests: a private asset cache, and small data files."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.assets import cache_root


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty asset cache for one test, so nothing leaks into the user's cache."""
    root = tmp_path / "cache"
    monkeypatch.setenv("CONTINUAL_CACHE", str(root))
    return root


@pytest.fixture
def data_dir(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder for data files, also the working directory (to catch stray cache files)."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


@pytest.fixture(scope="session")
def fresh_parse_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache that shares the real wheel folder but not its parsed rows, so parsing runs."""
    real_wheels = cache_root() / "wheels"
    real_wheels.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("catalog-cache")
    (root / "wheels").symlink_to(real_wheels, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONTINUAL_CACHE", str(root))
        yield root


Rows = list[dict[str, object]]


@pytest.fixture
def jsonl(data_dir: Path):
    """Write rows to `data_dir/<name>` as JSON lines; returns the path."""

    def write(name: str, rows: Rows) -> Path:
        path = data_dir / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    return write


@pytest.fixture
def csvfile(data_dir: Path):
    """Write a header and rows to `data_dir/<name>` as CSV (TSV for a .tsv name)."""

    def write(name: str, header: list[str], rows: list[list[object]]) -> Path:
        path = data_dir / name
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t" if name.endswith(".tsv") else ",")
            w.writerow(header)
            w.writerows(rows)
        return path

    return write


@pytest.fixture
def sentiment() -> Rows:
    """20 rows, 10 `pos` and 10 `neg`, with distinct texts."""
    return [
        {"text": f"{word} film number {i}", "label": label}
        for i in range(10)
        for word, label in (("good", "pos"), ("bad", "neg"))
    ]
