"""The fixed-shape (compiled) sampler: bucket sizes, log-probs vs a forward pass, greedy == hf, per-row
seeds == cached, stop strings, and one traced run with no recompile across batch sizes of a bucket."""

from __future__ import annotations

import os

import pytest
import torch

from rlhfkit.rl import compiled_sampler
from rlhfkit.rl.compiled_sampler import (CPU_COMPILE_MIN_ROW_TOKENS, CompiledSampler, batch_bucket, cache_bucket,
                                         decode_attention, should_compile)
from rlhfkit.rl.logprobs import token_logprobs
from rlhfkit.rl.rollout import SAMPLERS, CachedSampler, Rollout, SamplingParams, make_sampler

PROMPTS = ["The movie was great", "Hi", "What a lovely day! The sun is", "Stop.", "Please explain why", "I"]


def _seeds(count: int) -> torch.Tensor:
    return torch.arange(count, dtype=torch.int64) * 1009 + 17


def _same(a: Rollout, b: Rollout) -> None:
    assert torch.equal(a.response_ids, b.response_ids)
    assert torch.equal(a.response_mask, b.response_mask)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
    assert a.responses == b.responses


def test_bucket_sizes_by_hand() -> None:
    assert [batch_bucket(b) for b in (1, 2, 3, 6, 8, 9, 64, 65, 128, 129)] == [1, 2, 4, 8, 8, 16, 64, 128, 128, 192]
    assert [cache_bucket(n) for n in (1, 32, 33, 70)] == [32, 32, 64, 96]
    with pytest.raises(ValueError, match="batch must be >= 1"):
        batch_bucket(0)


def test_compile_rule() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert should_compile(cuda, 1, 1)
    assert not should_compile(cpu, 64, 32)
    assert should_compile(cpu, 1024, CPU_COMPILE_MIN_ROW_TOKENS // 1024)
    with pytest.raises(ValueError, match="sync_every"):
        CompiledSampler(sync_every=0)
    assert decode_attention("sdpa", cpu, compiled=False) == "eager"
    assert decode_attention("sdpa", cpu, compiled=True) is None
    assert decode_attention("sdpa", cuda, compiled=False) is None
    assert decode_attention("flash_attention_2", cpu, compiled=False) is None


def test_registered() -> None:
    assert "compiled" in SAMPLERS
    assert isinstance(make_sampler("compiled"), CompiledSampler)


def test_logprobs_agree_with_forward_pass(eos_model, tokenizer) -> None:
    """Varied lengths (EOS likely), top-k/top-p, 6 rows padded to 8: log-probs == a later forward within 1e-4."""
    params = SamplingParams(max_new_tokens=16, temperature=0.7, top_k=50, top_p=0.9)
    rollout = CompiledSampler(compile=False, sync_every=3).sample(eos_model, tokenizer, PROMPTS, params,
                                                                  torch.Generator().manual_seed(0))
    lengths = rollout.response_lengths
    assert rollout.response_ids.shape[0] == len(PROMPTS)
    assert rollout.finished.any() and lengths.min() < lengths.max()
    with torch.no_grad():
        recomputed = token_logprobs(eos_model, rollout.sequences, rollout.attention_mask, rollout.response_start,
                                    temperature=params.temperature)
    assert rollout.logprobs.dtype == torch.float32
    assert ((recomputed - rollout.logprobs) * rollout.response_mask).abs().max().item() < 1e-4
    assert torch.all(rollout.logprobs[rollout.response_mask == 0] == 0)
    assert eos_model.config._attn_implementation == "sdpa"  # eager attention while sampling, then restored


def test_greedy_tokens_identical_to_hf_generate(peaky_model, tokenizer) -> None:
    params = SamplingParams(max_new_tokens=20, do_sample=False, temperature=0.5)
    _same(CompiledSampler(compile=False).sample(peaky_model, tokenizer, PROMPTS, params),
          make_sampler("hf").sample(peaky_model, tokenizer, PROMPTS, params))


@pytest.mark.parametrize(("sync_every", "compact"), [(1, True), (5, True), (3, False)])
def test_row_seeds_draw_what_cached_draws(eos_model, tokenizer, sync_every: int, compact: bool, monkeypatch) -> None:
    """Same row seeds -> the same responses as ``cached`` (whose dynamic batch drops finished rows),
    whatever the bucket padding, shrinking to smaller buckets or not, and however rarely the running
    flags are read."""
    params = SamplingParams(max_new_tokens=16, min_new_tokens=2, temperature=0.7, top_k=50)
    shrinks: list[int] = []
    shrink = compiled_sampler._shrink_cache
    monkeypatch.setattr(compiled_sampler, "_shrink_cache", lambda cache, keep, *a: shrinks.append(len(keep))
                        or shrink(cache, keep, *a))
    reference = CachedSampler().sample(eos_model, tokenizer, PROMPTS, params, row_seeds=_seeds(6))
    ours = CompiledSampler(compile=False, sync_every=sync_every, compact=compact).sample(
        eos_model, tokenizer, PROMPTS, params, row_seeds=_seeds(6))
    assert bool(shrinks) == compact and all(size in (1, 2, 4) for size in shrinks)
    _same(ours, reference)
    alone = CompiledSampler(compile=False).sample(eos_model, tokenizer, PROMPTS[2:3], params, row_seeds=_seeds(6)[2:3])
    assert torch.equal(alone.response_ids[0, : int(alone.response_lengths[0])],
                       ours.response_ids[2, : int(ours.response_lengths[2])])


def test_row_seeds_must_match_the_prompts(eos_model, tokenizer) -> None:
    with pytest.raises(ValueError, match=r"row_seeds has shape \(5,\)"):
        CompiledSampler(compile=False).sample(eos_model, tokenizer, PROMPTS, SamplingParams(max_new_tokens=2),
                                              row_seeds=_seeds(5))


def test_stop_strings_and_early_exit_match_cached(peaky_model, tokenizer) -> None:
    """Stop strings checked every k steps cut where ``cached`` cuts; the loop ends once every row has."""
    probe = SamplingParams(max_new_tokens=20, do_sample=False)
    first = make_sampler("cached").sample(peaky_model, tokenizer, PROMPTS, probe).responses[0]
    stop = first[2:4]
    assert stop.strip(), "the probe response should give a non-blank stop string"
    params = SamplingParams(max_new_tokens=20, do_sample=False, stop_strings=[stop])
    reference = make_sampler("cached").sample(peaky_model, tokenizer, PROMPTS, params)
    ours = CompiledSampler(compile=False, sync_every=4).sample(peaky_model, tokenizer, PROMPTS, params)
    _same(ours, reference)
    assert ours.finished[0]


def test_traced_step_matches_eager_without_recompiling(eos_model, tokenizer) -> None:
    """The step under dynamo (aot_eager: the capture, no code generation) gives the eager results, and
    other batch sizes of the same bucket (6 and 5 rows -> 8) reuse the graph."""
    from torch._dynamo.utils import counters

    params = SamplingParams(max_new_tokens=10, temperature=0.8)
    traced = CompiledSampler(compile=True, compile_backend="aot_eager")
    eager = CompiledSampler(compile=False)
    _same(traced.sample(eos_model, tokenizer, PROMPTS, params, row_seeds=_seeds(6)),
          eager.sample(eos_model, tokenizer, PROMPTS, params, row_seeds=_seeds(6)))
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    _same(traced.sample(eos_model, tokenizer, PROMPTS[:5], params, row_seeds=_seeds(5)),
          eager.sample(eos_model, tokenizer, PROMPTS[:5], params, row_seeds=_seeds(5)))
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RLHFKIT_TEST_INDUCTOR") != "1",
                    reason="inductor compilation takes ~1 min on 2 CPU cores; set RLHFKIT_TEST_INDUCTOR=1")
def test_inductor_compiled_step_matches_eager(eos_model, tokenizer) -> None:
    params = SamplingParams(max_new_tokens=10, temperature=0.8)
    compiled = CompiledSampler(compile=True).sample(eos_model, tokenizer, PROMPTS, params, row_seeds=_seeds(6))
    eager = CompiledSampler(compile=False).sample(eos_model, tokenizer, PROMPTS, params, row_seeds=_seeds(6))
    assert torch.equal(compiled.response_ids, eager.response_ids)
    torch.testing.assert_close(compiled.logprobs, eager.logprobs, atol=1e-4, rtol=0)
