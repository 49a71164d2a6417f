"""A prefill whose products skip the padding (RowPacking) gives the padded prefill's logits and cache."""

from __future__ import annotations

import pytest
import torch
from test_cached_llama import tiny_llama_family

from rlhfkit.models.positions import position_ids_from_mask
from rlhfkit.rl.cached_gpt2 import GPT2Stepper, gpt2_parts, prefill_bias
from rlhfkit.rl.cached_kv import preallocated_cache, set_prefill_rows
from rlhfkit.rl.cached_llama import LlamaStepper, llama_parts
from rlhfkit.rl.cached_prefill import length_groups
from rlhfkit.rl.row_packing import RowPacking

PROMPTS = ["The movie was great and the actors", "Hi", "What a lovely day! The sun is", "I"]


def test_packing_by_hand() -> None:
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 0, 1]])
    packing = RowPacking(mask)
    padded = torch.arange(9.0).view(3, 3, 1) + 1
    packed = packing.packed(padded)
    assert packed.flatten().tolist() == [2, 3, 4, 5, 6, 9]
    assert packing.padded(packed).flatten().tolist() == [0, 2, 3, 4, 5, 6, 0, 0, 9]
    assert packing.last_rows(packed).flatten().tolist() == [3, 6, 9]
    assert RowPacking.of(torch.ones(2, 3)) is None  # nothing to skip
    assert RowPacking.of(torch.tensor([[0, 1], [0, 0]])) is None  # an empty row has no last position


def test_length_groups_by_padding_cost_by_hand() -> None:
    lengths = [2, 10, 2, 10]
    # one group: 4 rows x 10**2 / 100 + 3 = 7; two: 2 x 0.04 + 2 x 1 + 6 = 8.08
    assert length_groups(lengths, group_cost=3, row_cost=lambda width: width * width / 100) == [[0, 2, 1, 3]]
    # at a padding cost of width**2 / 10: one group 43 against two 22.8
    assert length_groups(lengths, group_cost=1, row_cost=lambda width: width * width / 10) == [[0, 2], [1, 3]]


def _prefill(stepper_class: type, model: torch.nn.Module, parts: tuple, ids: torch.Tensor, mask: torch.Tensor,
             packed: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Last logits and each layer's cached keys and values of one prefill, its products packed or padded."""
    cache = preallocated_cache(model, ids.shape[0], ids.shape[1] + 2, zeroed=ids.shape[1])
    stepper = stepper_class(*parts, cache, mask)
    positions = position_ids_from_mask(mask)
    set_prefill_rows(cache, torch.arange(ids.shape[0]), 0)
    try:
        with torch.no_grad():
            logits = stepper.step(*parts, cache, ids, positions, prefill_bias(mask, torch.float32),
                                  RowPacking.of(mask) if packed else None)
    finally:
        set_prefill_rows(cache, None)
    return logits, [buffer[:, :, :ids.shape[1]] for layer in cache.layers
                    for buffer in (layer.key_buffer, layer.value_buffer)]


@pytest.mark.parametrize("architecture", ["gpt2", "LlamaConfig", "Qwen3Config"])
def test_packed_prefill_equals_the_padded_one(architecture, eos_model, tokenizer) -> None:
    if architecture == "gpt2":
        model, stepper_class, parts = eos_model, GPT2Stepper, gpt2_parts(eos_model)
    else:
        model = tiny_llama_family(architecture, tokenizer)
        stepper_class, parts = LlamaStepper, llama_parts(model)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    ids, mask = batch.input_ids, batch.attention_mask
    assert not bool(mask.all())
    expected_logits, expected_cache = _prefill(stepper_class, model, parts, ids, mask, packed=False)
    logits, cache = _prefill(stepper_class, model, parts, ids, mask, packed=True)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=0)
    real = mask.bool()[:, None, :, None]
    for buffer, expected in zip(cache, expected_cache):
        torch.testing.assert_close(buffer * real, expected * real, atol=1e-5, rtol=0)
        assert bool((buffer.masked_fill(real, 0) == 0).all())  # padding: zero keys and values


def test_the_sampler_prefills_prompts_of_mixed_lengths_in_one_packed_forward(eos_model, tokenizer, monkeypatch) -> None:
    """With the hand-written step a padded row costs only its attention, so prompts of 1-9 tokens prefill as one
    group (a padded forward would cut them into several), and the products see only the real positions."""
    from rlhfkit.rl import cached_gpt2, cached_prefill
    from rlhfkit.rl.rollout import CachedSampler, SamplingParams

    groups: list[list[list[int]]] = []
    real_positions: list[int] = []
    original_groups, original_step = cached_prefill.length_groups, cached_gpt2.gpt2_step

    def recorded_groups(*args, **kwargs):
        groups.append(original_groups(*args, **kwargs))
        return groups[-1]

    def recorded_step(trunk, lm_head, cache, ids, positions, bias, packing=None):
        if packing is not None:
            real_positions.append(int(packing.real.numel()))
        return original_step(trunk, lm_head, cache, ids, positions, bias, packing)

    monkeypatch.setattr(cached_prefill, "length_groups", recorded_groups)
    monkeypatch.setattr(cached_gpt2, "gpt2_step", recorded_step)
    lengths = [len(tokenizer(p).input_ids) for p in PROMPTS]
    assert len(original_groups(lengths)) > 1  # grouped by padded width they would split
    CachedSampler(shard_rows=False).sample(eos_model, tokenizer, PROMPTS, SamplingParams(max_new_tokens=3),
                                           generator=torch.Generator().manual_seed(0))
    assert len(groups) == 1 and len(groups[0]) == 1
    assert real_positions == [sum(lengths)]
