"""`explain`: answer a "why" question by giving a reason, concisely; judged by a function.

Questions come from the built-in corpus (``Q: Why ...?\\nA:``). The gold reward scores what the
preferred answers share, and nothing else:
  reason  = 1 if a reason marker ("because", "since", "so that", "due to", ...) is followed by at
            least two content words, 0.1 if the "reason" is empty talk ("because it just is"),
            0 without a marker;
  focus   = share of the answer's words in the sentence that gives the reason (padding lowers it);
  brevity = 1 up to 20 words, falling linearly to 0 at 40;
  score   = (0.15 + 0.85 * reason * (0.3 + 0.7 * focus)) * brevity, in [0, 1],
then pulled to 0 by the shared degeneracy penalty (empty, loops, keyword salad, cut-off text).
The gold is declared as the named aspects reason, focus, brevity and well_formed (1 - penalty),
combined by exactly that formula; the strict rubric is the weakest of the four.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from rlhfkit.models import corpus
from rlhfkit.tasks.aspects import Aspect, well_formed
from rlhfkit.tasks.base import Task
from rlhfkit.tasks.quality import FUNCTION_WORDS, penalized, words

CORPUS_SPLIT = {"train": "train", "eval": "heldout"}
MARKERS = ("because", "since", "so that", "due to", "thanks to", "as a result", "which is why")
# Words that carry no content in a would-be reason ("because that is the way it works").
EMPTY_REASON_WORDS = FUNCTION_WORDS | {"way", "works", "work", "thing", "things", "happens", "just",
                                       "like", "said", "say", "reason", "course", "obviously", "simply"}
WORD_BUDGET = 20
_MARKER = re.compile(r"\b(" + "|".join(m.replace(" ", r"\s+") for m in MARKERS) + r")\b", re.IGNORECASE)
_SENTENCES = re.compile(r"[^.!?]+[.!?]*")


def prompts(n: int, seed: int, split: str) -> list[str]:
    """``Q: <why question>\\nA:`` prompts; eval uses questions held out of pretraining."""
    return [doc.prompt for doc in corpus.qa_examples(n, seed, CORPUS_SPLIT[split])]


def reason_quality(text: str) -> float:
    """1 for a marker followed by 2+ content words, 0.1 for an empty reason, 0 for no marker."""
    match = _MARKER.search(text)
    if match is None:
        return 0.0
    clause = re.split(r"[.!?]", text[match.end():], maxsplit=1)[0]
    content = [w for w in words(clause) if w not in EMPTY_REASON_WORDS]
    return 1.0 if len(content) >= 2 else 0.1


def focus(text: str) -> float:
    """Share of the words that sit in the first sentence containing a reason marker (0 if none)."""
    total = len(words(text))
    for sentence in _SENTENCES.findall(text):
        if _MARKER.search(sentence):
            return len(words(sentence)) / total if total else 0.0
    return 0.0


def brevity(text: str) -> float:
    """1 up to WORD_BUDGET words, falling linearly to 0 at twice the budget."""
    return min(1.0, max(0.0, 1.0 - (len(words(text)) - WORD_BUDGET) / WORD_BUDGET))


def combine(scores: Mapping[str, float]) -> float:
    """The gold of one answer from its aspect scores (formula in the module docstring)."""
    score = (0.15 + 0.85 * scores["reason"] * (0.3 + 0.7 * scores["focus"])) * scores["brevity"]
    return penalized(score, 1.0 - scores["well_formed"], 0.0)


ASPECTS = (
    Aspect("reason", "gives an actual reason (marker + 2 content words)",
           lambda prompts, responses: [reason_quality(r) for r in responses]),
    Aspect("focus", "share of the words in the sentence that gives the reason",
           lambda prompts, responses: [focus(r) for r in responses]),
    Aspect("brevity", "20 words or fewer (0 at 40)", lambda prompts, responses: [brevity(r) for r in responses]),
    Aspect("well_formed", "no empty, looping, padded-salad or cut-off text", well_formed(2, 2 * WORD_BUDGET)),
)


TASK = Task(
    name="explain",
    description="Answer a 'why' question with a reason, concisely (gold: reason marker with content, "
                "focus and brevity).",
    prompt_fn=prompts,
    aspects=ASPECTS,
    combine=combine,
    combination="gold = (0.15 + 0.85 * reason * (0.3 + 0.7 * focus)) * brevity * well_formed",
    gold_range=(0.0, 1.0),
    max_new_tokens=40,
    judge_instructions=(
        "Prefer the answer that gives an actual REASON (\"because ...\" followed by a real cause) "
        "in as few words as possible. Padding (\"great question\", \"I hope this helps\"), vague "
        "answers (\"it depends\"), circular reasons (\"because it just is\") and long rambling "
        "are worse; empty or repetitive text is worst."),
)
