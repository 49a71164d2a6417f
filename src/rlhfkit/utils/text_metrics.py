"""Text metrics shared by the tasks' rewards and the evaluation: n-gram repetition and ROUGE.

A neutral module so that ``rlhfkit.tasks`` needs nothing from ``rlhfkit.eval`` (eval imports tasks).
ROUGE: Lin (2004) through rouge-score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous n-grams of a token list."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repetition_rate(text: str, n: int = 2) -> float:
    """Fraction of a single text's n-grams that repeat an earlier one (0 = none, ->1 = a loop)."""
    grams = ngrams(text.split(), n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def reference_streams(references: Sequence[str] | Sequence[Sequence[str]], n_hyp: int) -> list[list[str]]:
    """Normalize one-or-many references per hypothesis into a list per hypothesis."""
    if len(references) != n_hyp:
        raise ValueError(f"got {n_hyp} hypotheses but {len(references)} reference entries")
    return [[ref] if isinstance(ref, str) else list(ref) for ref in references]


def _rouge_scorer() -> Any:
    """A shared ROUGE-1/2/L scorer (rouge-score's default tokenizer, no stemming)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)


def rouge_per_item(hypotheses: Sequence[str],
                   references: Sequence[str] | Sequence[Sequence[str]]) -> list[dict[str, float]]:
    """ROUGE-1/2/L F1 per hypothesis (the best over its references), each in [0, 1]."""
    refs = reference_streams(references, len(hypotheses))
    scorer = _rouge_scorer()
    out = []
    for hyp, targets in zip(hypotheses, refs):
        if not targets:
            raise ValueError("rouge: every hypothesis needs at least one reference")
        scores = scorer.score_multi(targets, hyp)
        out.append({name: float(s.fmeasure) for name, s in scores.items()})
    return out
