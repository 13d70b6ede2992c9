"""Scores of predictions against references, all in [0, 1]: accuracy, ROUGE-L F1 and BLEU-4.

Text metrics work on lower-cased word tokens (letters and digits), so punctuation and case do
not count. BLEU is corpus-level BLEU-4 with add-one smoothing of the higher n-gram precisions
(Lin & Och 2004), which keeps short outputs from scoring exactly zero.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    if not references:
        return 0.0
    return sum(p == r for p, r in zip(predictions, references)) / len(references)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of one prediction: longest common subsequence of words."""
    p, r = words(prediction), words(reference)
    if not p or not r:
        return float(p == r)
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def mean_rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    if not references:
        return 0.0
    return sum(rouge_l(p, r) for p, r in zip(predictions, references)) / len(references)


def bleu(predictions: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU-4 (one reference per prediction), smoothed for n > 1."""
    matches, totals = [0] * max_n, [0] * max_n
    pred_len = ref_len = 0
    for pred, ref in zip(predictions, references):
        p, r = words(pred), words(ref)
        pred_len, ref_len = pred_len + len(p), ref_len + len(r)
        for n in range(1, max_n + 1):
            pn = Counter(tuple(p[i : i + n]) for i in range(len(p) - n + 1))
            rn = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
            matches[n - 1] += sum(min(c, rn[g]) for g, c in pn.items())
            totals[n - 1] += max(len(p) - n + 1, 0)
    if pred_len == 0 or matches[0] == 0:
        return 0.0
    logs = [math.log(matches[0] / totals[0])]
    logs += [math.log((matches[i] + 1) / (totals[i] + 1)) for i in range(1, max_n)]
    brevity = 1.0 if pred_len > ref_len else math.exp(1 - ref_len / pred_len)
    return brevity * math.exp(sum(logs) / max_n)


def predictions_sha256(predictions: Sequence[str]) -> str:
    """sha256 of the predictions in order: equal hashes mean identical predictions."""
    return hashlib.sha256(json.dumps(list(predictions), ensure_ascii=False).encode()).hexdigest()
