"""The TorchScript GPT-2 decode step: the eager step's logits and cache bit for bit, the same rollouts from the
sampler (one batch and row shards), and the eager step wherever the script does not cover the model."""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_gpt2

from rlhfkit.rl import scripted_gpt2
from rlhfkit.rl.cached_gpt2 import GPT2Stepper, gpt2_parts
from rlhfkit.rl.cached_kv import preallocated_cache
from rlhfkit.rl.packed_linear import onednn_linear_available, packed_linears_while
from rlhfkit.rl.packed_mlp import onednn_fusions_available
from rlhfkit.rl.rollout import CachedSampler, SamplingParams
from rlhfkit.rl.scripted_gpt2 import ScriptedGPT2Stepper, decode_weights, scripted_decode_step
from rlhfkit.utils.torchscript import forget_compiled

needs_script = pytest.mark.skipif(
    not (onednn_linear_available() and onednn_fusions_available() and scripted_decode_step() is not None),
    reason="this PyTorch build has no oneDNN post-ops or no TorchScript")
PROMPTS = ["The movie was great", "Hi", "What a lovely day! The sun is", "Stop."]


def counting_script(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make steppers built from now on count their scripted steps; returns the count list."""
    calls: list[int] = []
    script = scripted_decode_step()
    monkeypatch.setattr(scripted_gpt2, "scripted_decode_step",
                        lambda: lambda *args: calls.append(1) or script(*args))
    return calls


def stepped(stepper_class: type[GPT2Stepper], model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
            steps: torch.Tensor) -> tuple[list[torch.Tensor], object]:
    """Prefill ``ids`` (b, L) then decode the columns of ``steps`` (b, S): each step's logits, and the cache."""
    batch, length = ids.shape
    capacity = length + steps.shape[1]
    full_mask = torch.ones(batch, capacity, dtype=mask.dtype)
    full_mask[:, :length] = mask
    cache = preallocated_cache(model, batch, capacity, zeroed=length)
    stepper = stepper_class(*gpt2_parts(model), cache, full_mask)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    outputs = [stepper.prefill(ids, mask, positions)]
    next_position = positions[:, -1:] + 1
    for column in range(steps.shape[1]):
        outputs.append(stepper(steps[:, column:column + 1], next_position, length + column + 1))
        next_position = next_position + 1
    return outputs, cache


@needs_script
def test_the_scripted_step_gives_the_eager_steps_logits_and_cache_bit_for_bit(tokenizer, monkeypatch) -> None:
    model = tiny_gpt2(tokenizer, initializer_range=0.5)
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(3, model.config.vocab_size, (3, 5), generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    steps = torch.randint(3, model.config.vocab_size, (3, 4), generator=generator)
    calls = counting_script(monkeypatch)
    with torch.no_grad(), packed_linears_while(model):
        eager, eager_cache = stepped(GPT2Stepper, model, ids, mask, steps)
        scripted, scripted_cache = stepped(ScriptedGPT2Stepper, model, ids, mask, steps)
    assert len(calls) == steps.shape[1]  # every decode step scripted, the prefill eager
    for expected, actual in zip(eager, scripted):
        assert torch.equal(actual, expected)
    for expected, actual in zip(eager_cache.layers, scripted_cache.layers):
        assert actual.length == expected.length == ids.shape[1] + steps.shape[1]
        assert torch.equal(actual.keys, expected.keys) and torch.equal(actual.values, expected.values)


@needs_script
@pytest.mark.parametrize("shard_rows", [False, True], ids=["one-batch", "row-shards"])
@pytest.mark.parametrize("min_new_tokens", [0, 3], ids=["eos-any-time", "eos-blocked-first"])
def test_the_sampler_samples_the_same_rollout_with_and_without_the_script(eos_model, tokenizer, monkeypatch,
                                                                          shard_rows, min_new_tokens) -> None:
    """The same rollout either way; the token picks run scripted exactly when the decode steps do (TorchScript's
    interpreter costs resident memory the first time it runs, so an eager rollout does not start it for picks)."""
    from rlhfkit.rl import rollout as rollout_module

    rollouts = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for scripted in (False, True):
            calls = counting_script(monkeypatch)
            picks: list[int] = []
            monkeypatch.setattr(rollout_module, "scripted",
                                lambda function: lambda *args: picks.append(1) or function(*args))
            sampler = CachedSampler(scripted_step=scripted, shard_rows=shard_rows, shard_merge_work=0)
            rollouts.append(sampler.sample(eos_model, tokenizer, PROMPTS * 2,
                                           SamplingParams(max_new_tokens=8, min_new_tokens=min_new_tokens,
                                                          temperature=0.9),
                                           generator=torch.Generator().manual_seed(0)))
            assert bool(calls) == scripted and bool(picks) == scripted
    finally:
        torch.set_num_threads(threads)
    eager, scripted = rollouts
    assert torch.equal(scripted.sequences, eager.sequences)
    assert torch.equal(scripted.logprobs, eager.logprobs)


@needs_script
def test_a_lora_rollout_never_compiles_the_script(eos_model, tokenizer, monkeypatch) -> None:
    """Adapters keep their weights unpacked, so the script cannot run them: the sampler does not compile it either
    (TorchScript costs resident memory once started)."""
    import copy

    from peft import LoraConfig, get_peft_model

    compiled: list[int] = []
    monkeypatch.setattr(scripted_gpt2, "scripted_decode_step", lambda: compiled.append(1) or scripted_decode_step())
    model = get_peft_model(copy.deepcopy(eos_model), LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True))
    params = SamplingParams(max_new_tokens=4, temperature=0.9)
    CachedSampler().sample(model, tokenizer, PROMPTS, params, generator=torch.Generator().manual_seed(0))
    assert not compiled
    CachedSampler().sample(eos_model, tokenizer, PROMPTS, params, generator=torch.Generator().manual_seed(0))
    assert compiled  # the plain model's packed weights are the script's


@needs_script
def test_models_the_script_does_not_cover_keep_the_eager_step(tokenizer) -> None:
    model = tiny_gpt2(tokenizer)
    trunk, head = gpt2_parts(model)
    assert decode_weights(trunk, head) is None  # weights not packed
    with torch.no_grad(), packed_linears_while(model):
        assert decode_weights(*gpt2_parts(model)) is not None
    handle = model.transformer.h[1].ln_2.register_forward_hook(lambda module, inputs, output: None)
    with torch.no_grad(), packed_linears_while(model):
        assert decode_weights(*gpt2_parts(model)) is None  # a hook the script would skip
    handle.remove()
    model.transformer.h[0].ln_1.eps = 1e-3
    with torch.no_grad(), packed_linears_while(model):
        assert decode_weights(*gpt2_parts(model)) is None  # the script takes one epsilon for every norm


@needs_script
def test_without_torchscript_the_sampler_runs_the_eager_step(eos_model, tokenizer, monkeypatch) -> None:
    params = SamplingParams(max_new_tokens=6, temperature=0.9)
    expected = CachedSampler(scripted_step=False).sample(eos_model, tokenizer, PROMPTS, params,
                                                         generator=torch.Generator().manual_seed(1))

    def unavailable(function: object) -> object:
        raise RuntimeError("TorchScript is gone")

    forget_compiled()
    monkeypatch.setattr(torch.jit, "script", unavailable)
    try:
        assert scripted_decode_step() is None
        rollout = CachedSampler().sample(eos_model, tokenizer, PROMPTS, params, generator=torch.Generator().manual_seed(1))
    finally:
        forget_compiled()
    assert torch.equal(rollout.sequences, expected.sequences) and torch.equal(rollout.logprobs, expected.logprobs)


@needs_script
def test_under_bf16_autocast_the_sampler_runs_eager_and_the_post_op_check_still_answers_for_float32(
        eos_model, tokenizer) -> None:
    from rlhfkit.rl import packed_linear, packed_mlp

    expected = packed_mlp.onednn_fusions_available()
    packed_linear.onednn_linear_available.cache_clear()
    packed_mlp.onednn_fusions_available.cache_clear()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert packed_mlp.onednn_fusions_available() == expected  # asked first under autocast: no dtype clash
            rollout = CachedSampler().sample(eos_model, tokenizer, PROMPTS, SamplingParams(max_new_tokens=4),
                                             generator=torch.Generator().manual_seed(0))
    finally:
        packed_linear.onednn_linear_available.cache_clear()
        packed_mlp.onednn_fusions_available.cache_clear()
    assert rollout.response_ids.shape[0] == len(PROMPTS)
