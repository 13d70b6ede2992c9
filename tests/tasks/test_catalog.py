"""The built-in catalog: the registry itself (fast), and every family loaded for real."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

import tasks.catalog as catalog
from tasks.assets import WheelAsset, sha256_file
from tasks.catalog import CatalogEntry, RawSplits
from tasks.errors import ConfigError, DataError
from tasks.spec import Example

FAMILIES = (
    "aclsum",
    "bbc_headlines",
    "bbc_news",
    "boolq",
    "fine_food",
    "hedge_wiki",
    "imdb",
    "medmcqa_subject",
    "news20",
    "pubmedqa",
    "rotten_tomatoes",
    "sarcasm_headlines",
    "sms_spam",
    "stereoset_bias",
    "trec",
    "vader_amazon",
    "vader_movies",
    "vader_nyt",
    "vader_tweets",
    "xsum",
)
FAKE_ASSET = WheelAsset("fake-data", "1.0", "0" * 64)


def fake_entry(name: str, loader, kind: str = "classification") -> CatalogEntry:
    return CatalogEntry(
        name=name,
        kind=kind,
        description="Classify a fake thing as a or b.",
        labels=("a", "b") if kind == "classification" else (),
        licence="none",
        provenance="made up in a test",
        asset=FAKE_ASSET,
        loader=loader,
    )


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, CatalogEntry]:
    """A copy of the registry that a test may add to without touching the real one."""
    entries = dict(catalog.base._ENTRIES)
    monkeypatch.setattr(catalog.base, "_ENTRIES", entries)
    return entries


# ---- the registry (unit) ----


def test_every_family_is_registered_on_import() -> None:
    assert catalog.names() == FAMILIES


def test_entries_are_well_formed() -> None:
    pins: dict[str, str] = {}
    for name in catalog.names():
        entry = catalog.get(name)
        assert entry.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", entry.asset.sha256)
        assert pins.setdefault(entry.asset.requirement, entry.asset.sha256) == entry.asset.sha256
        assert entry.description.endswith(".") and "\n" not in entry.description
        assert entry.licence and entry.provenance.startswith(entry.asset.requirement)
        spec = entry.spec(seed=3)
        assert spec.source == f"catalog:{name}" and spec.seed == 3
        assert dict(spec.extra)["asset_sha256"] == entry.asset.sha256


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown catalog task 'nope'; known tasks: aclsum, "):
        catalog.get("nope")


def test_duplicate_name_is_refused(registry) -> None:
    with pytest.raises(ConfigError, match="already registered"):
        catalog.register(fake_entry("trec", lambda asset: RawSplits(train=())))


def test_entry_checks_its_kind_and_labels() -> None:
    with pytest.raises(ConfigError):
        fake_entry("x", lambda a: RawSplits(train=()), kind="regression")
    with pytest.raises(ConfigError):
        CatalogEntry("x", "generation", "One line.", ("a", "b"), "l", "p", FAKE_ASSET, print)


def test_load_splits_caches_and_reuses_parsed_rows(registry, cache: Path) -> None:
    calls = []

    def loader(asset: WheelAsset) -> RawSplits:
        calls.append(asset)
        rows = tuple(Example(f"{y} {i}", y) for i in range(10) for y in "ab")
        return RawSplits(train=rows, notes=(("dropped", "nothing"),))

    catalog.register(fake_entry("fake", loader))
    first = catalog.load("fake", seed=1)
    again = catalog.load("fake", seed=1)
    other = catalog.load("fake", seed=2, max_train=4)
    assert len(calls) == 1
    assert first == again and first.fingerprint != other.fingerprint
    assert (len(first.train), len(first.eval)) == (16, 4)
    assert (len(other.train), len(other.eval)) == (4, 4)
    extra = dict(other.spec.extra)
    assert extra["eval_split"] == "seeded stratified 20% of train, seed 2"
    assert extra["dropped"] == "nothing" and extra["asset"] == "fake-data==1.0"
    cached = list((cache / "datasets" / "fake").iterdir())
    assert [p.name for p in cached] == [f"{'0' * 16}-v{catalog.CACHE_VERSION}"]
    assert sorted(p.name for p in cached[0].iterdir()) == ["meta.json", "train.jsonl"]


def test_load_reports_a_split_emptied_by_dropping(registry, cache: Path) -> None:
    catalog.register(fake_entry("fake", lambda asset: RawSplits(train=())))
    with pytest.raises(DataError, match="0 rows after dropping rows without text or label"):
        catalog.load("fake")


# ---- every family, loaded for real (integration) ----

# name -> (train + eval rows, label counts over both, official (train, eval) sizes or None)
EXPECTED: dict[str, tuple[int, dict[str, int] | None, tuple[int, int] | None]] = {
    "sms_spam": (4837, {"ham": 4199, "spam": 638}, None),
    "trec": (5952, None, (5452, 500)),
    "vader_tweets": (4196, None, None),
    "vader_movies": (10568, None, None),
    "vader_amazon": (3456, None, None),
    "vader_nyt": (4939, None, None),
    "imdb": (50000, {"negative": 25000, "positive": 25000}, None),
    "bbc_news": (
        2225,
        {"sport": 511, "business": 510, "politics": 417, "tech": 401, "entertainment": 386},
        None,
    ),
    "bbc_headlines": (2225, None, None),
    "news20": (18821, None, (11293, 7528)),
    "rotten_tomatoes": (12808, {"positive": 7403, "negative": 5405}, None),
    "aclsum": (750, None, (450, 300)),
    # the held-out suite (bench.prefix_quality): sources no default was tuned on
    "hedge_wiki": (2670, {"uncertain": 1499, "certain": 1171}, None),
    "boolq": (12697, {"yes": 7907, "no": 4790}, (9427, 3270)),
    "pubmedqa": (945, {"yes": 739, "no": 206}, None),
    "medmcqa_subject": (9298, None, None),
    "stereoset_bias": (
        4229,
        {"race": 1938, "profession": 1637, "gender": 497, "religion": 157},
        None,
    ),
    "sarcasm_headlines": (28498, {"sarcastic": 13548, "plain": 14950}, None),
    "fine_food": (4993, {"other": 1738, "great": 3255}, (4000, 993)),
    "xsum": (999, None, None),
}


@pytest.mark.integration
@pytest.mark.parametrize("name", FAMILIES)
def test_family_loads_with_the_documented_rows(name: str, fresh_parse_cache: Path) -> None:
    entry = catalog.get(name)
    task = catalog.load(name, seed=0)
    total, label_counts, official = EXPECTED[name]
    assert len(task.train) + len(task.eval) == total
    assert all(
        ex.text and ex.text == ex.text.strip() and ex.target for ex in task.train + task.eval
    )
    if official is not None:
        assert (len(task.train), len(task.eval)) == official
        assert "eval_split" not in dict(task.spec.extra)
    else:
        assert len(task.eval) == pytest.approx(total * 0.2, abs=len(entry.labels) + 1)
        assert dict(task.spec.extra)["eval_split"].endswith("of train, seed 0")
    if entry.kind == "classification":
        counts = Counter(ex.target for ex in task.train + task.eval)
        assert set(counts) == set(entry.labels) == set(task.spec.labels)
        assert {ex.target for ex in task.eval} <= {ex.target for ex in task.train}
        if label_counts is not None:
            assert counts == label_counts
    else:
        assert task.spec.labels == ()
    assert catalog.load(name, seed=0) == task  # second load, from the parse cache


@pytest.mark.integration
def test_family_details(fresh_parse_cache: Path) -> None:
    trec = catalog.load("trec")
    assert trec.train[4] == Example("What is the full form of .com ?", "abbreviation")
    assert Counter(ex.target for ex in trec.eval)["description"] == 138
    vader = catalog.load("vader_tweets")
    assert Counter(ex.target for ex in vader.train + vader.eval) == {
        "positive": 2897,
        "negative": 1299,
    }
    news = catalog.load("bbc_headlines")
    assert any(ex.target == "Claxton hunting first major medal" for ex in news.train + news.eval)
    assert all("\n" not in ex.target for ex in news.train)
    bbc = catalog.load("bbc_news")
    text = next(ex.text for ex in bbc.train + bbc.eval if "Mutu, a " in ex.text)
    assert "Mutu, a \u00a315.8m signing" in text  # the one latin-1 file decodes
    acl = catalog.load("aclsum")
    assert {ex.text.split(":")[0] for ex in acl.eval} == {"challenge", "approach", "outcome"}
    imdb = catalog.load("imdb", max_train=100)
    assert len(imdb.train) == 100 and all("<br" not in ex.text for ex in imdb.train)
    assert Counter(ex.target for ex in imdb.train) == {"negative": 50, "positive": 50}


@pytest.mark.integration
def test_fetch_returns_the_verified_wheel(fresh_parse_cache: Path) -> None:
    path = catalog.fetch("trec")
    assert path.is_file() and sha256_file(path) == catalog.get("trec").asset.sha256
