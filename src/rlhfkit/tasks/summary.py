"""`summary`: summarize a short news passage in one sentence; gold = ROUGE-L F1 vs the reference.

Passages and reference summaries come from the built-in corpus (rlhfkit.models.corpus), the data
the built-in model was pretrained on. A fixed catalogue per split (eval = passages held out of
pretraining) maps every prompt back to its reference. Declared as two aspects, rouge_l and
well_formed (1 - the degeneracy penalty); gold = rouge_l * well_formed, the strict rubric the weaker.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from functools import cache

from rlhfkit.utils.text_metrics import rouge_per_item
from rlhfkit.models import corpus
from rlhfkit.tasks.aspects import Aspect, well_formed
from rlhfkit.tasks.base import Task, TaskError
from rlhfkit.tasks.quality import penalized

CATALOGUE = {"train": ("train", 1024), "eval": ("heldout", 256)}
MIN_WORDS, MAX_WORDS = 5, 35


@cache
def _catalogue(split: str) -> dict[str, str]:
    """prompt -> reference summary for the split's fixed set of passages."""
    corpus_split, size = CATALOGUE[split]
    return {doc.prompt: doc.labels["reference"] for doc in corpus.summary_examples(size, 0, corpus_split)}


def prompts(n: int, seed: int, split: str) -> list[str]:
    """n distinct passages of the split, drawn by a generator seeded with (seed, split)."""
    pool = sorted(_catalogue(split))
    if n > len(pool):
        raise TaskError(f"task 'summary': the {split} split has {len(pool)} passages, asked for {n}")
    return random.Random(f"summary:{split}:{seed}").sample(pool, n)


def references(prompts: Sequence[str]) -> list[str]:
    """The reference summary of each prompt; prompts must come from this task."""
    refs = []
    for prompt in prompts:
        ref = _catalogue("train").get(prompt) or _catalogue("eval").get(prompt)
        if ref is None:
            raise TaskError(f"task 'summary': no reference for prompt {prompt[:80]!r} "
                            "(prompts must come from Task.prompts)")
        refs.append(ref)
    return refs


def rouge_l(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """ROUGE-L F1 of each response against its prompt's reference summary."""
    return [s["rougeL"] for s in rouge_per_item(list(responses), references(prompts))]


def combine(scores: Mapping[str, float]) -> float:
    """ROUGE-L pulled to 0 by the degeneracy penalty."""
    return penalized(scores["rouge_l"], 1.0 - scores["well_formed"], 0.0)


ASPECTS = (
    Aspect("rouge_l", "ROUGE-L F1 against the reference summary", rouge_l),
    Aspect("well_formed", "no empty, looping or run-on text", well_formed(MIN_WORDS, MAX_WORDS)),
)


TASK = Task(
    name="summary",
    description="Summarize a short news passage in one sentence (gold: ROUGE-L F1 vs a reference).",
    prompt_fn=prompts,
    aspects=ASPECTS,
    combine=combine,
    combination="gold = rouge_l * well_formed",
    reference_fn=references,
    gold_range=(0.0, 1.0),
    max_new_tokens=48,
    judge_instructions=(
        "Prefer the response that summarizes the passage in ONE accurate sentence: who or where, "
        "what happened, and the key detail, with nothing that is not in the passage. Copying the "
        "first sentence, vague statements, and empty, repetitive or rambling text are worse."),
)
