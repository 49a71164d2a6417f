"""Our samplers under bf16 autocast (how trainers sample with ``run.dtype=bfloat16``), their CPU attention, and
the two-level inverse CDF that draws their tokens.

Stated tolerance: under bf16 autocast a sampler's log-probs match a forward pass in the same autocast within
0.05 nats per token (bf16 keeps 8 mantissa bits; decode and full-sequence forwards round differently).
On ``bench/rollout.py``'s GPT-2 4 x 256 the measured gap was at most 0.008 nats, mean 0.0015.
"""

from __future__ import annotations

import pytest
import torch

from rlhfkit.rl.compiled_sampler import CompiledSampler
from rlhfkit.rl.logprobs import token_logprobs
from rlhfkit.rl import rollout as rollout_module
from rlhfkit.rl.rollout import CachedSampler, Sampler, SamplingParams, sample_from_probs
from rlhfkit.rl.row_seeds import row_uniforms

PROMPTS = ["The movie was great", "Hi", "What a lovely day! The sun is", "Stop.", "Please explain why", "I"]
BF16_TOLERANCE = 0.05
OURS = {"cached": lambda: CachedSampler(), "cached-static": lambda: CachedSampler(cache="static"),
        "compiled": lambda: CompiledSampler(compile=False)}


def _record(model: torch.nn.Module, what) -> tuple[list, torch.utils.hooks.RemovableHandle]:
    """Append ``what(module, output)`` for every LM-head call; returns the list and the hook handle."""
    seen: list = []
    handle = model.lm_head.register_forward_hook(lambda module, args, output: seen.append(what(module, output)))
    return seen, handle


@pytest.mark.parametrize("name", list(OURS))
def test_bf16_autocast_logprobs_match_a_bf16_forward(name: str, eos_model, tokenizer) -> None:
    sampler: Sampler = OURS[name]()
    params = SamplingParams(max_new_tokens=12, temperature=0.8, top_k=40)
    dtypes, handle = _record(eos_model, lambda module, output: output.dtype)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rollout = sampler.sample(eos_model, tokenizer, PROMPTS, params, torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert set(dtypes) == {torch.bfloat16}, "the decode steps must run in the caller's autocast precision"
    assert rollout.logprobs.dtype == torch.float32
    mask = rollout.response_mask.bool()
    assert rollout.finished.any() and rollout.response_lengths.min() < rollout.response_lengths.max()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        recomputed = token_logprobs(eos_model, rollout.sequences, rollout.attention_mask, rollout.response_start,
                                    temperature=params.temperature)
    gap = (recomputed.float() - rollout.logprobs)[mask].abs()
    assert gap.max().item() < BF16_TOLERANCE
    assert torch.all(rollout.logprobs[~mask] == 0)


@pytest.mark.parametrize("name", ["cached", "cached-static"])
def test_cached_decodes_with_eager_attention_on_cpu_and_restores_sdpa(name: str, eos_model, tokenizer) -> None:
    assert eos_model.config._attn_implementation == "sdpa"
    seen, handle = _record(eos_model, lambda module, output: eos_model.config._attn_implementation)
    try:
        OURS[name]().sample(eos_model, tokenizer, PROMPTS[:2], SamplingParams(max_new_tokens=3))
        CachedSampler(attention="sdpa").sample(eos_model, tokenizer, PROMPTS[:2], SamplingParams(max_new_tokens=3))
    finally:
        handle.remove()
    assert seen == ["eager"] * 3 + ["sdpa"] * 3
    assert eos_model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("vocab", [7, 64, 100, 4096])
def test_two_level_cdf_draws_what_a_full_cdf_draws(vocab: int) -> None:
    """The blocked inverse CDF picks the token of a float64 cumsum over the whole vocabulary, never a masked one."""
    rows = 500
    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(vocab)) * 4
    logits[:, 1::3] = float("-inf")
    logits[:, -1] = float("-inf")  # the last token, and for small vocabularies the last block's tail, are masked
    probs = logits.softmax(dim=-1)
    seeds = torch.arange(rows, dtype=torch.int64) * 31 + 5
    drawn = sample_from_probs(probs, row_seeds=seeds, counter=2)
    cdf = probs.double().cumsum(dim=-1)
    expected = torch.searchsorted(cdf, row_uniforms(seeds, 2).unsqueeze(1) * cdf[:, -1:], right=True).squeeze(1)
    assert torch.equal(drawn, expected)
    assert torch.all(probs.gather(1, drawn.unsqueeze(1)) > 0)


def test_two_level_cdf_takes_the_last_token_with_mass_when_the_target_hits_the_end(monkeypatch) -> None:
    """Rounding can put ``uniform * total`` on the CDF's end (here forced with a uniform of 1): the draw is
    the last token with probability, not a masked token after it."""
    monkeypatch.setattr(rollout_module, "row_uniforms", lambda seeds, counter: torch.ones(seeds.shape, dtype=torch.float64))
    probs = torch.zeros(2, 200)
    probs[0, 70] = 1.0
    probs[1, [3, 130]] = torch.tensor([0.25, 0.75])
    drawn = sample_from_probs(probs, row_seeds=torch.zeros(2, dtype=torch.int64))
    assert drawn.tolist() == [70, 130]
