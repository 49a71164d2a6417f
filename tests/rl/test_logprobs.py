"""token_logprobs: generate-compatible positions, memory-light log-softmax, entropy, gradients."""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_gpt2
from torch import nn

from rlhfkit.rl.logprobs import position_ids_from_mask, selective_logprobs, token_logprobs


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_gpt2(tokenizer)


class NoLogitsToKeep(nn.Module):
    """A causal LM whose forward has no ``logits_to_keep`` (exercises the slicing fallback)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):  # noqa: ANN001, ANN201
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache)


def test_position_ids_from_mask() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0], [0, 1, 1, 0, 0]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 0], [0, 0, 1, 0, 0]])
    assert torch.equal(position_ids_from_mask(mask), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selective_logprobs_matches_log_softmax(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 5, 17, generator=generator) * 3).to(dtype)
    tokens = torch.randint(0, 17, (3, 5), generator=generator)
    logprobs, entropy = selective_logprobs(logits, tokens, temperature=0.7, with_entropy=True)
    full = torch.log_softmax(logits.float() / 0.7, dim=-1)
    assert logprobs.dtype == torch.float32 and entropy is not None
    torch.testing.assert_close(logprobs, full.gather(-1, tokens.unsqueeze(-1)).squeeze(-1))
    torch.testing.assert_close(entropy, -(full.exp() * full).sum(-1))
    with pytest.raises(ValueError, match="temperature"):
        selective_logprobs(logits, tokens, temperature=0.0)


def test_left_padding_does_not_change_logprobs(model: nn.Module, tokenizer) -> None:
    """The same prompt+response scored alone and left-padded in a batch gives the same log-probs."""
    prompt = tokenizer("What a lovely day!")["input_ids"]
    response = tokenizer(" The sky is blue")["input_ids"]
    alone = torch.tensor([prompt + response])
    pad = tokenizer.pad_token_id
    padded = torch.tensor([[pad] * 3 + prompt + response])
    padded_mask = torch.tensor([[0] * 3 + [1] * (len(prompt) + len(response))])
    with torch.no_grad():
        single = token_logprobs(model, alone, torch.ones_like(alone), len(prompt), temperature=1.3)
        batched = token_logprobs(model, padded, padded_mask, len(prompt) + 3, temperature=1.3)
    torch.testing.assert_close(single, batched, atol=1e-5, rtol=0)
    # Without generate-style positions, GPT-2 would see shifted positions and disagree:
    with torch.no_grad():
        naive = model(input_ids=padded, attention_mask=padded_mask).logits[:, len(prompt) + 2:-1]
    naive_lp = torch.log_softmax(naive / 1.3, -1).gather(-1, torch.tensor([response]).unsqueeze(-1)).squeeze(-1)
    assert (naive_lp - single).abs().max() > 1e-3


def test_fallback_without_logits_to_keep_agrees(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 300, (2, 9), generator=generator)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9])
    with torch.no_grad():
        kept, entropy = token_logprobs(model, ids, mask, 5, temperature=0.9, with_entropy=True)
        sliced, entropy_sliced = token_logprobs(NoLogitsToKeep(model), ids, mask, 5, temperature=0.9, with_entropy=True)
    assert kept.shape == entropy.shape == (2, 4)
    torch.testing.assert_close(kept, sliced, atol=1e-6, rtol=0)
    torch.testing.assert_close(entropy, entropy_sliced, atol=1e-6, rtol=0)


def test_token_logprobs_is_differentiable(model: nn.Module) -> None:
    ids = torch.randint(2, 300, (2, 6), generator=torch.Generator().manual_seed(2))
    logprobs = token_logprobs(model, ids, torch.ones_like(ids), 3)
    logprobs.sum().backward()
    assert model.transformer.wte.weight.grad is not None and model.transformer.wte.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("start", [0, 6])
def test_bad_response_start(model: nn.Module, start: int) -> None:
    ids = torch.ones((1, 6), dtype=torch.long)
    with pytest.raises(ValueError, match="response_start"):
        token_logprobs(model, ids, torch.ones_like(ids), start)
