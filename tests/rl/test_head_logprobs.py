"""Training log-probs with the LM head run over vocabulary blocks (rlhfkit.models.head_logprobs): the log-probs, entropy and
gradients of the whole-logits path, without a (positions, vocabulary) tensor in the forward or the backward."""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer
from torch import nn

import rlhfkit.models.head_logprobs as head_module
from rlhfkit.models.value import PolicyWithValueHead
from rlhfkit.rl.forward import policy_forward
from rlhfkit.models.head_logprobs import chunked_head_applies, head_logprobs, training_head
from rlhfkit.rl.logprobs import token_logprobs

CPU = torch.device("cpu")


def reference(hidden: torch.Tensor, head: nn.Linear, tokens: torch.Tensor, temperature: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropy through whole logits and autograd (the independent formula)."""
    logp = torch.log_softmax(head(hidden).float() / temperature, dim=-1)
    return logp.gather(1, tokens[:, None]).squeeze(1), -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("temperature", "entropy_weight"), [(1.0, 0.0), (0.7, 0.3), (1.3, None)])
def test_chunked_head_matches_whole_logits(monkeypatch: pytest.MonkeyPatch, bias: bool, temperature: float,
                                           entropy_weight: float | None) -> None:
    """entropy_weight None: only the entropy carries a gradient; 0.0: only the log-probs."""
    monkeypatch.setitem(head_module.HEAD_CHUNK_ELEMENTS, "cpu", 30 * 11)  # blocks of 11 columns, the last of 6
    generator = torch.Generator().manual_seed(0)
    head = nn.Linear(16, 50, bias=bias)
    hidden = torch.randn(30, 16, generator=generator, requires_grad=True)
    tokens = torch.randint(0, 50, (30,), generator=generator)
    weights = torch.randn(30, generator=generator), torch.randn(30, generator=generator)
    parameters = [hidden, *head.parameters()]

    def loss(logprobs: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
        if entropy_weight is None:
            return (entropy * weights[1]).sum()
        return (logprobs * weights[0]).sum() + entropy_weight * (entropy * weights[1]).sum()

    logprobs, entropy = head_logprobs(hidden, head, tokens, temperature, with_entropy=True)
    grads = torch.autograd.grad(loss(logprobs, entropy), parameters)
    expected_logprobs, expected_entropy = reference(hidden, head, tokens, temperature)
    expected = torch.autograd.grad(loss(expected_logprobs, expected_entropy), parameters)
    torch.testing.assert_close(logprobs, expected_logprobs, atol=1e-6, rtol=0)
    torch.testing.assert_close(entropy, expected_entropy, atol=1e-5, rtol=0)
    for grad, want in zip(grads, expected):
        torch.testing.assert_close(grad, want, atol=1e-5, rtol=1e-5)


def test_chunked_head_under_bfloat16_autocast_is_as_close_to_float32_as_whole_logits() -> None:
    generator = torch.Generator().manual_seed(1)
    head = nn.Linear(32, 64)
    hidden = torch.randn(40, 32, generator=generator, requires_grad=True)
    tokens = torch.randint(0, 64, (40,), generator=generator)
    parameters = [hidden, *head.parameters()]
    exact = torch.autograd.grad(reference(hidden, head, tokens, 1.0)[0].sum(), parameters)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = torch.autograd.grad(head_logprobs(hidden, head, tokens)[0].sum(), parameters)
        whole = torch.autograd.grad(reference(hidden, head, tokens, 1.0)[0].sum(), parameters)
    for ours, theirs, want in zip(chunked, whole, exact):
        assert ours.dtype == want.dtype == torch.float32
        assert (ours - want).abs().max() <= 1.5 * (theirs - want).abs().max() + 1e-6


def test_chunked_head_applies_only_to_plain_linear_heads_above_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(head_module.HEAD_LOGIT_ELEMENTS, "cpu", 100 * 50)
    head = nn.Linear(8, 50)
    assert chunked_head_applies(head, 101, CPU) and not chunked_head_applies(head, 100, CPU)
    assert not chunked_head_applies(None, 10_000, CPU)

    class Adapted(nn.Linear):  # e.g. an adapter layer: its own forward must run
        pass

    assert not chunked_head_applies(Adapted(8, 50), 10_000, CPU)
    handle = head.register_forward_hook(lambda module, args, output: output * 2)
    assert not chunked_head_applies(head, 10_000, CPU)
    handle.remove()
    head.forward = lambda inputs: nn.functional.linear(inputs, head.weight) * 2  # e.g. accelerate's offload wrapper
    assert not chunked_head_applies(head, 10_000, CPU)
    del head.forward
    assert chunked_head_applies(head, 10_000, CPU)
    head.weight = nn.Parameter(torch.empty(0))  # a sharded parameter's local view (ZeRO-3, FSDP between forwards)
    assert not chunked_head_applies(head, 10_000, CPU)


def rollout_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """6 rows of a left-padded 4-token prompt and a right-padded 5-token response (uneven lengths)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (6, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    mask[1, 6:] = 0
    mask[4, 5:] = 0
    return ids, mask, 4


def saved_logit_rows(run, vocab: int, model: nn.Module) -> tuple[object, list[int]]:  # noqa: ANN001
    """``run()``'s result and, for every tensor of logits (last dimension ``vocab``, not a view of a weight)
    autograd saved for backward while it ran, its number of rows."""
    sizes: list[int] = []
    weights = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() >= 2 and tensor.shape[-1] == vocab and tensor.untyped_storage().data_ptr() not in weights:
            sizes.append(tensor.numel() // vocab)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        return run(), sizes


@pytest.mark.parametrize("value_head", [False, True])
def test_training_forward_over_the_budget_chunks_the_head_with_the_same_gradients(
        monkeypatch: pytest.MonkeyPatch, value_head: bool) -> None:
    """A GPT-2 (head tied to the input embeddings) scored with gradients: over the logit budget no saved tensor
    holds logits, and log-probs, entropy, values and every gradient are those of the
    whole-logits forward."""
    model = tiny_gpt2(tiny_tokenizer())
    ids, mask, start = rollout_batch(model.config.vocab_size)
    positions, vocab = int(mask[:, start:].sum()), model.config.vocab_size
    scored = PolicyWithValueHead(model) if value_head else model

    def forward() -> list[torch.Tensor]:
        if value_head:
            return [t for t in policy_forward(scored, ids, mask, start, 0.8, with_entropy=True) if t is not None]
        return list(token_logprobs(scored, ids, mask, start, 0.8, with_entropy=True))

    def run() -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
        outputs, sizes = saved_logit_rows(forward, vocab, scored)
        loss = outputs[0].sum() + 0.1 * outputs[1].sum() + (outputs[2].square().sum() if value_head else 0)
        grads = torch.autograd.grad(loss, list(scored.parameters()))
        return outputs, grads, sizes

    assert training_head(model, ids, positions) is None  # the tiny logits are far below the budget
    whole, whole_grads, whole_sizes = run()
    assert max(whole_sizes) == positions  # the whole-logits path saves them all
    monkeypatch.setitem(head_module.HEAD_LOGIT_ELEMENTS, "cpu", positions * vocab - 1)
    monkeypatch.setitem(head_module.HEAD_CHUNK_ELEMENTS, "cpu", positions * 70)  # blocks of 70 of 320 columns
    assert training_head(model, ids, positions) is model.lm_head
    with torch.no_grad():
        assert training_head(model, ids, positions) is None  # no gradients: the frozen path chunks on its own
    chunked, chunked_grads, chunked_sizes = run()
    assert chunked_sizes == []  # only (positions,) statistics are kept
    for ours, want in zip(chunked, whole):
        torch.testing.assert_close(ours, want, atol=1e-5, rtol=0)
    for ours, want in zip(chunked_grads, whole_grads):
        torch.testing.assert_close(ours, want, atol=1e-5, rtol=1e-4)
