"""The TorchScript Llama-family decode step: the same rollouts as the eager step (Llama, Qwen2 with projection
biases, Qwen3 with per-head norms; one batch and row shards), and the eager step wherever a part differs."""

from __future__ import annotations

import pytest
import torch
from test_cached_llama import PROMPTS, tiny_llama_family

from rlhfkit.rl import cached_prefill, scripted_llama
from rlhfkit.rl.cached_llama import fused_projections_while, llama_parts
from rlhfkit.rl.packed_linear import onednn_linear_available, packed_linears_while
from rlhfkit.rl.packed_mlp import onednn_fusions_available
from rlhfkit.rl.rollout import CachedSampler, SamplingParams
from rlhfkit.rl.scripted_llama import decode_weights, scripted_decode_step

needs_script = pytest.mark.skipif(
    not (onednn_linear_available() and onednn_fusions_available() and scripted_decode_step() is not None),
    reason="this PyTorch build has no oneDNN post-ops or no TorchScript")


@pytest.fixture(scope="module")
def tokenizer():
    from helpers_models import tiny_tokenizer

    return tiny_tokenizer()


@needs_script
@pytest.mark.parametrize("config_class", ["LlamaConfig", "Qwen2Config", "Qwen3Config"])
@pytest.mark.parametrize("shard_rows", [False, True], ids=["one-batch", "row-shards"])
def test_the_scripted_step_samples_the_eager_steps_rollout(config_class, shard_rows, tokenizer, monkeypatch) -> None:
    model = tiny_llama_family(config_class, tokenizer)
    monkeypatch.setattr(cached_prefill, "GROUP_COST", 0)
    script, calls = scripted_decode_step(), []
    monkeypatch.setattr(scripted_llama, "scripted_decode_step", lambda: lambda *args: calls.append(1) or script(*args))
    params = SamplingParams(max_new_tokens=12, temperature=0.8)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rollouts = [CachedSampler(scripted_step=scripted, shard_rows=shard_rows, shard_merge_work=0).sample(
            model, tokenizer, PROMPTS, params, generator=torch.Generator().manual_seed(3)) for scripted in (False, True)]
    finally:
        torch.set_num_threads(threads)
    assert calls
    eager, scripted = rollouts
    assert torch.equal(scripted.response_ids, eager.response_ids)
    assert torch.equal(scripted.logprobs, eager.logprobs)
    assert eager.response_mask.sum(-1).unique().numel() > 1  # rows finished early and were dropped


@needs_script
def test_parts_the_script_does_not_compute_keep_the_eager_step(tokenizer, monkeypatch) -> None:
    model = tiny_llama_family("Qwen3Config", tokenizer)
    assert decode_weights(*llama_parts(model)) is None  # nothing packed
    with torch.no_grad(), fused_projections_while(model) as replaced, packed_linears_while(model, skip=replaced):
        assert decode_weights(*llama_parts(model)) is not None
        handle = model.model.layers[1].self_attn.k_norm.register_forward_hook(lambda *args: None)
        assert decode_weights(*llama_parts(model)) is None  # a hook the script would skip
        handle.remove()
        monkeypatch.setattr(type(model.model.norm), "forward", lambda self, hidden: hidden * self.weight)
        scripted_llama._norm_matches.cache_clear()
        try:
            assert decode_weights(*llama_parts(model)) is None  # a norm that computes something else
        finally:
            monkeypatch.undo()
            scripted_llama._norm_matches.cache_clear()
    with torch.no_grad(), packed_linears_while(model):
        assert decode_weights(*llama_parts(model)) is None  # projections packed one by one, not concatenated
