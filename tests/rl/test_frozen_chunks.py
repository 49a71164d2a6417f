"""No-grad forwards (reference, old log-probs, values) run in row chunks with the whole batch's results
(up to float32 rounding: GEMM blocking differs with the row count)."""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer

import rlhfkit.rl.logprobs as logprobs_module
from rlhfkit.models.value import PolicyWithValueHead
from rlhfkit.rl.forward import policy_forward
from rlhfkit.rl.logprobs import frozen_chunk_rows, row_slices, token_logprobs


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_gpt2(tiny_tokenizer())


def rollout_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """7 rows of a left-padded 4-token prompt and a right-padded 5-token response (uneven lengths)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (7, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    mask[3, :1] = 0
    mask[1, 6:] = 0
    mask[5, 5:] = 0
    return ids, mask, 4


def test_frozen_chunk_rows_hand_values() -> None:
    cpu = torch.device("cpu")
    assert frozen_chunk_rows(32, 4096, cpu) == (1 << 21) // (32 * 4096) == 16
    assert frozen_chunk_rows(48, 4096, cpu) == 10
    assert frozen_chunk_rows(10_000, 50_000, cpu) == 1  # never zero rows


def test_row_slices_only_without_gradients(model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, _, start = rollout_batch(model.config.vocab_size)
    monkeypatch.setitem(logprobs_module.FROZEN_LOGIT_ELEMENTS, "cpu", 3 * 5 * model.config.vocab_size)
    assert row_slices(model, ids, start) is None  # gradients on: one forward
    with torch.no_grad():
        assert row_slices(model, ids, start) == [slice(0, 3), slice(3, 5), slice(5, 7)]  # balanced, not 3 + 3 + 1
        assert row_slices(model, ids[:3], start) is None  # fits in one chunk


@pytest.mark.parametrize("with_entropy", [False, True])
def test_chunked_token_logprobs_match_whole(model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch,
                                            with_entropy: bool) -> None:
    ids, mask, start = rollout_batch(model.config.vocab_size)
    with torch.no_grad():
        whole = token_logprobs(model, ids, mask, start, 0.7, with_entropy)
        monkeypatch.setitem(logprobs_module.FROZEN_LOGIT_ELEMENTS, "cpu", 2 * 5 * model.config.vocab_size)
        chunked = token_logprobs(model, ids, mask, start, 0.7, with_entropy)
    for a, b in zip(whole if with_entropy else (whole,), chunked if with_entropy else (chunked,)):
        assert a.shape == b.shape == (7, 5)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_chunked_value_head_forward_matches_whole(model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = PolicyWithValueHead(model)
    ids, mask, start = rollout_batch(model.config.vocab_size)
    with torch.no_grad():
        whole = policy_forward(policy, ids, mask, start, 1.0, with_entropy=True)
        monkeypatch.setitem(logprobs_module.FROZEN_LOGIT_ELEMENTS, "cpu", 3 * 5 * model.config.vocab_size)
        assert len(row_slices(policy, ids, start) or []) == 3
        chunked = policy_forward(policy, ids, mask, start, 1.0, with_entropy=True)
    for a, b in zip(whole, chunked):
        assert a is not None and b is not None and a.shape == (7, 5)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_frozen_logprobs_run_the_trunk_in_hidden_budget_chunks_and_the_head_in_logit_chunks(
        model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without gradients the trunk runs over as many rows as FROZEN_HIDDEN_ELEMENTS allows and the head over
    FROZEN_LOGIT_ELEMENTS / V positions at a time, with the log-probs of the autograd path."""
    from rlhfkit.models.head_rows import logits_are_head_output, output_head
    from rlhfkit.rl.logprobs import trunk_row_slices

    ids, mask, start = rollout_batch(model.config.vocab_size)
    expected = token_logprobs(model, ids, mask, start, 0.7).detach()  # gradients on: one plain forward
    assert logits_are_head_output(model, ids)
    trunk_rows, head_rows = [], []
    hooks = [model.transformer.wte.register_forward_pre_hook(lambda m, a: trunk_rows.append(a[0].shape[0])),
             output_head(model).register_forward_pre_hook(  # the caller's chunks: (n, H); the model's own call: (b, K, H)
                 lambda m, a: head_rows.append(a[0].shape[0]) if a[0].dim() == 2 else None)]
    width = model.config.n_embd
    try:
        for rows_per_trunk, positions_per_head in ((7, 4), (3, 1000)):
            trunk_rows.clear()
            head_rows.clear()
            monkeypatch.setitem(logprobs_module.FROZEN_HIDDEN_ELEMENTS, "cpu", rows_per_trunk * ids.shape[1] * width)
            monkeypatch.setitem(logprobs_module.FROZEN_LOGIT_ELEMENTS, "cpu", positions_per_head * model.config.vocab_size)
            with torch.no_grad():
                got = token_logprobs(model, ids, mask, start, 0.7)
                slices = trunk_row_slices(model, ids)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
            assert bool((got[mask[:, start:] == 0] == 0).all())
            real = int(mask[:, start:].sum())
            if rows_per_trunk == 7:
                assert slices is None and trunk_rows == [7]
                assert head_rows == [4] * (real // 4) + ([real % 4] if real % 4 else [])
            else:
                assert slices == [slice(0, 3), slice(3, 5), slice(5, 7)] and trunk_rows == [3, 2, 2]
                assert sum(head_rows) == real
    finally:
        for hook in hooks:
            hook.remove()


def test_value_head_frozen_forward_matches_the_autograd_forward(model: torch.nn.Module,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """PPO's old log-probs and values from the value-head policy without gradients (trunk chunks of 3 rows, head
    chunks of 4 positions) equal the ones the training forward computes."""
    policy = PolicyWithValueHead(model)
    ids, mask, start = rollout_batch(model.config.vocab_size)
    expected = [t.detach() for t in policy_forward(policy, ids, mask, start, 0.7, with_entropy=True)]
    monkeypatch.setitem(logprobs_module.FROZEN_HIDDEN_ELEMENTS, "cpu", 3 * ids.shape[1] * model.config.n_embd)
    monkeypatch.setitem(logprobs_module.FROZEN_LOGIT_ELEMENTS, "cpu", 4 * model.config.vocab_size)
    calls = []
    frozen = logprobs_module.frozen_logprobs
    monkeypatch.setattr("rlhfkit.rl.forward.frozen_logprobs", lambda *a, **k: calls.append(1) or frozen(*a, **k))
    with torch.no_grad():
        got = policy_forward(policy, ids, mask, start, 0.7, with_entropy=True)
    assert calls == [1]
    for a, b in zip(got, expected):
        assert a is not None and a.shape == (7, 5)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert bool((a[mask[:, start:] == 0] == 0).all())


def test_a_model_whose_logits_are_not_its_heads_output_keeps_whole_forwards() -> None:
    """The probe sees logits scaled after the head (as Cohere's or soft-capped ones are) or a forward that fails on
    its two tokens, and the frozen log-probs then come from the model's own logits."""
    from rlhfkit.models.head_rows import logits_are_head_output

    class Scaled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module, scale: float = 0.5, fail_below: int = 0) -> None:
            super().__init__()
            self.inner, self.scale, self.fail_below, self.config = inner, scale, fail_below, inner.config

        def get_output_embeddings(self) -> torch.nn.Module:
            return self.inner.get_output_embeddings()

        def get_input_embeddings(self) -> torch.nn.Module:
            return self.inner.get_input_embeddings()

        def forward(self, input_ids: torch.Tensor, **kwargs):
            if input_ids.shape[1] < self.fail_below:
                raise RuntimeError("too short")
            out = self.inner(input_ids=input_ids, **kwargs)
            out.logits = out.logits * self.scale
            return out

    inner = tiny_gpt2(tiny_tokenizer())
    ids, mask, start = rollout_batch(inner.config.vocab_size)
    for model in (Scaled(inner), Scaled(inner, scale=1.0, fail_below=3)):
        assert not logits_are_head_output(model, ids)
        expected = token_logprobs(model, ids, mask, start).detach()
        with torch.no_grad():
            torch.testing.assert_close(token_logprobs(model, ids, mask, start), expected, atol=1e-5, rtol=0)
    assert logits_are_head_output(Scaled(inner, scale=1.0), ids)
