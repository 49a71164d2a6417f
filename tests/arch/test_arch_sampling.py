"""Samplers on every architecture: log-probs equal an unpadded forward of each row (left padding,
mixed prompt lengths, a chat-templated prompt, float32), and greedy tokens are identical across the
backends; the fixed-shape backends refuse models with recurrent layers, and the cached sampler drops
finished rows from their recurrent states as from keys and values."""

from __future__ import annotations

import functools

import pytest
import torch
from arch_data import USER
from arch_zoo import ARCHITECTURES, FAMILIES

from rlhfkit.models.chat import Conversation
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.rl.rollout import SAMPLERS, CachedSampler, SamplingParams, make_sampler

pytestmark = pytest.mark.arch

PROMPTS = ["Hi", "The movie was great and the actors were", Conversation.prompt(USER), "The food"]
FIXED_SHAPE = ("cached-static", "compiled")  # static caches: attention keys and values only


def _backends(arch: str) -> tuple[str, ...]:
    """The sampler backends that decode ``arch`` (all but the fixed-shape ones for recurrent models)."""
    return tuple(b for b in SAMPLERS if not (FAMILIES[arch].recurrent and b in FIXED_SHAPE))


@functools.lru_cache(maxsize=None)
def _loaded(path: str) -> tuple[torch.nn.Module, object]:
    return load_causal_lm(path, device="cpu", dtype=torch.float32), load_tokenizer(path)


def unpadded_logprobs(model: torch.nn.Module, prompt: list[int], response: list[int]) -> torch.Tensor:
    """Log-probs of ``response`` after ``prompt`` from one forward of this row alone (no padding)."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response).unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("backend", SAMPLERS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_sampled_logprobs_match_an_unpadded_forward(zoo, arch, backend) -> None:
    model, tokenizer = _loaded(str(zoo[arch].policy))
    params = SamplingParams(max_new_tokens=5, do_sample=True, temperature=1.0)
    if backend not in _backends(arch):
        with pytest.raises(ValueError, match="recurrent state.*'cached' or 'hf'"):
            make_sampler(backend).sample(model, tokenizer, PROMPTS, params, torch.Generator().manual_seed(0))
        return
    rollout = make_sampler(backend).sample(model, tokenizer, PROMPTS, params, torch.Generator().manual_seed(0))
    assert int(rollout.prompt_mask[0].sum()) < rollout.prompt_ids.shape[1]  # the short prompt is left-padded
    for row in range(len(PROMPTS)):
        prompt = rollout.prompt_ids[row][rollout.prompt_mask[row].bool()].tolist()
        length = int(rollout.response_mask[row].sum())
        expected = unpadded_logprobs(model, prompt, rollout.response_ids[row, :length].tolist())
        torch.testing.assert_close(rollout.logprobs[row, :length], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_tokens_are_identical_across_backends(zoo, arch) -> None:
    model, tokenizer = _loaded(str(zoo[arch].policy))
    params = SamplingParams(max_new_tokens=6, do_sample=False)
    rollouts = {name: make_sampler(name).sample(model, tokenizer, PROMPTS, params) for name in _backends(arch)}
    reference = rollouts["hf"]
    for name, rollout in rollouts.items():
        assert torch.equal(rollout.response_ids, reference.response_ids), name
        torch.testing.assert_close(rollout.logprobs, reference.logprobs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", [name for name, family in FAMILIES.items() if family.recurrent])
def test_finished_rows_leave_the_recurrent_state_with_their_keys_and_values(zoo, arch) -> None:
    """A row that ends early is dropped from every cache layer (compaction at the first finished row): the rows
    still decoding keep their own recurrent state, so greedy tokens and log-probs equal HF generate's."""
    model, tokenizer = _loaded(str(zoo[arch].policy))
    params = SamplingParams(max_new_tokens=6, do_sample=False)
    free = make_sampler("hf").sample(model, tokenizer, PROMPTS, params)
    stop = int(free.response_ids[1, 1])  # row 1's second token ends it; other rows may run on
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = stop
    try:
        reference = make_sampler("hf").sample(model, tokenizer, PROMPTS, params)
        compacted = CachedSampler(compact_ratio=1.0).sample(model, tokenizer, PROMPTS, params)
    finally:
        model.generation_config.eos_token_id = saved
    lengths = reference.response_mask.sum(-1)
    assert int(lengths.min()) < 6 < int(lengths.max()) + 1, lengths  # some rows stopped, some ran to the end
    assert torch.equal(compacted.response_ids, reference.response_ids)
    torch.testing.assert_close(compacted.logprobs, reference.logprobs, atol=1e-4, rtol=0)
