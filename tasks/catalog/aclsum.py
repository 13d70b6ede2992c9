"""aclsum: aspect-based summaries of ACL papers (ACLSum), as a generation task.

Each paper has sentences from its abstract, introduction and conclusion, and a one-sentence
summary for each of three aspects: challenge, approach, outcome. Every (paper, aspect) becomes one
example: the input is the aspect name, a colon, then all the sentences joined by spaces (as the
package's own `to_parallel_corpus` joins them), and the target is that aspect's summary. The
official train (100 papers) and val (50) files together are train; the official test file (100)
is eval: 450 and 300 examples.
"""

from __future__ import annotations

import json

from tasks.assets import WheelAsset
from tasks.catalog.base import CatalogEntry, RawSplits, examples, read_text, register
from tasks.spec import Example

ACLSUM = WheelAsset(
    "aclsum", "0.1.2", "c75ffc48d3eabc5f37c68ea087943780a85950087957759e89746f21111f2213"
)
FOLDER = "aclsum/dataset"
ASPECTS = ("challenge", "approach", "outcome")
SECTIONS = ("abstract", "introduction", "conclusion")


def _pairs(asset: WheelAsset, split: str) -> tuple[Example, ...]:
    pairs = []
    for line in read_text(asset, f"{FOLDER}/{split}.jsonl").splitlines():
        if not line.strip():
            continue
        paper = json.loads(line)
        source = " ".join(s for sec in SECTIONS for s in paper["sentences"][sec])
        for aspect in ASPECTS:
            pairs.append((f"{aspect}: {source}", paper["summary"][aspect]))
    return examples(pairs)


def load(asset: WheelAsset) -> RawSplits:
    return RawSplits(
        train=_pairs(asset, "train") + _pairs(asset, "val"),
        eval=_pairs(asset, "test"),
        notes=(("split", "official: train.jsonl + val.jsonl as train, test.jsonl as eval"),),
    )


register(
    CatalogEntry(
        name="aclsum",
        kind="generation",
        description="Summarize the challenge, approach or outcome (named first) of an ACL paper "
        "in one sentence.",
        labels=(),
        licence="MIT",
        provenance=f"{ACLSUM.requirement} wheel, {FOLDER}/{{train,val,test}}.jsonl",
        asset=ACLSUM,
        loader=load,
        text_field="paper",
        target_field="summary",
    )
)
