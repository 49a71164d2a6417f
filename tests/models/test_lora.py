"""LoRA via peft: target detection, reference = adapters off (exactly the base), sampling through peft."""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from rlhfkit.models.lora import LoraSettings, apply_lora, detect_target_modules, is_peft_model
from rlhfkit.rl.rollout import SamplingParams, make_sampler


def test_detects_gpt2_and_llama_targets() -> None:
    assert detect_target_modules(tiny_gpt2(tiny_tokenizer())) == ["c_attn"]
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    assert detect_target_modules(llama) == ["q_proj", "v_proj"]
    assert is_peft_model(apply_lora(llama, LoraSettings(r=2)))


def test_undetectable_or_missing_targets_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="cannot detect LoRA target modules"):
        detect_target_modules(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match=r"\['q_proj'\] are not modules"):
        apply_lora(tiny_gpt2(tiny_tokenizer()), LoraSettings(target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="lora.r"):
        LoraSettings(r=0)


def test_adapters_off_is_exactly_the_base_and_on_differs_after_a_step() -> None:
    tokenizer = tiny_tokenizer()
    base = tiny_gpt2(tokenizer)
    batch = tokenizer(["The movie was great", "Hi"], return_tensors="pt", padding=True)
    with torch.no_grad():
        base_logits = base(**batch).logits.clone()
    model = apply_lora(base, LoraSettings(r=4, alpha=8, dropout=0.0))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    model.train()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        adapted = model(**batch).logits
        with model.disable_adapter():
            reference = model(**batch).logits
    assert torch.equal(reference, base_logits)
    assert (adapted - base_logits).abs().max() > 1e-4


def test_cached_sampler_runs_through_peft_model() -> None:
    tokenizer = tiny_tokenizer()
    plain = tiny_gpt2(tokenizer, initializer_range=0.2)
    params = SamplingParams(max_new_tokens=6, do_sample=False)
    expected = make_sampler("hf").sample(plain, tokenizer, ["Hi", "The movie"], params)
    wrapped = apply_lora(plain, LoraSettings(r=2))
    got = make_sampler("cached").sample(wrapped, tokenizer, ["Hi", "The movie"], params)
    assert torch.equal(got.response_ids, expected.response_ids)
