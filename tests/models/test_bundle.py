"""PolicyBundle: reference access with and without LoRA, value models, save and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_models import save_tiny_model, tiny_tokenizer

from rlhfkit.models.loading import ModelError, PolicyBundle, load_policy_bundle
from rlhfkit.models.lora import LoraSettings
from rlhfkit.models.value import CriticModel, PolicyWithValueHead


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("bundle") / "base")


@pytest.fixture(scope="module")
def batch():
    return tiny_tokenizer()(["The movie was great", "Hi"], return_tensors="pt", padding=True)


def _train_step(bundle: PolicyBundle, batch) -> None:
    optimizer = torch.optim.SGD(bundle.trainable_parameters(), lr=0.5)
    bundle.policy.train()
    bundle.policy(**batch, labels=batch["input_ids"]).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    bundle.policy.eval()


def test_full_finetune_reference_is_a_frozen_copy(model_dir: Path, batch) -> None:
    bundle = load_policy_bundle(model_dir, device="cpu", dtype="float32")
    assert not bundle.uses_lora and bundle.frozen_reference is not None
    assert all(not p.requires_grad for p in bundle.frozen_reference.parameters())
    assert not bundle.frozen_reference.training
    with torch.no_grad():
        before = bundle.policy(**batch).logits.clone()
    _train_step(bundle, batch)
    assert all(p.grad is None for p in bundle.frozen_reference.parameters())
    with bundle.reference() as reference:
        ref_logits = reference(**batch).logits
        assert not torch.is_grad_enabled()
    assert torch.equal(ref_logits, before)
    with torch.no_grad():
        assert (bundle.policy(**batch).logits - before).abs().max() > 1e-4


def test_lora_reference_is_adapters_off_without_a_copy(model_dir: Path, batch) -> None:
    bundle = load_policy_bundle(model_dir, lora=LoraSettings(r=4, dropout=0.0), device="cpu", dtype="float32")
    assert bundle.uses_lora and bundle.frozen_reference is None
    with torch.no_grad():
        before = bundle.policy(**batch).logits.clone()
    _train_step(bundle, batch)
    bundle.policy.train()
    with bundle.reference() as reference:
        assert reference is bundle.policy and not reference.training
        ref_logits = reference(**batch).logits
    assert bundle.policy.training, "train mode restored after the reference block"
    bundle.policy.eval()
    assert torch.equal(ref_logits, before)
    with torch.no_grad():
        assert (bundle.policy(**batch).logits - before).abs().max() > 1e-4


def test_lora_with_value_head_save_and_resume(tmp_path: Path, model_dir: Path, batch) -> None:
    bundle = load_policy_bundle(model_dir, lora=LoraSettings(r=4, dropout=0.0), value="head", device="cpu", dtype="float32")
    assert isinstance(bundle.value_model, PolicyWithValueHead) and bundle.value_model.policy is bundle.policy
    names = {id(p) for p in bundle.trainable_parameters()}
    assert id(bundle.value_model.value_head.linear.weight) in names
    assert len(names) == len(bundle.trainable_parameters())
    _train_step(bundle, batch)
    with torch.no_grad():
        expected = bundle.value_model(**batch)
    bundle.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "adapter_config.json").is_file()
    assert not (tmp_path / "ckpt" / "model.safetensors").exists(), "LoRA saves adapters only"
    resumed = load_policy_bundle(tmp_path / "ckpt", value="head", device="cpu", dtype="float32")
    assert resumed.uses_lora and any(p.requires_grad for p in resumed.policy.parameters())
    with torch.no_grad():
        got = resumed.value_model(**batch)
        with resumed.reference() as reference:
            base_logits = reference(**batch).logits
        original = load_policy_bundle(model_dir, device="cpu", dtype="float32").policy(**batch).logits
    torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.values, expected.values, rtol=0, atol=1e-6)
    torch.testing.assert_close(base_logits, original, rtol=0, atol=1e-6)


def test_critic_bundle_save_and_resume(tmp_path: Path, model_dir: Path, batch) -> None:
    bundle = load_policy_bundle(model_dir, value="critic", device="cpu", dtype="float32")
    assert isinstance(bundle.value_model, CriticModel)
    with torch.no_grad():
        bundle.value_model.value_head.linear.bias.fill_(1.5)
        expected = bundle.value_model(**batch)
    bundle.save_pretrained(tmp_path / "ckpt")
    resumed = load_policy_bundle(tmp_path / "ckpt", value="critic", device="cpu", dtype="float32",
                                 reference=model_dir)
    with torch.no_grad():
        torch.testing.assert_close(resumed.value_model(**batch), expected, rtol=0, atol=0)


def test_bad_bundle_requests(model_dir: Path) -> None:
    with pytest.raises(ModelError, match="value must be"):
        load_policy_bundle(model_dir, value="both")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="do not pass reference"):
        load_policy_bundle(model_dir, lora=LoraSettings(r=2), reference=model_dir)
    with pytest.raises(ModelError, match="does not exist"):
        load_policy_bundle("/no/such/policy")
