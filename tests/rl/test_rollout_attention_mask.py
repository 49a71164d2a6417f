"""The cached sampler always passes its attention mask, so transformers never asks for one (issue 14)."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer
from transformers.utils import logging as hf_logging

from rlhfkit.rl.rollout import CachedSampler, SamplingParams


@pytest.fixture
def hf_records():
    """LogRecords of transformers.modeling_utils, with its once-per-process warnings re-armed."""
    records: list[logging.LogRecord] = []
    collect = logging.Handler()
    collect.emit = records.append  # type: ignore[method-assign]
    source = hf_logging.get_logger("transformers.modeling_utils")
    logging.Logger.warning_once.cache_clear()
    source.addHandler(collect)
    yield records
    source.removeHandler(collect)
    logging.Logger.warning_once.cache_clear()


@pytest.mark.parametrize("sampler", [CachedSampler(compact=False), CachedSampler(), CachedSampler(cache="static")])
@pytest.mark.parametrize("prompt", ["The movie was", ""])
def test_cached_sampler_emits_no_attention_mask_warning(sampler, prompt, hf_records) -> None:
    tokenizer = tiny_tokenizer(with_pad=False)
    tokenizer.pad_token = tokenizer.eos_token  # GPT-2 style: pad == eos, so finished rows feed eos
    model = tiny_gpt2(tokenizer, eos_boost=3.0)
    rollout = sampler.sample(model, tokenizer, [prompt] * 8, SamplingParams(max_new_tokens=12),
                             generator=torch.Generator().manual_seed(0))
    assert rollout.finished.any() and not rollout.finished.all()
    assert not [r for r in hf_records if "attention_mask" in r.getMessage()]
