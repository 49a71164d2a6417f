"""The reward model's last-block-at-one-position trunk computes what the full trunk does, with its gradients."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2Model

import rlhfkit.models.reward_model as reward_module
from rlhfkit.models.last_token import last_token_hidden, supports_last_token
from rlhfkit.models.reward_model import RewardModel, RewardModelSettings, last_token_index


def trunk(layers: int = 3, dropout: float = 0.0, scale_by_layer: bool = False) -> GPT2Model:
    config = GPT2Config(vocab_size=50, n_positions=16, n_embd=24, n_layer=layers, n_head=3, resid_pdrop=dropout,
                        embd_pdrop=dropout, attn_pdrop=dropout, scale_attn_by_inverse_layer_idx=scale_by_layer)
    torch.manual_seed(0)
    return GPT2Model(config)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """5 rows of 11 tokens: full, right-padded and left-padded rows."""
    ids = torch.randint(3, 50, (5, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 2:] = 0
    mask[3, :4] = 0
    return ids, mask


@pytest.mark.parametrize("scale_by_layer", [False, True])
def test_matches_full_trunk_values_and_gradients(scale_by_layer: bool) -> None:
    model = trunk(scale_by_layer=scale_by_layer).eval()
    ids, mask = batch()
    index = last_token_index(mask)
    assert index.tolist() == [10, 6, 1, 10, 10]
    weights = torch.randn(5, 24, generator=torch.Generator().manual_seed(2))
    results = []
    for fast in (False, True):
        model.zero_grad()
        if fast:
            hidden = last_token_hidden(model, ids, mask, index)
        else:
            hidden = model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state[torch.arange(5), index]
        (hidden * weights).sum().backward()
        results.append((hidden.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (full, full_grads), (fast, fast_grads) = results
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    assert full_grads.keys() == fast_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert model.h[-1].mlp.c_fc.weight.grad.abs().sum() > 0


def test_supported_trunks_only() -> None:
    assert supports_last_token(trunk().eval())
    assert supports_last_token(trunk(dropout=0.0).train())
    assert not supports_last_token(trunk(dropout=0.1).train())  # dropout in effect: leave the trunk alone
    assert supports_last_token(trunk(dropout=0.1).eval())
    assert not supports_last_token(trunk(layers=1))
    assert not supports_last_token(torch.nn.Linear(2, 2))


def test_trunk_is_restored_after_the_call() -> None:
    model = trunk().eval()
    blocks, norm = model.h, model.ln_f
    ids, mask = batch()
    last_token_hidden(model, ids, mask, last_token_index(mask))
    assert model.h is blocks and model.ln_f is norm and len(model.h) == 3


def test_reward_model_forward_same_with_and_without_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer = type("Tok", (), {"pad_token_id": 0, "eos_token_id": 1})()
    model = RewardModel(trunk(), tokenizer, RewardModelSettings(num_heads=3)).eval()
    ids, mask = batch()
    fast = model(ids, mask)
    monkeypatch.setattr(reward_module, "supports_last_token", lambda module: False)
    torch.testing.assert_close(fast, model(ids, mask), atol=1e-5, rtol=1e-5)
    assert fast.shape == (5, 3)


def test_shared_prompts_give_the_scores_and_gradients_of_whole_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Right-padded rows that share their prompt (a group's completions) run it once through the cache;
    rewards and gradients equal whole rows', with a different prompt and ragged responses in the batch."""
    import rlhfkit.models.shared_prefix as shared_module

    model = RewardModel(trunk(), tokenizer=None, settings=RewardModelSettings(max_length=16))
    prompt = torch.randint(3, 50, (2, 5), generator=torch.Generator().manual_seed(3))
    ids = torch.randint(3, 50, (6, 11), generator=torch.Generator().manual_seed(4))
    ids[:4, :5], ids[4:, :5] = prompt[0], prompt[1]
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[4, 6:] = 0
    start = torch.tensor([5, 5, 5, 5, 5, 5])
    made = []
    monkeypatch.setattr(reward_module, "shared_prefix", lambda *a: made.append(shared_module.shared_prefix(*a)) or made[-1])
    results = []
    for fraction in (shared_module.MIN_SAVED_FRACTION, 2.0):
        monkeypatch.setattr(shared_module, "MIN_SAVED_FRACTION", fraction)
        model.zero_grad()
        rewards = model(ids, mask, response_start=start)
        (rewards.squeeze(-1) * torch.arange(1.0, 7.0)).sum().backward()
        results.append((rewards.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert made[0] is not None and made[1] is None  # shared, then whole rows
    (shared, shared_grads), (whole, whole_grads) = results
    torch.testing.assert_close(shared, whole, atol=1e-5, rtol=1e-5)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert model(ids, mask).shape == (6, 1)  # without response starts: whole rows


def test_two_threads_read_one_trunk_at_once_without_seeing_each_other() -> None:
    """The trunk without its last block is a view, not a swap of the trunk's blocks: a second thread entering
    while the first runs used to take the already-cut trunk for the whole one and cut a second block."""
    import threading

    from rlhfkit.utils.runtime import side_by_side

    model = trunk(layers=4).eval()
    ids, mask = batch()
    index = last_token_index(mask)
    alone = last_token_hidden(model, ids, mask, index)
    barrier = threading.Barrier(2, timeout=10)
    cut = model.h[2].register_forward_pre_hook(lambda module, args: (barrier.wait(), None)[1])  # both inside
    try:
        together = side_by_side([lambda: last_token_hidden(model, ids, mask, index)] * 2)
    finally:
        cut.remove()
    assert len(model.h) == 4 and isinstance(model.ln_f, torch.nn.LayerNorm)
    for hidden in together:
        torch.testing.assert_close(hidden, alone, atol=1e-6, rtol=1e-6)
