"""Value head on the policy trunk and the separate critic: shapes, positions, save/load round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_models import save_tiny_model, tiny_gpt2, tiny_tokenizer

from rlhfkit.models.loading import ModelError
from rlhfkit.models.value import VALUE_HEAD_FILE, CriticModel, PolicyWithValueHead, ValueHead


@pytest.fixture(scope="module")
def batch():
    tokenizer = tiny_tokenizer()
    return tokenizer(["The movie was great", "Hi there", "I"], return_tensors="pt", padding=True)


def test_value_head_shapes_and_dtype() -> None:
    head = ValueHead(8)
    values = head(torch.randn(2, 5, 8, dtype=torch.bfloat16))
    assert values.shape == (2, 5) and values.dtype == torch.float32


def test_policy_with_value_head_forward(batch) -> None:
    policy = tiny_gpt2(tiny_tokenizer())
    model = PolicyWithValueHead(policy)
    out = model(**batch)
    b, t = batch["input_ids"].shape
    assert out.logits.shape == (b, t, policy.config.vocab_size) and out.values.shape == (b, t)
    # Logits are exactly the policy's own with generate-style positions.
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    torch.testing.assert_close(out.logits, policy(**batch, position_ids=positions).logits, rtol=0, atol=0)
    kept = model(**batch, logits_to_keep=2)
    assert kept.logits.shape[1] == kept.values.shape[1] == 2
    torch.testing.assert_close(kept.values, out.values[:, -2:])
    out.values.sum().backward()
    assert model.value_head.linear.weight.grad is not None
    assert policy.transformer.h[0].attn.c_attn.weight.grad is not None, "value loss trains the shared trunk"


def test_left_padding_does_not_change_values() -> None:
    tokenizer = tiny_tokenizer()
    model = PolicyWithValueHead(tiny_gpt2(tokenizer)).eval()
    critic = CriticModel(tiny_gpt2(tokenizer).transformer).eval()
    ids = tokenizer("What a lovely day", return_tensors="pt")["input_ids"]
    padded = torch.cat([torch.full((1, 3), tokenizer.pad_token_id), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], dim=1)
    with torch.no_grad():
        pairs = [(model(input_ids=ids, attention_mask=torch.ones_like(ids)).values,
                  model(input_ids=padded, attention_mask=mask).values),
                 (critic(input_ids=ids, attention_mask=torch.ones_like(ids)), critic(input_ids=padded, attention_mask=mask))]
    for alone, batched in pairs:
        torch.testing.assert_close(alone, batched[:, 3:], atol=1e-5, rtol=0)


def test_policy_value_head_round_trip(tmp_path: Path, batch) -> None:
    tokenizer = tiny_tokenizer()
    model = PolicyWithValueHead(tiny_gpt2(tokenizer)).eval()
    with torch.no_grad():
        model.value_head.linear.bias.fill_(0.25)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / VALUE_HEAD_FILE).is_file() and (tmp_path / "model.safetensors").is_file()
    loaded = PolicyWithValueHead.from_pretrained(tmp_path, device="cpu", dtype="float32")
    with torch.no_grad():
        expected, got = model(**batch), loaded(**batch)
    torch.testing.assert_close(got.values, expected.values, rtol=0, atol=0)
    torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=0)


def test_critic_from_causal_lm_checkpoint_and_round_trip(tmp_path: Path, batch) -> None:
    source = save_tiny_model(tmp_path / "policy")
    critic = CriticModel.from_pretrained(source, device="cpu", dtype="float32").eval()
    reference = tiny_gpt2(tiny_tokenizer())
    assert torch.equal(critic.trunk.h[1].mlp.c_fc.weight, reference.transformer.h[1].mlp.c_fc.weight)
    values = critic(**batch)
    assert values.shape == batch["input_ids"].shape and values.dtype == torch.float32
    critic.save_pretrained(tmp_path / "critic")
    again = CriticModel.from_pretrained(tmp_path / "critic", device="cpu", dtype="float32").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**batch), critic(**batch), rtol=0, atol=0)


def test_value_head_of_wrong_width_is_a_model_error(tmp_path: Path) -> None:
    save_tiny_model(tmp_path)
    ValueHead(16).save(tmp_path)
    with pytest.raises(ModelError, match="hidden size 16"):
        CriticModel.from_pretrained(tmp_path, device="cpu", dtype="float32")
    with pytest.raises(ModelError, match="hidden size 16"):
        PolicyWithValueHead.from_pretrained(tmp_path, device="cpu", dtype="float32")

