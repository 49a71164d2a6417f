"""Fixtures for SFT tests: tiny models saved with save_pretrained, a data file, fresh accelerate state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sft_helpers import make_records, reset_accelerate, write_jsonl

from helpers_models import save_tiny_model, tiny_gpt2, tiny_tokenizer


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A tiny GPT-2 + byte-level tokenizer saved with save_pretrained (dropout on, as shipped)."""
    return save_tiny_model(tmp_path / "tiny-model")


@pytest.fixture
def no_dropout_model_dir(tmp_path: Path) -> Path:
    """The tiny GPT-2 without dropout, so runs that split batches differently stay comparable."""
    tokenizer = tiny_tokenizer()
    model = tiny_gpt2(tokenizer)
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.0
    directory = tmp_path / "tiny-model-nodrop"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    """40 prompt/completion records as JSONL."""
    return write_jsonl(tmp_path / "train.jsonl", make_records(40))


@pytest.fixture(autouse=True)
def _fresh_accelerate_state() -> Iterator[None]:
    """Each test builds its own Accelerator settings (accelerate keeps them in process-wide singletons)."""
    reset_accelerate()
    yield
    reset_accelerate()
