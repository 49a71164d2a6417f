"""Helpers for SFT tests: a character-level tokenizer (hand-checkable masks) and small data files."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models

CHARS = " abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?:;'\"-\n"
WORDS = ["good", "bad", "movie", "food", "story", "was", "very", "kind", "slow", "warm", "the", "a"]


def char_tokenizer():  # noqa: ANN201 - returns a transformers tokenizer
    """One token per character: ' ' is 3, 'a' is 4, 'b' is 5, ...; eos '<eos>' is 1, pad '<pad>' is 2."""
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1, "<pad>": 2}
    for char in CHARS:
        vocab.setdefault(char, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def write_jsonl(path: Path, records: list[object]) -> Path:
    """One JSON value per line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def make_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Short prompt/completion pairs of varying length (deterministic in ``seed``)."""
    import random

    rng = random.Random(seed)
    records = []
    for _ in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
        completion = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))) + "."
        records.append({"prompt": prompt, "completion": completion})
    return records


def reset_accelerate() -> None:
    """Forget accelerate's process-wide state so the next Accelerator can use other settings."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def read_safetensors(path: Path) -> dict:
    """All tensors of a safetensors file."""
    from safetensors.torch import load_file

    return load_file(str(path))
