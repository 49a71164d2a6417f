"""Text-quality penalties shared by the gold rewards, so reward hacking by degenerate text never wins.

A policy optimized against a learned reward finds cheap tricks: empty answers, one word repeated,
run-on text up to the token limit. Every preset's gold reward moves its task score toward the
bottom of its range in proportion to `degeneracy`, so such outputs fall below ordinary text.
"""

from __future__ import annotations

import re

from rlhfkit.utils.text_metrics import repetition_rate

_WORD = re.compile(r"[A-Za-z0-9']+")
SENTENCE_END = (".", "!", "?")
# Closed-class English words: natural sentences are roughly a third of them, keyword salad has none.
FUNCTION_WORDS = frozenset("""
a about after all an and are as at be because been before but by can could did do does for from
had has have he her his how i if in into is it its just me more most my no not of on or our out
over so some than that the their them then there they this through to too under up us very was we
were what when which while who why will with would you your
""".split())
MIN_FUNCTION_SHARE = 0.15


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words (punctuation dropped)."""
    return [w.lower() for w in _WORD.findall(text)]


def degeneracy(text: str, *, min_words: int, max_words: int, unfinished_penalty: float = 0.2) -> float:
    """A penalty in [0, 1]: 1 for empty text, growing with shortness, overlength, loops and salad.

    penalty = shortness + overlength + 2 * trigram repetition + salad + unfinished, capped at 1:
    shortness = (min_words - n) / min_words below min_words; overlength = (n - max_words) / max_words
    above max_words; trigram repetition = share of word trigrams repeating an earlier one (natural
    sentences have almost none, loops like "good good good" many); salad = (0.15 - s) / 0.15 when
    the share s of function words (the, was, because...) in a text of 4+ words is below 0.15
    (a bare list of keywords); ``unfinished_penalty`` when the text does not end a sentence.
    """
    if min_words < 1 or max_words < min_words:
        raise ValueError(f"degeneracy: need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    tokens = words(text)
    n = len(tokens)
    if n == 0:
        return 1.0
    shortness = max(0, min_words - n) / min_words
    overlength = max(0, n - max_words) / max_words
    loops = 2.0 * repetition_rate(" ".join(tokens), n=3)
    share = sum(t in FUNCTION_WORDS for t in tokens) / n
    salad = max(0.0, MIN_FUNCTION_SHARE - share) / MIN_FUNCTION_SHARE if n >= 4 else 0.0
    unfinished = 0.0 if text.rstrip().endswith(SENTENCE_END) else unfinished_penalty
    return min(1.0, shortness + overlength + loops + salad + unfinished)


def penalized(score: float, penalty: float, floor: float) -> float:
    """Blend a task score with a degeneracy penalty: score * (1 - p) + floor * p.

    p = 0 leaves the score alone; p = 1 gives ``floor`` (the bottom of the gold range), so a fully
    degenerate answer scores the minimum whatever the task score said.
    """
    return score * (1.0 - penalty) + floor * penalty
