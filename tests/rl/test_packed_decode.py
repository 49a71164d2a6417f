"""Sampling and frozen forwards on the CPU with packed oneDNN weights, small steps on one thread and the GPT-2
prefill: the same products as the modules, the modules put back after, adapters left alone, bf16 packs under bf16
autocast, the thread count restored, the prefill's mask causal."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rlhfkit.rl.cached_gpt2 import attend
from rlhfkit.rl.packed_linear import (
    PackedLinear,
    onednn_bf16_linear_available,
    onednn_linear_available,
    packed_in_parallel,
    packed_linears_while,
    packing_dtype,
)
from rlhfkit.rl.rollout import CachedSampler, SamplingParams, serial_decode_rows
from rlhfkit.utils.runtime import intra_op_threads_restored, worker_pool

PROMPTS = ["The movie was great", "Hi", "What a lovely day! The sun is", "Stop."]
needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="this PyTorch build has no oneDNN linear")


def test_the_availability_check_leaves_the_global_rng_alone() -> None:
    onednn_linear_available.cache_clear()
    state = torch.random.get_rng_state()
    onednn_linear_available()
    assert torch.equal(torch.random.get_rng_state(), state)  # a resumed run draws what an uninterrupted one does


@needs_onednn
def test_packed_layers_compute_what_the_modules_do_and_are_put_back(eos_model) -> None:
    from transformers.pytorch_utils import Conv1D

    ids = torch.randint(0, eos_model.config.vocab_size, (3, 7), generator=torch.Generator().manual_seed(0))
    before = [(name, type(module)) for name, module in eos_model.named_modules()]
    with torch.no_grad():
        expected = eos_model(input_ids=ids).logits
        with packed_linears_while(eos_model) as count:
            assert count == 4 * eos_model.config.n_layer + 1  # c_attn, c_proj, c_fc, mlp c_proj; the LM head
            assert sum(type(m) is PackedLinear for m in eos_model.modules()) == count
            assert not any(type(m) is Conv1D for m in eos_model.modules())
            packed = eos_model(input_ids=ids).logits
    torch.testing.assert_close(packed, expected, atol=1e-5, rtol=0)
    assert [(name, type(module)) for name, module in eos_model.named_modules()] == before
    assert eos_model.lm_head.weight is eos_model.transformer.wte.weight  # tying intact
    handle = eos_model.lm_head.register_forward_hook(lambda module, args, output: None)
    try:
        with packed_linears_while(eos_model) as count_with_hook:
            assert count_with_hook == count - 1 and type(eos_model.lm_head) is nn.Linear  # its hook still fires
    finally:
        handle.remove()


@needs_onednn
def test_lora_models_are_left_alone_also_under_autocast(eos_model) -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(eos_model), LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(parameter, std=0.5)  # a nonzero adapter, so ignoring it would show
    ids = torch.randint(0, eos_model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        with packed_linears_while(model) as count:
            assert count == 0  # a LoRA model keeps every module (and its memory)
            packed = model(input_ids=ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16), packed_linears_while(model) as under_autocast:
            assert under_autocast == 0
    torch.testing.assert_close(packed, expected, atol=1e-5, rtol=0)


needs_bf16 = pytest.mark.skipif(not onednn_linear_available() or not onednn_bf16_linear_available(),
                                reason="this PyTorch build has no oneDNN bf16 linear")


@needs_bf16
def test_under_bf16_autocast_layers_pack_in_bf16_and_compute_what_autocast_does(eos_model) -> None:
    """Under CPU bf16 autocast every layer packs in bf16 (inputs, weight and bias in bf16, a bf16 output, as
    autocast's linear); MLPs stay unfused (the oneDNN post-ops are checked in float32 only); another autocast dtype
    packs nothing. The model's logits stay within bf16 rounding of the unpacked autocast forward's."""
    ids = torch.randint(0, eos_model.config.vocab_size, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = eos_model(input_ids=ids).logits
        assert packing_dtype(eos_model) == torch.bfloat16
        with packed_linears_while(eos_model) as count:
            assert count == 4 * eos_model.config.n_layer + 1
            layers = [m for m in eos_model.modules() if type(m) is PackedLinear]
            assert len(layers) == count and all(layer.dtype == torch.bfloat16 for layer in layers)
            packed = eos_model(input_ids=ids).logits
    assert packed.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(packed.float(), expected.float(), atol=0.1, rtol=0)
    assert all(type(m) is not PackedLinear for m in eos_model.modules())  # put back
    with torch.autocast("cpu", dtype=torch.float16):
        assert packing_dtype(eos_model) is None
    assert packing_dtype(eos_model) == torch.float32


@needs_bf16
def test_a_bf16_rollout_on_bf16_packed_weights_is_the_unpacked_bf16_rollout(eos_model, tokenizer,
                                                                           monkeypatch) -> None:
    """The sampler under bf16 autocast packs its layers in bf16 (the eager step, not the float32 TorchScript one):
    the same greedy tokens as without packing and log-probs within bf16 rounding, and still the model's."""
    from rlhfkit.rl.logprobs import token_logprobs

    packs = []
    original = PackedLinear.__init__
    monkeypatch.setattr(PackedLinear, "__init__", lambda self, layer, dtype=torch.float32:
                        packs.append(dtype) or original(self, layer, dtype))
    params = SamplingParams(max_new_tokens=6, do_sample=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        packed = CachedSampler().sample(eos_model, tokenizer, PROMPTS, params, generator=torch.Generator())
        plain = CachedSampler(pack_weights=False).sample(eos_model, tokenizer, PROMPTS, params,
                                                         generator=torch.Generator())
        with torch.no_grad():
            forward = token_logprobs(eos_model, packed.sequences, packed.attention_mask, packed.response_start)
    assert packs and set(packs) == {torch.bfloat16}
    assert torch.equal(packed.response_ids, plain.response_ids)
    torch.testing.assert_close(packed.logprobs, plain.logprobs, atol=0.05, rtol=0)
    mask = packed.response_mask.bool()
    assert float((forward[mask] - packed.logprobs[mask]).abs().max()) < 0.1


@needs_onednn
def test_layers_packed_on_several_threads_come_back_in_order_and_equal_a_serial_pack() -> None:
    layers = [nn.Linear(8, width) for width in (4, 64, 16, 32, 8)]
    inputs = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    with intra_op_threads_restored():
        torch.set_num_threads(3)  # three shares on a pool of two workers, whatever the machine has
        packed = packed_in_parallel(layers)
        # two threads: a pack inside the one-worker pool would queue its second share on that same busy pool;
        # it runs where it is instead (without the guard this waits until the timeout)
        torch.set_num_threads(2)
        nested = worker_pool(1).submit(packed_in_parallel, layers).result(timeout=30)
    with torch.no_grad():
        for layer, packed_layer in zip(layers, packed):
            assert packed_layer.weight is layer.weight
            assert torch.equal(packed_layer(inputs), PackedLinear(layer)(inputs))  # bit for bit
    assert [layer.weight for layer in nested] == [layer.weight for layer in layers]


def test_serial_decode_rows_from_the_parameter_count() -> None:
    cpu = torch.device("cpu")
    model = nn.Linear(1000, 1000)  # 1,001,000 parameters
    assert serial_decode_rows(model, cpu, 150_000_000) == 149
    assert serial_decode_rows(model, cpu, 999_999) == 0
    assert serial_decode_rows(model, cpu, 0) == 0
    assert serial_decode_rows(model, torch.device("meta"), 150_000_000) == 0


def test_one_thread_for_small_steps_gives_the_same_rollout_and_restores_threads(eos_model, tokenizer) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        params = SamplingParams(max_new_tokens=10, temperature=1.0)
        serial = CachedSampler().sample(eos_model, tokenizer, PROMPTS, params, generator=torch.Generator().manual_seed(4))
        assert torch.get_num_threads() == 2
        threaded = CachedSampler(serial_step_work=0).sample(eos_model, tokenizer, PROMPTS, params,
                                                            generator=torch.Generator().manual_seed(4))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(serial.response_ids, threaded.response_ids)
    torch.testing.assert_close(serial.logprobs, threaded.logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attend_is_softmax_attention_with_an_additive_bias(dtype) -> None:
    generator = torch.Generator().manual_seed(2)
    query, keys, values = (torch.randn(3, 2, length, 8, generator=generator) for length in (1, 6, 6))
    mask = torch.ones(3, 6)
    mask[0, :2] = 0
    bias = torch.zeros(3, 1, 1, 6).masked_fill(mask[:, None, None, :] == 0, torch.finfo(torch.float32).min)
    expected = torch.softmax(query @ keys.transpose(-1, -2) * 0.3 + bias, dim=-1) @ values
    out = attend(query.to(dtype), keys.to(dtype), values.to(dtype), bias.to(dtype), 0.3).float()
    torch.testing.assert_close(out, expected, atol=1e-5 if dtype == torch.float32 else 3e-2, rtol=0)


def test_prefill_bias_is_causal_padding_with_each_position_seeing_itself() -> None:
    from rlhfkit.rl.cached_gpt2 import prefill_bias

    bias = prefill_bias(torch.tensor([[0, 1, 1], [1, 1, 1]]), torch.float32)
    allowed = (bias == 0).squeeze(1)
    assert bias.shape == (2, 1, 3, 3)
    assert allowed[0].tolist() == [[True, False, False], [False, True, False], [False, True, True]]
    assert allowed[1].tolist() == [[True, False, False], [True, True, False], [True, True, True]]


@needs_onednn
def test_frozen_forwards_with_packed_weights_equal_the_modules(eos_model, tokenizer, monkeypatch) -> None:
    """The reference's log-probs (row chunks and the LM head's row selection included) and a reward model's
    scores are what the plain modules give, and the modules are back afterwards."""
    from rlhfkit.models.reward_model import RewardModel, RewardModelSettings
    from rlhfkit.rl import logprobs as logprobs_module
    from rlhfkit.rl.logprobs import token_logprobs
    from rlhfkit.rl.rewards import ModelReward

    rollout = CachedSampler().sample(eos_model, tokenizer, PROMPTS, SamplingParams(max_new_tokens=6),
                                     generator=torch.Generator().manual_seed(0))
    args = (rollout.sequences, rollout.attention_mask, rollout.response_start, 1.0)
    monkeypatch.setattr(logprobs_module, "frozen_chunk_rows", lambda *_: 3)  # 4 rows in two chunks
    with torch.no_grad():
        plain = token_logprobs(eos_model, *args)
        with packed_linears_while(eos_model) as count:
            assert count > 0
            packed = token_logprobs(eos_model, *args)
    torch.testing.assert_close(packed, plain, atol=1e-5, rtol=0)

    reward_model = RewardModel(copy.deepcopy(eos_model).transformer, tokenizer,
                               RewardModelSettings(num_heads=2, max_length=64)).eval()
    expected = reward_model.score_texts(rollout.prompts, rollout.responses, normalized=False)
    modules = list(reward_model.modules())
    calls = []
    original = PackedLinear.forward
    monkeypatch.setattr(PackedLinear, "forward", lambda self, inputs: calls.append(1) or original(self, inputs))
    scored = ModelReward(reward_model, "rm", normalized=False)(rollout.prompts, rollout.responses)
    assert calls  # the reward model ran on packed weights
    torch.testing.assert_close(scored, expected.mean(-1) if expected.dim() > 1 else expected, atol=1e-5, rtol=0)
    assert list(reward_model.modules()) == modules
