"""Per-row counter-based sampling: splitmix64 against a plain-Python reference, uniformity, and
draws that depend on the row seed only, never on the rest of the batch."""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer

from rlhfkit.rl.rollout import PER_ROW_UNSUPPORTED, CachedSampler, HFGenerateSampler, sample_from_probs
from rlhfkit.rl.row_seeds import combine_seeds, rollout_row_seeds, row_uniforms, splitmix64
from rlhfkit.rl.sampling import SamplingConfig

MASK = (1 << 64) - 1


def reference_splitmix64(state: int) -> int:
    """splitmix64 as published (Steele et al. 2014), on Python integers modulo 2**64."""
    z = (state + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def as_unsigned(values: torch.Tensor) -> list[int]:
    return [v & MASK for v in values.tolist()]


def test_splitmix64_matches_the_reference_including_negative_and_large_states():
    states = [0, 1, 2, 12345, -1, -(2**63), 2**63 - 1, 0x0123456789ABCDEF]
    got = as_unsigned(splitmix64(torch.tensor(states, dtype=torch.int64)))
    assert got == [reference_splitmix64(s & MASK) for s in states]
    assert reference_splitmix64(0) == 0xE220A8397B1DCDAF  # first output of splitmix64 seeded with 0


def test_row_uniforms_are_the_stream_of_each_seed():
    seeds = torch.tensor([7, -3, 2**40], dtype=torch.int64)
    for counter in (0, 1, 5):
        expected = [(reference_splitmix64((s & MASK) + counter * 0x9E3779B97F4A7C15 & MASK) >> 11) * 2.0**-53
                    for s in seeds.tolist()]
        assert row_uniforms(seeds, counter).tolist() == expected


def test_row_uniforms_are_uniform_by_a_chi_square_test():
    seeds = rollout_row_seeds(3, 0, torch.arange(4000), 5)  # 20,000 rows
    values = torch.cat([row_uniforms(seeds, counter) for counter in range(3)])
    assert 0.0 <= float(values.min()) and float(values.max()) < 1.0
    bins = 50
    counts = torch.bincount((values * bins).long(), minlength=bins).double()
    expected = values.numel() / bins
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 90.0  # 49 degrees of freedom: P(chi2 > 90) < 1e-3
    assert abs(float(torch.corrcoef(torch.stack([values[:20000], values[20000:40000]]))[0, 1])) < 0.03


def test_row_seeds_differ_by_step_prompt_and_member_and_repeat_exactly():
    a = rollout_row_seeds(0, 1, torch.arange(8), 4)
    assert a.shape == (32,) and len(set(a.tolist())) == 32
    assert torch.equal(a, rollout_row_seeds(0, 1, torch.arange(8), 4))
    assert not set(a.tolist()) & set(rollout_row_seeds(0, 2, torch.arange(8), 4).tolist())
    assert not set(a.tolist()) & set(rollout_row_seeds(1, 1, torch.arange(8), 4).tolist())
    assert torch.equal(rollout_row_seeds(0, 1, torch.arange(4, 8), 4), a[16:])  # a shard is a slice
    assert int(combine_seeds(1, 2)) != int(combine_seeds(2, 1))


def test_sample_from_probs_with_row_seeds_ignores_batch_composition():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(16, 50) * 2, dim=-1)
    seeds = rollout_row_seeds(0, 0, torch.arange(16), 1)
    full = sample_from_probs(probs, row_seeds=seeds, counter=3)
    order = torch.randperm(16)
    assert torch.equal(sample_from_probs(probs[order], row_seeds=seeds[order], counter=3), full[order])
    assert torch.equal(sample_from_probs(probs[5:9], row_seeds=seeds[5:9], counter=3), full[5:9])
    assert not torch.equal(sample_from_probs(probs, row_seeds=seeds, counter=4), full)


def test_sample_from_probs_with_row_seeds_matches_the_probabilities():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])
    rows = 20000
    seeds = rollout_row_seeds(11, 0, torch.arange(rows), 1)
    draws = sample_from_probs(probs.expand(rows, -1), row_seeds=seeds, counter=0)
    counts = torch.bincount(draws, minlength=5).double()
    assert counts[4] == 0  # zero probability is never drawn
    expected = probs[:4].double() * rows
    chi2 = float(((counts[:4] - expected) ** 2 / expected).sum())
    assert chi2 < 16.3  # 3 degrees of freedom: P(chi2 > 16.3) < 1e-3


def test_cached_sampler_row_draws_do_not_depend_on_the_other_rows():
    tokenizer = tiny_tokenizer()
    model = tiny_gpt2(tokenizer, seed=1)
    prompts = ["The movie was", "The food", "I loved the story", "Stop."] * 2
    params = SamplingConfig(max_new_tokens=6)
    seeds = rollout_row_seeds(0, 0, torch.arange(4), 2)
    sampler = CachedSampler()
    full = sampler.sample(model, tokenizer, prompts, params, row_seeds=seeds)
    part = sampler.sample(model, tokenizer, prompts[4:7], params, row_seeds=seeds[4:7])
    assert part.responses == full.responses[4:7]
    generator = torch.Generator().manual_seed(0)
    unseeded = sampler.sample(model, tokenizer, prompts, params, generator=generator)
    assert unseeded.responses != full.responses  # the generator is not used when rows are seeded


def test_hf_backend_refuses_row_seeds():
    tokenizer = tiny_tokenizer()
    model = tiny_gpt2(tokenizer)
    with pytest.raises(ValueError, match="cannot seed each row"):
        HFGenerateSampler().sample(model, tokenizer, ["a"], SamplingConfig(max_new_tokens=2),
                                   row_seeds=torch.zeros(1, dtype=torch.int64))
    assert "seed_per_row=never" in PER_ROW_UNSUPPORTED
