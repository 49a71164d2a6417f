"""Simulated editors: a panel member rewrites a response to fix the gold aspects it perceives as weak.

An :class:`AspectEditor` scores the response on the task's aspects (rlhfkit.tasks.aspects) with
Gaussian noise, tries the fix of each aspect that looks weak (below ``weak``) among those it knows
(``FIXES``: name the subject, give a reason, keep the sentence with the reason, cut to one sentence,
remove loops, raise negative and lukewarm words to strong positive ones and cut complaints), and keeps
a rewrite only when its own noisy reading of the task's ``combine`` rises by at least ``min_gain``. Up
to ``max_edits`` fixes are chained. It returns None when nothing it tried helped: the
"no change needed" answer of an edit task. Noise makes some edits miss or misjudge, as a person would.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from rlhfkit.tasks.aspects import Aspect, Combine, content_words, normalized, score_aspects
from rlhfkit.tasks.base import Task
from rlhfkit.tasks.explain import reason_quality
from rlhfkit.tasks.quality import SENTENCE_END, words

Fix = Callable[[str, str], Optional[str]]
"""(prompt, response) -> a rewrite that targets one aspect, or None when the fix does not apply."""
_SENTENCES = re.compile(r"[^.!?]+[.!?]*")
_PRONOUN = re.compile(r"^\s*(it|this|that|they)\b", re.IGNORECASE)
_REVIEW_PROMPT = re.compile(r"^\s*review of (.+?)\s*:?\s*$", re.IGNORECASE | re.DOTALL)
_QUESTION = re.compile(r"^\s*q:\s*(.+?)\s*(?:\n\s*a:\s*)?$", re.IGNORECASE | re.DOTALL)
NEGATIONS = frozenset({"not", "never", "no", "hardly", "nor", "without"})
WORD_BUDGET = 20


def _sentence_end(text: str) -> str:
    """``text`` ending a sentence (a period added when it has no end mark)."""
    text = text.strip()
    return text if not text or text.endswith(SENTENCE_END) else text + "."


def _ordered_content_words(text: str) -> list[str]:
    """The content words of ``text`` in order of first appearance."""
    keep = content_words(text)
    seen: dict[str, None] = {}
    for word in words(text):
        word = word.removesuffix("'s")
        if word in keep:
            seen.setdefault(word)
    return list(seen)


def subject_phrase(prompt: str) -> str:
    """What the prompt is about: "the Nova keyboard" for a review prompt, else its content words."""
    match = _REVIEW_PROMPT.match(prompt)
    if match:
        return match.group(1).strip()
    return " ".join(_ordered_content_words(prompt)[:3])


def name_subject(prompt: str, response: str) -> Optional[str]:
    """Name the subject: replace a leading pronoun with it, else open with it."""
    subject = subject_phrase(prompt)
    if not subject or not response.strip():
        return None
    if _PRONOUN.match(response):
        return _PRONOUN.sub(subject[0].upper() + subject[1:], response.lstrip(), count=1)
    return f"{subject[0].upper() + subject[1:]}: {response.strip()}"


def add_reason(prompt: str, response: str) -> Optional[str]:
    """Give a reason: end the first sentence with "because of the <w1> and <w2>" from the prompt and response."""
    question = _QUESTION.match(prompt)
    pool = _ordered_content_words(question.group(1) if question else prompt) + _ordered_content_words(response)
    reasons = list(dict.fromkeys(pool))[:2]
    if len(reasons) < 2 or not response.strip():
        return None
    first = _SENTENCES.findall(response.strip())[0].strip().rstrip(".!? ")
    return f"{first} because of the {reasons[0]} and {reasons[1]}."


def keep_reason_sentence(prompt: str, response: str) -> Optional[str]:
    """Focus: keep only the first sentence that gives a reason (None when no sentence does)."""
    for sentence in _SENTENCES.findall(response):
        if reason_quality(sentence) > 0:
            return _sentence_end(sentence)
    return None


def first_sentence(prompt: str, response: str) -> Optional[str]:
    """Brevity: the first sentence, cut to WORD_BUDGET words."""
    sentences = _SENTENCES.findall(response.strip())
    if not sentences:
        return None
    tokens = sentences[0].split()
    return _sentence_end(" ".join(tokens[:WORD_BUDGET]).rstrip(",;:"))


def tidy(prompt: str, response: str) -> Optional[str]:
    """Well-formedness: drop stutters ("good good") and repeated sentences, and end the last sentence."""
    kept: list[str] = []
    seen: set[str] = set()
    for sentence in _SENTENCES.findall(response):
        tokens = sentence.split()
        unstuttered = [t for i, t in enumerate(tokens) if i == 0 or t.lower() != tokens[i - 1].lower()]
        key = normalized(" ".join(unstuttered))
        if key and key not in seen:
            seen.add(key)
            kept.append(" ".join(unstuttered))
    return _sentence_end(" ".join(kept)) if kept else None


def _pick(options: Sequence[str], key: str) -> str:
    """One of ``options``, the same for the same ``key`` (editors vary their words, reproducibly)."""
    return options[zlib.crc32(key.encode()) % len(options)]


def _capitalized_like(word: str, original: str) -> str:
    """``word`` with a capital first letter when ``original`` starts with one ("Awful" -> "Superb")."""
    return word[:1].upper() + word[1:] if original[:1].isupper() else word


def _raise_words(sentence: str, key: str) -> str:
    """One sentence with negations dropped and each lukewarm or negative word of a scale raised to a strong one;
    capitals kept, so a sentence that began with a capital still does ("Not great." -> "Great.")."""
    from rlhfkit.models.corpus import strong_alternatives

    raised = strong_alternatives()
    out = []
    for token in re.findall(r"\S+|\s+", sentence):
        bare = token.strip(".,!?;:").lower()
        if bare in NEGATIONS or bare.endswith("n't"):
            continue
        if bare in raised:
            start = token.lower().index(bare)
            word = _capitalized_like(_pick(raised[bare], key + "|" + bare), token[start:])
            token = token[:start] + word + token[start + len(bare):]
        out.append(token)
    text = re.sub(r"\s+", " ", "".join(out)).strip()
    return _capitalized_like(text, sentence.strip())


def make_positive(prompt: str, response: str) -> Optional[str]:
    """Positivity, as a person asked for a positive review rewrites one: in each sentence negations are dropped,
    each lukewarm or negative adjective rises to a strong word of its scale ("okay" -> "superb", "rude" ->
    "excellent") and each negative verb to a loving one; a negative sentence whose complaint no word swap turns
    around ("Avoid this place.", "Sadly, it was a letdown.") is cut; and a review that still reads lukewarm
    (polarity below the sentiment task's "clearly positive" 0.25) ends with one of the corpus's strong closers
    ("Highly recommended."): most of a tiny policy's reviews are neutral, not negative, and swapping negative
    words alone left them as lukewarm as they were. None when nothing of the review is left."""
    from rlhfkit.models.corpus import CLEARLY_POSITIVE_POLARITY, sentiment_score, strong_closers

    kept = []
    for sentence in _SENTENCES.findall(response):
        if not sentence.strip():
            continue
        if unraisable_negative_words(sentence):
            if sentiment_score(sentence) < 0:
                continue
            kept.append(sentence.strip())
        else:
            kept.append(_raise_words(sentence, response))
    text = " ".join(sentence for sentence in kept if sentence.strip(".,!?;: "))
    if not text:
        return None
    if sentiment_score(text) < CLEARLY_POSITIVE_POLARITY:
        text = f"{_sentence_end(text)} {_pick(strong_closers(), response)}"
    return text


def unraisable_negative_words(text: str) -> list[str]:
    """The negative words of ``text`` that have no strong word of a scale to rise to ("avoid", "sadly", "worst")."""
    from rlhfkit.models.corpus import lexicon, strong_alternatives

    weights, raised = lexicon().weights, strong_alternatives()
    return [bare for bare in (t.strip(".,!?;:").lower() for t in text.split())
            if weights.get(bare, 0.0) < 0 and bare not in raised]


FIXES: dict[str, Fix] = {
    "on_topic": name_subject,
    "original": name_subject,
    "reason": add_reason,
    "focus": keep_reason_sentence,
    "brevity": first_sentence,
    "well_formed": tidy,
    "positive": make_positive,
}


@dataclass
class AspectEditor:
    """Rewrites (prompt, response) to raise its perceived gold; ``context`` as in ``AspectCritic`` (for ``original``)."""

    aspects: Sequence[Aspect]
    combine: Combine
    noise: float = 0.1
    weak: float = 0.75
    min_gain: float = 0.02
    max_edits: int = 2
    fixes: Mapping[str, Fix] = field(default_factory=lambda: dict(FIXES))
    context: Mapping[str, set[str]] = field(default_factory=dict)

    @classmethod
    def for_task(cls, task: Task, *, noise: float = 0.1, min_gain: float = 0.02, max_edits: int = 2) -> AspectEditor:
        """An editor for a task declared by aspects and a combine function."""
        if not task.aspects or task.combine is None:
            raise ValueError(f"task {task.name!r} declares no aspects with a combine function to edit by")
        return cls(task.aspects, task.combine, noise=noise, min_gain=min_gain, max_edits=max_edits)

    def aspect_scores(self, prompt: str, response: str) -> dict[str, float]:
        """The response's true aspect scores (``original`` counted against the prompts in ``context``)."""
        others = sorted(self.context.get(normalized(response), set()) - {prompt})
        table = score_aspects(self.aspects, [prompt, *others], [response] * (1 + len(others)))
        return {name: scores[0] for name, scores in table.items()}

    def perceived(self, scores: Mapping[str, float], offsets: Mapping[str, float]) -> float:
        """The gold as this editor reads it: every aspect score shifted by its noise offset, then combined."""
        return float(self.combine({name: min(1.0, max(0.0, value + offsets[name])) for name, value in scores.items()}))

    def __call__(self, prompt: str, response: str, rng: np.random.Generator) -> Optional[str]:
        """The rewrite, or None when no fix seemed to help ("no change needed").

        Each step draws one noise offset per aspect: it decides which aspects look weak (below ``weak``)
        and is shared by the before/after comparison, as a reader's misjudgement of an aspect persists
        while they compare two versions of the same text.
        """
        text = response
        for _ in range(self.max_edits):
            scores = self.aspect_scores(prompt, text)
            offsets = {name: float(rng.normal(0.0, self.noise)) for name in scores}
            now = self.perceived(scores, offsets)
            best: Optional[tuple[float, str]] = None
            for name in scores:
                if name not in self.fixes or scores[name] + offsets[name] >= self.weak:
                    continue
                candidate = self.fixes[name](prompt, text)
                if candidate is None or not candidate.strip() or normalized(candidate) == normalized(text):
                    continue
                value = self.perceived(self.aspect_scores(prompt, candidate), offsets)
                if value >= now + self.min_gain and (best is None or value > best[0]):
                    best = (value, candidate)
            if best is None:
                break
            text = best[1]
        return None if text.strip() == response.strip() else text
