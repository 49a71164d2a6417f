"""The demo SFT dataset: helpful examples from the built-in corpus, so ``rlhfkit sft`` runs anywhere.

Records are prompt/completion pairs from :func:`rlhfkit.models.corpus.build_corpus` (its usual mix of
reviews, questions and news summaries) keeping only the helpful ones: reviews that give a reason,
answers that explain, reference summaries. Fine-tuning on them nudges the built-in model toward the
qualities that the later RLHF stages measure. Given a tokenizer and a context length, only records
that fit whole (prompt, completion and EOS) are kept, so the demo never truncates or fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rlhfkit.data.sft import SFTDataError
from rlhfkit.models.corpus import Document, build_corpus

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEMO_SEED_OFFSET = 7919  # other documents than the ones the built-in model was pre-trained on
Record = dict[str, str]


def is_helpful(document: Document) -> bool:
    """Review with a reason, explaining answer, or reference summary."""
    if document.task == "summary":
        return document.labels.get("quality") == "reference"
    return bool(document.labels.get("helpful"))


def fits_context(tokenizer: PreTrainedTokenizerBase, max_length: int) -> Callable[[Record], bool]:
    """A predicate: does the record's prompt + completion + EOS fit in ``max_length`` tokens?"""
    def fits(record: Record) -> bool:
        prompt = tokenizer(record["prompt"])["input_ids"]
        completion = tokenizer(record["completion"], add_special_tokens=False)["input_ids"]
        return len(prompt) + len(completion) + 1 <= max_length
    return fits


def demo_records(n: int, seed: int = 0, keep: Callable[[Record], bool] | None = None) -> list[Record]:
    """``n`` helpful prompt/completion records (deterministic in ``seed``), each accepted by ``keep``."""
    pool = 4 * n
    while True:
        documents = [d for d in build_corpus(pool, seed=seed + DEMO_SEED_OFFSET) if is_helpful(d)]
        records = [{"prompt": d.prompt, "completion": d.completion} for d in documents]
        records = [r for r in records if keep is None or keep(r)]
        if len(records) >= n:
            return records[:n]
        if pool > 64 * n:
            raise SFTDataError(f"only {len(records)} of {pool} demo documents fit the model's context; "
                               "raise max_length, lower demo_records, or pass --data")
        pool *= 2


def write_demo_dataset(path: str | Path, n: int = 200, seed: int = 0,
                       keep: Callable[[Record], bool] | None = None) -> Path:
    """Write :func:`demo_records` as JSONL to ``path`` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in demo_records(n, seed, keep)), encoding="utf-8")
    return path
