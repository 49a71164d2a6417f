"""LoRA adapters added into the base output in place: the same outputs and gradients as peft's forward, in the
base output's own memory; peft's forward wherever the adapters are not plain."""

from __future__ import annotations

import copy

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhfkit.models.lora import LoraSettings, apply_lora
from rlhfkit.models.lora_in_place import InPlaceLoraLinear, add_lora_in_place


def lora_gpt2(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=11, n_positions=8, n_embd=16, n_layer=2, n_head=2)
    model = apply_lora(GPT2LMHeadModel(config).eval(), LoraSettings(r=4, alpha=8.0, dropout=0.0))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: make the adapters matter
            torch.nn.init.normal_(parameter, std=0.5)
    return model


def logits_and_grads(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logits = model(ids).logits
    (logits.square().mean() + logits[..., 3].sum()).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_same_logits_and_gradients_as_peft():
    ids = torch.tensor([[1, 5, 2, 9, 4], [3, 3, 7, 0, 10]])
    peft_model, in_place = lora_gpt2(), lora_gpt2()
    assert add_lora_in_place(in_place) == 2
    expected_logits, expected_grads = logits_and_grads(peft_model, ids)
    logits, grads = logits_and_grads(in_place, ids)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-6, atol=1e-6)
    assert grads.keys() == expected_grads.keys() and len(grads) == 4
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-6)


def test_the_adapter_is_added_into_the_base_output():
    model = lora_gpt2()
    add_lora_in_place(model)
    layer = model.base_model.model.transformer.h[0].attn.c_attn
    pointers = []
    layer.base_layer.register_forward_hook(lambda module, inputs, output: pointers.append(output.data_ptr()))
    layer.register_forward_hook(lambda module, inputs, output: pointers.append(output.data_ptr()))
    base = layer.base_layer(torch.ones(1, 3, 16)).detach()
    pointers.clear()
    out = layer(torch.ones(1, 3, 16))
    assert pointers[0] == pointers[1]  # no new (tokens, out) tensor
    assert not torch.allclose(out, base)  # and the adapter did add something


def test_disabled_adapters_and_autocast_match_peft():
    ids = torch.tensor([[1, 5, 2, 9]])
    peft_model, in_place = lora_gpt2(), lora_gpt2()
    add_lora_in_place(in_place)
    with torch.no_grad():
        with peft_model.disable_adapter(), in_place.disable_adapter():
            torch.testing.assert_close(in_place(ids).logits, peft_model(ids).logits, rtol=0, atol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(in_place(ids).logits, peft_model(ids).logits)


def test_copies_keep_the_in_place_layers():
    model = lora_gpt2()
    add_lora_in_place(model)
    copied = copy.deepcopy(model)
    assert type(copied.base_model.model.transformer.h[1].attn.c_attn) is InPlaceLoraLinear
    ids = torch.tensor([[2, 4, 6]])
    with torch.no_grad():
        torch.testing.assert_close(copied(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_merged_adapters_go_through_peft():
    ids = torch.tensor([[1, 2, 3]])
    model = lora_gpt2()
    add_lora_in_place(model)
    with torch.no_grad():
        before = model(ids).logits
        model.merge_adapter()  # the adapters now live in the base weights: adding them again would double them
        torch.testing.assert_close(model(ids).logits, before, rtol=1e-5, atol=1e-5)
