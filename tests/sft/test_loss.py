"""The SFT loss through the model: the summed NLL and gradients of full logits + cross-entropy, with the LM head run
only at target positions (and over vocabulary blocks past the logit budget)."""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer
from torch import nn

import rlhfkit.models.head_logprobs as head_module
from rlhfkit.sft.loss import IGNORE_INDEX, completion_nll_sum, model_nll_sum


def test_completion_nll_sum_hand_values() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    labels = torch.tensor([[IGNORE_INDEX, 0, 1]])  # position 0 predicts token 0 (p 0.5), position 1 token 1 (0.8)
    nll, count = completion_nll_sum(logits, labels)
    assert int(count) == 2
    torch.testing.assert_close(nll, -(torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.8))))


class Wrapper(nn.Module):
    """Stands for DDP: forwards the call, has no ``get_output_embeddings`` of its own."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, **kwargs):  # noqa: ANN003, ANN201
        return self.module(**kwargs)


@pytest.mark.parametrize("path", ["rows", "blocks", "wrapped", "unhooked"])
def test_model_nll_sum_matches_full_logits(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    model = tiny_gpt2(tiny_tokenizer())
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (3, 10), generator=generator)
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0  # right padding
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    labels[:, :4] = IGNORE_INDEX  # the prompt
    expected, count = completion_nll_sum(model(input_ids=ids, attention_mask=mask).logits, labels)
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    called, inner = model, None
    if path == "blocks":
        monkeypatch.setitem(head_module.HEAD_LOGIT_ELEMENTS, "cpu", 0)
        monkeypatch.setitem(head_module.HEAD_CHUNK_ELEMENTS, "cpu", 100 * int(count))  # blocks of 100 columns
    elif path == "wrapped":
        called, inner = Wrapper(model), model
    elif path == "unhooked":
        called = Wrapper(model)  # no head to hook: the full logits are selected after the forward
    nll, tokens = model_nll_sum(called, ids, mask, labels, inner=inner)
    grads = torch.autograd.grad(nll, list(model.parameters()))
    assert int(tokens) == int(count) == 6 + 6 + 3  # columns 4-9, and 4-6 in the padded row
    torch.testing.assert_close(nll, expected, atol=1e-4, rtol=1e-6)
    for grad, want in zip(grads, expected_grads):
        torch.testing.assert_close(grad, want, atol=1e-5, rtol=1e-4)
