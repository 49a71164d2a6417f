"""Fast paths of the training forwards against the plain reference computations.

Fused, chunked log-probs/entropy and their gradients vs ``log_softmax`` + ``gather``; the LM head run
only at response rows vs the full logits; the shared-trunk value head unchanged by packing.
"""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer

import rlhfkit.rl.logprobs as logprobs_module
from rlhfkit.models.head_rows import lm_head_rows
from rlhfkit.models.value import PolicyWithValueHead
from rlhfkit.rl.forward import policy_forward
from rlhfkit.rl.logprobs import fused_logprobs, response_positions, token_logprobs


def reference(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain float32 log_softmax + gather, and entropy -sum p log p."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


@pytest.fixture()
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 3 rows of 17 logits, so every test crosses chunk boundaries (and a ragged last chunk)."""
    monkeypatch.setitem(logprobs_module.CHUNK_ELEMENTS, "cpu", 3 * 17)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.6])
@pytest.mark.parametrize("entropy_weight", [None, 0.0, 0.3])
def test_fused_values_and_gradients_match_log_softmax(small_chunks: None, temperature: float,
                                                      entropy_weight: float | None) -> None:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(10, 17, generator=generator, dtype=torch.float64).float() * 3
    tokens = torch.randint(0, 17, (10,), generator=generator)
    weights = torch.randn(10, generator=generator)
    fused_in, plain_in = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    lp, entropy = fused_logprobs(fused_in, tokens, temperature, with_entropy=entropy_weight is not None)
    ref_lp, ref_entropy = reference(plain_in, tokens, temperature)
    torch.testing.assert_close(lp, ref_lp, atol=1e-5, rtol=0)
    loss, ref_loss = (lp * weights).sum(), (ref_lp * weights).sum()
    if entropy_weight is None:
        assert entropy is None
    else:
        assert entropy is not None
        torch.testing.assert_close(entropy, ref_entropy, atol=1e-5, rtol=0)
        loss = loss + entropy_weight * (entropy * weights.flip(0)).sum()
        ref_loss = ref_loss + entropy_weight * (ref_entropy * weights.flip(0)).sum()
    loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(fused_in.grad, plain_in.grad, atol=1e-5, rtol=0)


def test_entropy_only_gradient_and_bfloat16(small_chunks: None) -> None:
    generator = torch.Generator().manual_seed(1)
    base = (torch.randn(7, 17, generator=generator) * 2).to(torch.bfloat16)
    tokens = torch.randint(0, 17, (7,), generator=generator)
    fused_in = base.clone().requires_grad_(True)
    plain_in = base.float().requires_grad_(True)
    _, entropy = fused_logprobs(fused_in, tokens, 0.9, with_entropy=True)
    _, ref_entropy = reference(plain_in, tokens, 0.9)
    torch.testing.assert_close(entropy, ref_entropy, atol=1e-5, rtol=0)
    entropy.sum().backward()
    ref_entropy.sum().backward()
    assert fused_in.grad is not None and fused_in.grad.dtype == torch.bfloat16
    torch.testing.assert_close(fused_in.grad.float(), plain_in.grad, atol=1e-2, rtol=1e-2)


def test_minus_infinity_logits_give_finite_entropy(small_chunks: None) -> None:
    logits = torch.randn(4, 17)
    logits[:, 5] = -torch.inf
    tokens = torch.tensor([0, 1, 2, 3])
    lp, entropy = fused_logprobs(logits.requires_grad_(True), tokens, 1.0, with_entropy=True)
    (lp.sum() + entropy.sum()).backward()
    finite = logits.detach()[:, [i for i in range(17) if i != 5]]
    ref_lp, ref_entropy = reference(finite, tokens, 1.0)
    torch.testing.assert_close(lp, ref_lp, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, ref_entropy, atol=1e-5, rtol=0)
    assert torch.isfinite(logits.grad).all() and bool((logits.grad[:, 5] == 0).all())


def test_bad_shapes_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"logits must be \(n, V\)"):
        fused_logprobs(torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        fused_logprobs(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long), temperature=-1.0)


def ragged_batch() -> tuple[torch.Tensor, torch.Tensor, int]:
    """Left-padded prompts (start 4) and right-padded responses of lengths 5, 2 and 0."""
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(2, 300, (3, 9), generator=generator)
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0, 0]])
    return ids, mask, 4


def test_head_only_at_response_rows_matches_full_logits() -> None:
    """Log-probs and their gradients through the packed LM head equal those of the full forward."""
    model = tiny_gpt2(tiny_tokenizer())
    ids, mask, start = ragged_batch()
    response = mask[:, start:].float()
    lp, entropy = token_logprobs(model, ids, mask, start, temperature=1.3, with_entropy=True)
    (lp.sum() + entropy.sum()).backward()
    packed_grad = model.transformer.h[0].mlp.c_fc.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    positions = mask.cumsum(-1).sub(1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, start - 1:-1]
    flat_lp, flat_entropy = reference(logits.reshape(-1, logits.shape[-1]), ids[:, start:].reshape(-1), 1.3)
    ref_lp, ref_entropy = flat_lp.view(3, -1) * response, flat_entropy.view(3, -1) * response
    (ref_lp.sum() + ref_entropy.sum()).backward()
    torch.testing.assert_close(lp, ref_lp, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, ref_entropy, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed_grad, model.transformer.h[0].mlp.c_fc.weight.grad, atol=1e-5, rtol=1e-4)
    assert bool((lp[response == 0] == 0).all())


def test_head_rows_hook_is_removed_and_checks_shapes() -> None:
    model = tiny_gpt2(tiny_tokenizer())
    ids, mask, start = ragged_batch()
    with lm_head_rows(model, response_positions(mask, start)) as rows:
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert rows.keep is not None and logits.shape == (int(mask[:, start:].sum()), model.config.vocab_size)
    assert model(input_ids=ids, attention_mask=mask).logits.shape == (3, 9, model.config.vocab_size)
    with pytest.raises(ValueError, match="position mask"), lm_head_rows(model, torch.ones(2, 9, dtype=torch.bool)):
        model(input_ids=ids, attention_mask=mask)


def test_value_head_policy_forward_matches_unpacked_heads() -> None:
    """The shared-trunk path (LM head and value head at response rows only) equals both heads run everywhere."""
    torch.manual_seed(0)
    policy = PolicyWithValueHead(tiny_gpt2(tiny_tokenizer()))
    ids, mask, start = ragged_batch()
    response = mask[:, start:].float()
    with torch.no_grad():
        lp, entropy, values = policy_forward(policy, ids, mask, start, 0.8, with_entropy=True)
        full = policy(ids, mask)
    logits = full.logits[:, start - 1:-1]
    ref_lp, ref_entropy = reference(logits.reshape(-1, logits.shape[-1]), ids[:, start:].reshape(-1), 0.8)
    assert values is not None and entropy is not None
    torch.testing.assert_close(lp, ref_lp.view(3, -1) * response, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, ref_entropy.view(3, -1) * response, atol=1e-5, rtol=0)
    torch.testing.assert_close(values, full.values[:, start - 1:-1] * response, atol=1e-6, rtol=0)
