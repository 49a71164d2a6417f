"""CachedSampler's speed-ups (length-grouped prefill, in-place KV cache, GPT-2 decode step, fused GELU,
weights packed for oneDNN, small steps on one thread) give the rollouts of its plain path: left-padded
prefill, transformers' DynamicCache and forward."""

from __future__ import annotations

import itertools

import pytest
import torch

from rlhfkit.rl import cached_kv, cached_prefill
from rlhfkit.models.gelu import fused_gelu_while
from rlhfkit.rl.cached_gpt2 import gpt2_parts
from rlhfkit.rl.cached_kv import PreallocatedLayer
from rlhfkit.rl.cached_prefill import length_groups
from rlhfkit.rl.logprobs import token_logprobs
from rlhfkit.rl.rollout import CachedSampler, SamplingParams

PLAIN = CachedSampler(inplace_kv=False, group_prefill=False, fuse_gelu=False, gpt2_step=False, pack_weights=False,
                      serial_step_work=0)
PROMPTS = ["The movie was great", "Hi", "What a lovely day! The sun is", "Stop.", "Please explain why", "I",
           "The movie was great and the actors", "Hi there"]
REPEATED = [*PROMPTS[:5], PROMPTS[2], PROMPTS[0], "Hi", PROMPTS[2]]  # prompts that several rows share prefill once


def _cost(groups: list[list[int]], lengths: list[int], group_cost: int) -> int:
    return sum(len(g) * max(lengths[i] for i in g) + group_cost for g in groups)


def _brute_force_cost(lengths: list[int], group_cost: int, max_groups: int) -> int:
    """Cheapest split of the sorted rows into at most ``max_groups`` runs, trying every set of cut points."""
    ordered = sorted(lengths)
    best = None
    for count in range(1, max_groups + 1):
        for cuts in itertools.combinations(range(1, len(ordered)), count - 1):
            bounds = (0, *cuts, len(ordered))
            cost = sum((b - a) * ordered[b - 1] + group_cost for a, b in zip(bounds, bounds[1:]))
            best = cost if best is None else min(best, cost)
    return best


def test_length_groups_hand_values() -> None:
    assert length_groups([2, 10, 2, 10], group_cost=1) == [[0, 2], [1, 3]]  # 2*2 + 2*10 + 2 = 26 < 4*10 + 1
    assert length_groups([2, 10, 2, 10], group_cost=100) == [[0, 2, 1, 3]]  # rows in order of length
    assert length_groups([5, 5, 5], group_cost=0) == [[0, 1, 2]]
    assert length_groups([]) == []


def test_length_groups_stay_quick_and_sorted_for_many_distinct_lengths() -> None:
    lengths = list(range(4000, 0, -1))
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths))) and len(groups) <= 4
    longest = [max(lengths[i] for i in g) for g in groups]
    assert longest == sorted(longest) and _cost(groups, lengths, 16) < len(lengths) * max(lengths)


@pytest.mark.parametrize("seed", range(6))
def test_length_groups_is_optimal_and_covers_every_row(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 30, (9,), generator=generator).tolist()
    for group_cost, max_groups in ((0, 3), (16, 4), (60, 2)):
        groups = length_groups(lengths, group_cost, max_groups)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        assert len(groups) <= max_groups
        assert _cost(groups, lengths, group_cost) == _brute_force_cost(lengths, group_cost, max_groups)


@pytest.mark.parametrize("prompts", [PROMPTS, REPEATED], ids=["distinct", "repeated"])
@pytest.mark.parametrize("model_name, params", [
    ("eos_model", SamplingParams(max_new_tokens=12, temperature=0.7, top_k=40)),
    ("peaky_model", SamplingParams(max_new_tokens=12, do_sample=False)),
], ids=["sample-eos", "greedy"])
def test_grouped_prefill_and_inplace_cache_match_the_padded_dynamic_path(model_name, params, prompts, tokenizer,
                                                                        request, monkeypatch) -> None:
    """Same tokens and log-probs (1e-5) as a left-padded prefill over transformers' DynamicCache (EOS and
    compaction of finished rows included when sampling); the log-probs equal a later forward pass (1e-4)."""
    model = request.getfixturevalue(model_name)
    monkeypatch.setattr(cached_prefill, "GROUP_COST", 0)  # several groups even for 8 short prompts
    lengths = [len(tokenizer(p).input_ids) for p in prompts]
    assert len(length_groups(lengths, 0, cached_prefill.MAX_GROUPS)) > 1
    reference = PLAIN
    for sampler in (CachedSampler(), CachedSampler(inplace_kv=False), CachedSampler(group_prefill=False),
                    CachedSampler(gpt2_step=False, fuse_gelu=False), CachedSampler(pack_weights=False),
                    CachedSampler(serial_step_work=0)):
        expected = reference.sample(model, tokenizer, prompts, params, generator=torch.Generator().manual_seed(3))
        rollout = sampler.sample(model, tokenizer, prompts, params, generator=torch.Generator().manual_seed(3))
        assert torch.equal(rollout.response_ids, expected.response_ids)
        assert torch.equal(rollout.response_mask, expected.response_mask)
        torch.testing.assert_close(rollout.logprobs, expected.logprobs, atol=1e-5, rtol=0)
    if params.do_sample:
        assert rollout.finished.any() and rollout.response_mask.sum(-1).unique().numel() > 1
    with torch.no_grad():
        recomputed = token_logprobs(model, rollout.sequences, rollout.attention_mask, rollout.response_start,
                                    temperature=params.temperature)
    assert ((recomputed - rollout.logprobs) * rollout.response_mask).abs().max().item() < 1e-4


def test_grouped_prefill_keeps_per_row_seeds(eos_model, tokenizer, monkeypatch) -> None:
    """A row's response depends only on its own seed, as on the reference path."""
    monkeypatch.setattr(cached_prefill, "GROUP_COST", 0)
    params = SamplingParams(max_new_tokens=8)
    seeds = torch.arange(len(PROMPTS), dtype=torch.long) * 7919
    expected = PLAIN.sample(eos_model, tokenizer, PROMPTS, params, row_seeds=seeds)
    rollout = CachedSampler().sample(eos_model, tokenizer, PROMPTS, params, row_seeds=seeds)
    assert torch.equal(rollout.response_ids, expected.response_ids)


def test_preallocated_layer_appends_in_place_and_selects_rows() -> None:
    layer = PreallocatedLayer(batch=3, capacity=4)
    first = torch.arange(3 * 2 * 3 * 1, dtype=torch.float32).view(3, 2, 3, 1)
    keys, values = layer.update(first, -first)
    assert torch.equal(keys, first) and torch.equal(values, -first) and layer.get_seq_length() == 3
    buffer = layer.key_buffer
    layer.update(first[:, :, :1] + 100, first[:, :, :1])
    assert layer.key_buffer is buffer and layer.get_seq_length() == 4
    assert torch.equal(layer.keys[:, :, 3], first[:, :, 0] + 100)
    layer.batch_select_indices(torch.tensor([2, 0]))
    assert torch.equal(layer.keys[:, :, :3], first[[2, 0]])
    with pytest.raises(ValueError, match="cannot hold 5"):
        layer.update(first[:2, :, :1], first[:2, :, :1])


def test_a_layer_allocated_ahead_keeps_its_buffers_or_reallocates_for_other_states() -> None:
    layer = PreallocatedLayer(batch=2, capacity=3)
    layer.allocate(heads=2, key_dim=4, value_dim=4, key_dtype=torch.float32, value_dtype=torch.float32,
                   device=torch.device("cpu"))
    assert layer.is_initialized and layer.get_seq_length() == 0
    buffer = layer.key_buffer
    first = torch.randn(2, 2, 2, 4)
    keys, _ = layer.update(first, -first)
    assert layer.key_buffer is buffer and torch.equal(keys, first)
    other = PreallocatedLayer(batch=2, capacity=3)
    other.allocate(heads=2, key_dim=4, value_dim=4, key_dtype=torch.float32, value_dtype=torch.float64,
                   device=torch.device("cpu"))
    half = (-first).to(torch.bfloat16)  # values in another dtype than keys (autocast with rotary keys)
    keys, values = other.update(first, half)
    assert other.value_buffer.dtype == torch.bfloat16 and torch.equal(keys, first) and torch.equal(values, half)
    keys, values = other.update(first[:, :, :1], half[:, :, :1])  # checked once: no reallocation after
    assert torch.equal(values[:, :, :2], half)
    narrow = PreallocatedLayer(batch=2, capacity=3)
    narrow.allocate(heads=1, key_dim=4, value_dim=4, key_dtype=torch.float32, value_dtype=torch.float32,
                    device=torch.device("cpu"))
    keys, _ = narrow.update(first, -first)
    assert narrow.key_buffer.shape == (2, 2, 3, 4) and torch.equal(keys, first)


def test_fused_gelu_is_swapped_in_only_while_sampling(eos_model) -> None:
    from transformers.activations import GELUTanh, NewGELUActivation

    before = [type(m) for m in eos_model.modules()]
    with fused_gelu_while(eos_model) as swapped:
        assert swapped == eos_model.config.n_layer
        assert sum(type(m) is GELUTanh for m in eos_model.modules()) == swapped
        assert not any(type(m) is NewGELUActivation for m in eos_model.modules())
    assert [type(m) for m in eos_model.modules()] == before


def test_gpt2_step_only_for_plain_gpt2_in_eval_mode(eos_model) -> None:
    assert gpt2_parts(eos_model) == (eos_model.transformer, eos_model.lm_head)
    eos_model.train()
    try:
        assert gpt2_parts(eos_model) is None
    finally:
        eos_model.eval()
    assert gpt2_parts(torch.nn.Linear(2, 2)) is None


def test_only_the_prompt_columns_of_the_cache_start_zeroed(eos_model, tokenizer, monkeypatch) -> None:
    """Unwritten positions past the prompt are never read: with buffers that start as NaN (what uninitialized
    memory may hold), the grouped prefill's padding is still zero and the rollout equals the reference."""
    layer = PreallocatedLayer(batch=2, capacity=5, zeroed=2)
    keys = torch.ones(2, 1, 1, 3)
    layer.update(keys, keys)
    assert torch.equal(layer.key_buffer[:, :, 1:2], torch.zeros(2, 1, 1, 3))  # zeroed, not yet written
    monkeypatch.setattr(cached_prefill, "GROUP_COST", 0)
    monkeypatch.setattr(cached_kv, "uninitialized",
                        lambda shape, dtype, device: torch.full(shape, float("nan"), dtype=dtype, device=device))
    params = SamplingParams(max_new_tokens=10, temperature=1.0)
    expected = PLAIN.sample(eos_model, tokenizer, PROMPTS, params, generator=torch.Generator().manual_seed(6))
    for sampler in (CachedSampler(), CachedSampler(shard_merge_work=1), CachedSampler(inplace_kv=False)):
        threads = torch.get_num_threads()
        torch.set_num_threads(2)  # so that CachedSampler(shard_merge_work=1) decodes in shards
        try:
            rollout = sampler.sample(eos_model, tokenizer, PROMPTS, params, generator=torch.Generator().manual_seed(6))
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(rollout.response_ids, expected.response_ids)
        torch.testing.assert_close(rollout.logprobs, expected.logprobs, atol=1e-5, rtol=0)
