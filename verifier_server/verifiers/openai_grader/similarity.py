"""The `text_similarity` metrics that need no model, each in [0, 1], written out here because
none of the reference packages (rapidfuzz, nltk, rouge-score) is a dependency. Each follows
the package named beside it, and the tests hold hand-worked values:

- fuzzy_match: rapidfuzz `fuzz.ratio` / 100, the normalised Indel similarity of the two
  strings: 2 * LCS(chars) / (len(a) + len(b)); 1.0 for two empty strings.
- bleu: sentence BLEU (Papineni et al. 2002; nltk `sentence_bleu` defaults): whitespace
  tokens, clipped 1- to 4-gram precisions, geometric mean with equal weights, brevity penalty
  exp(1 - r/c) when the candidate is shorter; 0.0 when any precision is 0 (no smoothing).
- gleu: Google-BLEU (Wu et al. 2016; nltk `sentence_gleu`): matching 1- to 4-grams over
  max(candidate n-grams, reference n-grams).
- rouge_1..rouge_5, rouge_l: rouge-score's F1 (no stemming): lowercase, runs of characters
  other than [a-z0-9] split tokens; n-gram overlap, or the longest common subsequence.

LCS runs bit-parallel (Allison-Dix): one big-integer step per element of the longer text, so
a long completion costs O(n * m / 64) machine words, not a Python loop over n * m cells.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence

_ROUGE_SPLIT = re.compile(r"[^a-z0-9]+")


def fuzzy_match(candidate: str, reference: str) -> float:
    total = len(candidate) + len(reference)
    return 1.0 if total == 0 else 2 * lcs_length(candidate, reference) / total


def bleu(candidate: str, reference: str, max_n: int = 4) -> float:
    hyp, ref = candidate.split(), reference.split()
    if not hyp:
        return 0.0
    log_precisions = []
    for n in range(1, max_n + 1):
        hyp_ngrams = _ngrams(hyp, n)
        matches = sum((hyp_ngrams & _ngrams(ref, n)).values())
        if matches == 0:
            return 0.0
        log_precisions.append(math.log(matches / sum(hyp_ngrams.values())))
    brevity = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return brevity * math.exp(sum(log_precisions) / max_n)


def gleu(candidate: str, reference: str, max_n: int = 4) -> float:
    hyp, ref = candidate.split(), reference.split()
    matches = hyp_total = ref_total = 0
    for n in range(1, max_n + 1):
        hyp_ngrams, ref_ngrams = _ngrams(hyp, n), _ngrams(ref, n)
        matches += sum((hyp_ngrams & ref_ngrams).values())
        hyp_total += sum(hyp_ngrams.values())
        ref_total += sum(ref_ngrams.values())
    return 0.0 if max(hyp_total, ref_total) == 0 else matches / max(hyp_total, ref_total)


def rouge_n(candidate: str, reference: str, n: int) -> float:
    hyp, ref = _ngrams(_rouge_tokens(candidate), n), _ngrams(_rouge_tokens(reference), n)
    overlap = sum((hyp & ref).values())
    return _f1(overlap, sum(hyp.values()), sum(ref.values()))


def rouge_l(candidate: str, reference: str) -> float:
    hyp, ref = _rouge_tokens(candidate), _rouge_tokens(reference)
    return _f1(lcs_length(hyp, ref), len(hyp), len(ref))


METRICS: dict[str, Callable[[str, str], float]] = {
    "fuzzy_match": fuzzy_match,
    "bleu": bleu,
    "gleu": gleu,
    **{f"rouge_{n}": (lambda c, r, n=n: rouge_n(c, r, n)) for n in range(1, 6)},
    "rouge_l": rouge_l,
}


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence, bit-parallel over the shorter sequence."""
    if len(a) < len(b):
        a, b = b, a
    masks: dict[Hashable, int] = {}
    for position, element in enumerate(b):
        masks[element] = masks.get(element, 0) | (1 << position)
    full = (1 << len(b)) - 1
    row = full  # bit j set: column j not yet matched on the LCS frontier
    for element in a:
        match = masks.get(element, 0)
        if match:
            low = row & match
            row = ((row + low) | (row - low)) & full
    return len(b) - row.bit_count()


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _rouge_tokens(text: str) -> list[str]:
    return [token for token in _ROUGE_SPLIT.split(text.lower()) if token]


def _f1(overlap: int, hyp_total: int, ref_total: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / hyp_total, overlap / ref_total
    return 2 * precision * recall / (precision + recall)
