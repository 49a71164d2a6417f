"""Rows that share a prefix run it once: grouping by hand, which models may share, and that a shared
prompt gives the log-probs, entropies and gradients of whole-row forwards."""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer
from transformers import GPT2Config, GPT2LMHeadModel, MistralConfig, MistralForCausalLM

import rlhfkit.models.shared_prefix as shared_module
from rlhfkit.models.positions import position_ids_from_mask
from rlhfkit.models.shared_prefix import (
    can_share_prefix,
    keeps_every_position,
    live_dropout,
    prefix_groups,
    shared_prefix,
)
from rlhfkit.rl.logprobs import prompt_prefix, token_logprobs
from rlhfkit.utils.precision import disable_dropout


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_gpt2(tiny_tokenizer())


def group_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """3 prompts x 3 completions: prompts of 5 columns (two left-padded), responses of 6 (some right-padded)."""
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, vocab, (3, 5), generator=generator).repeat_interleave(3, 0)
    responses = torch.randint(3, vocab, (9, 6), generator=generator)
    mask = torch.ones((9, 11), dtype=torch.long)
    mask[0:3, :2] = 0
    mask[6:9, :1] = 0
    mask[1, 8:] = 0
    mask[5, 6:] = 0
    return torch.cat([prompts, responses], 1), mask, 5


def test_prefix_groups_by_hand() -> None:
    ids = torch.tensor([[1, 2, 3], [1, 2, 4], [5, 2, 3], [1, 2, 9], [7, 2, 3]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1]])
    mask_differs = torch.tensor([[1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1]])
    groups = prefix_groups(ids, mask, 2)
    rows_of = {g: [r for r in range(5) if groups.group_of_row[r] == g] for g in range(len(groups.representatives))}
    assert sorted(rows_of.values()) == [[0, 1, 3], [2], [4]]
    assert all(groups.representatives[g] == rows[0] for g, rows in rows_of.items())
    assert groups.saved_fraction(2, 3) == pytest.approx(2 * 2 / (5 * 3))
    padded = prefix_groups(ids, mask_differs, 2)  # row 1's padded prefix is row 4's, not row 0's
    assert sorted(sorted(r for r in range(5) if padded.group_of_row[r] == g) for g in range(3)) == [[0, 3], [1, 4], [2]]
    # a padded position's token does not matter, only that it is padding
    assert len(prefix_groups(torch.tensor([[4, 2], [8, 2]]), torch.tensor([[0, 1], [0, 1]]), 2).representatives) == 1


def test_which_models_share() -> None:
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, attn_pdrop=0.1)).eval()
    assert not live_dropout(gpt2) and can_share_prefix(gpt2, 20)
    gpt2.train()
    assert live_dropout(gpt2) and not can_share_prefix(gpt2, 20)
    disable_dropout(gpt2)
    assert not live_dropout(gpt2) and can_share_prefix(gpt2, 20)
    small = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
             "intermediate_size": 32, "vocab_size": 50}
    window = MistralForCausalLM(MistralConfig(**small, sliding_window=8)).eval()
    assert keeps_every_position(window, 8) and not keeps_every_position(window, 9)  # a cropped window hides the prefix


def test_nothing_shared_without_repeats_or_gain(model: torch.nn.Module) -> None:
    ids, mask, start = group_batch(model.config.vocab_size)
    positions = position_ids_from_mask(mask)
    assert shared_prefix(model, ids[::3], mask[::3], positions[::3], start - 1) is None  # three distinct prompts
    assert shared_prefix(model, ids, mask, positions, 0) is None
    assert shared_prefix(model, ids[:, :3], mask[:, :3], positions[:, :3], 1) is not None
    assert shared_prefix(model, ids, mask, positions, 1) is None  # 6 of 99 positions: not worth a second call
    shared = prompt_prefix(model, ids, mask, start)
    assert shared is not None and shared.length == start - 1 and len(shared.groups.representatives) == 3


@pytest.mark.parametrize("entropy", [False, True])
def test_shared_prompt_gives_whole_row_logprobs(model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch,
                                                entropy: bool) -> None:
    ids, mask, start = group_batch(model.config.vocab_size)
    monkeypatch.setattr("rlhfkit.rl.logprobs.FROZEN_LOGIT_ELEMENTS", {"cpu": 4 * 6 * model.config.vocab_size})
    made = []
    monkeypatch.setattr("rlhfkit.rl.logprobs.shared_prefix", lambda *a: made.append(shared_prefix(*a)) or made[-1])
    with torch.no_grad():
        shared = token_logprobs(model, ids, mask, start, temperature=0.7, with_entropy=entropy)  # 3 row chunks
        assert made[0] is not None
        monkeypatch.setattr(shared_module, "MIN_SAVED_FRACTION", 2.0)
        whole = token_logprobs(model, ids, mask, start, temperature=0.7, with_entropy=entropy)
    for got, want in zip(shared if entropy else [shared], whole if entropy else [whole]):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    assert bool(((shared[0] if entropy else shared)[mask[:, start:] == 0] == 0).all())


def test_shared_prompt_gives_whole_row_gradients(model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, mask, start = group_batch(model.config.vocab_size)
    weights = torch.randn(ids.shape[0], ids.shape[1] - start, generator=torch.Generator().manual_seed(1))

    def gradients() -> list[torch.Tensor]:
        model.zero_grad()
        logprobs, entropy = token_logprobs(model, ids, mask, start, with_entropy=True)
        ((logprobs + 0.1 * entropy) * weights).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    made = []
    monkeypatch.setattr("rlhfkit.rl.logprobs.shared_prefix", lambda *a: made.append(shared_prefix(*a)) or made[-1])
    shared = gradients()
    assert made and made[0] is not None, "the shared path was not taken"
    monkeypatch.setattr(shared_module, "MIN_SAVED_FRACTION", 2.0)
    whole = gradients()
    model.zero_grad()
    for got, want in zip(shared, whole):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_a_model_without_a_usable_cache_config_runs_whole_rows() -> None:
    class Odd:
        """A remote-code style config whose lookups fail with something other than AttributeError."""

        def __getattr__(self, name: str) -> None:
            raise KeyError(name)

    class Bare(torch.nn.Module):
        config = Odd()

        def forward(self, input_ids, attention_mask=None, cache=None):  # noqa: ANN001, ANN201
            raise AssertionError("not called")

    model = Bare().eval()
    assert not keeps_every_position(model, 8) and not can_share_prefix(model, 8)
