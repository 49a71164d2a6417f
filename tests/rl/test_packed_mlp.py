"""GPT-2 MLPs on packed weights with the GELU in the first product and the residual in the second: the MLP's own
outputs for every GELU transformers names, only where nothing is skipped, the modules put back after, and the
sampler's log-probs still a forward pass's."""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_gpt2
from torch import nn
from transformers import activations
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP

from rlhfkit.rl import packed_mlp
from rlhfkit.rl.logprobs import token_logprobs
from rlhfkit.rl.packed_linear import onednn_linear_available, packed_linears_while
from rlhfkit.rl.packed_mlp import PackedGeluMLP, gelu_algorithm, onednn_fusions_available
from rlhfkit.rl.rollout import CachedSampler, SamplingParams

needs_fusions = pytest.mark.skipif(not (onednn_linear_available() and onednn_fusions_available()),
                                   reason="this PyTorch build has no oneDNN linear post-ops")
PROMPTS = ["The movie was great", "Hi", "What a lovely day! The sun is", "Stop."]


def test_each_gelu_gets_its_onednn_algorithm_and_other_activations_none() -> None:
    assert gelu_algorithm(activations.NewGELUActivation()) == "tanh"  # GPT-2's gelu_new
    assert gelu_algorithm(activations.GELUTanh()) == "tanh"
    assert gelu_algorithm(activations.FastGELUActivation()) == "tanh"
    assert gelu_algorithm(nn.GELU(approximate="tanh")) == "tanh"
    assert gelu_algorithm(activations.GELUActivation()) == "none"  # erf
    assert gelu_algorithm(nn.GELU()) == "none"
    assert gelu_algorithm(activations.GELUActivation(use_gelu_python=True)) is None  # its own formula: left alone
    assert gelu_algorithm(activations.QuickGELUActivation()) is None  # x * sigmoid(1.702 x): another function
    assert gelu_algorithm(nn.ReLU()) is None


def test_the_availability_check_leaves_the_global_rng_alone() -> None:
    onednn_fusions_available.cache_clear()
    state = torch.random.get_rng_state()
    onednn_fusions_available()
    assert torch.equal(torch.random.get_rng_state(), state)


@needs_fusions
@pytest.mark.parametrize("activation", ["gelu_new", "gelu", "gelu_pytorch_tanh", "gelu_fast"])
def test_fused_mlps_compute_the_mlp_and_are_put_back(tokenizer, activation: str) -> None:
    model = tiny_gpt2(tokenizer, initializer_range=0.5)  # large weights: GELU's curved part is exercised
    model.config.activation_function = activation
    for block in model.transformer.h:
        block.mlp.act = activations.ACT2FN[activation]
    before = [(name, type(module)) for name, module in model.named_modules()]
    hidden = torch.randn(3, 5, model.config.n_embd, generator=torch.Generator().manual_seed(1))
    residual = torch.randn_like(hidden)
    ids = torch.randint(0, model.config.vocab_size, (3, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = [block.mlp(hidden) for block in model.transformer.h]
        logits = model(input_ids=ids).logits
        with packed_linears_while(model):
            mlps = [block.mlp for block in model.transformer.h]
            assert all(type(mlp) is PackedGeluMLP for mlp in mlps)
            for mlp, want in zip(mlps, expected):
                torch.testing.assert_close(mlp(hidden), want, atol=2e-5, rtol=1e-5)
                torch.testing.assert_close(mlp.plus(hidden, residual), residual + want, atol=2e-5, rtol=1e-5)
            fused_logits = model(input_ids=ids).logits
    torch.testing.assert_close(fused_logits, logits, atol=1e-5, rtol=1e-5)
    assert [(name, type(module)) for name, module in model.named_modules()] == before


@needs_fusions
def test_mlps_whose_forward_does_more_are_not_fused(tokenizer) -> None:
    model = tiny_gpt2(tokenizer)
    hooked, dropping, relu = model.transformer.h[0].mlp, model.transformer.h[1].mlp, tiny_gpt2(tokenizer)
    handle = hooked.register_forward_hook(lambda module, args, output: None)
    dropping.train()  # dropout p = 0.1 draws in training mode
    for block in relu.transformer.h:
        block.mlp.act = nn.ReLU()
    try:
        with torch.no_grad(), packed_linears_while(model) as count:
            assert count > 0
            assert model.transformer.h[0].mlp is hooked and model.transformer.h[1].mlp is dropping
        dropping.dropout.p = 0.0  # dropout that drops nothing skips nothing
        with torch.no_grad(), packed_linears_while(model):
            assert type(model.transformer.h[1].mlp) is PackedGeluMLP
        with torch.no_grad(), packed_linears_while(relu):
            assert all(type(block.mlp) is GPT2MLP for block in relu.transformer.h)
    finally:
        handle.remove()


@needs_fusions
@pytest.mark.parametrize("shard_rows", [False, True], ids=["one-batch", "row-shards"])
def test_the_sampler_runs_fused_mlps_and_residuals_and_its_logprobs_are_a_forwards(eos_model, tokenizer,
                                                                                   monkeypatch, shard_rows) -> None:
    from rlhfkit.rl.sharded_decode import ShardedStepper

    calls, shards = [], []
    original, original_init = PackedGeluMLP.plus, ShardedStepper.__init__
    monkeypatch.setattr(PackedGeluMLP, "plus", lambda self, *args: calls.append(1) or original(self, *args))
    monkeypatch.setattr(ShardedStepper, "__init__",
                        lambda self, *args, **kwargs: shards.append(1) or original_init(self, *args, **kwargs))
    sampler = CachedSampler(shard_merge_work=0) if shard_rows else CachedSampler(shard_rows=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rollout = sampler.sample(eos_model, tokenizer, PROMPTS * 2, SamplingParams(max_new_tokens=8, temperature=0.9),
                                 generator=torch.Generator().manual_seed(0))
    finally:
        torch.set_num_threads(threads)
    assert calls and bool(shards) == shard_rows
    with torch.no_grad():
        expected = token_logprobs(eos_model, rollout.sequences, rollout.attention_mask, rollout.response_start, 0.9)
    mask = rollout.response_mask.bool()
    torch.testing.assert_close(rollout.logprobs[mask], expected[mask], atol=1e-5, rtol=0)
    assert all(type(block.mlp) is GPT2MLP for block in eos_model.transformer.h)


def test_fused_mlp_sites_are_none_without_post_ops(tokenizer, monkeypatch) -> None:
    model = tiny_gpt2(tokenizer)
    monkeypatch.setattr(packed_mlp, "onednn_fusions_available", lambda: False)
    with torch.no_grad(), packed_linears_while(model):
        assert all(type(block.mlp) is GPT2MLP for block in model.transformer.h)
