"""The Llama-family decode step (:mod:`rlhfkit.rl.cached_llama`) gives the rollouts of transformers' forward:
same tokens and log-probs on Llama and Qwen3 (grouped-query attention, Qwen3's query/key norms), with prompts
prefilled in several length groups, finished rows dropped, and rows decoded in shards."""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_tokenizer
from torch import nn

from rlhfkit.rl import cached_prefill
from rlhfkit.rl.cached_llama import llama_parts
from rlhfkit.rl.rollout import CachedSampler, SamplingParams

PROMPTS = ["The movie was great", "Hi", "What a lovely day! The sun is", "Stop.", "Please explain why", "I",
           "The movie was great and the actors", "Hi"]


def tiny_llama_family(config_class: str, tokenizer, eos_boost: float = 3.0, **extra) -> nn.Module:
    """A random 2-layer model of ``config_class`` (4 query heads over 2 key/value heads) whose LM head has a bias
    that makes EOS likely, so sampled responses end at different lengths."""
    import transformers

    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=128, initializer_range=0.2,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, **extra)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    head = nn.Linear(32, len(tokenizer), bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = eos_boost
    model.lm_head = head
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.mark.parametrize("config_class", ["LlamaConfig", "Qwen3Config"])
@pytest.mark.parametrize("params", [SamplingParams(max_new_tokens=12, temperature=0.8, top_k=40),
                                    SamplingParams(max_new_tokens=12, do_sample=False)], ids=["sample", "greedy"])
def test_llama_step_matches_the_transformers_forward(config_class, params, tokenizer, monkeypatch) -> None:
    model = tiny_llama_family(config_class, tokenizer)
    assert llama_parts(model) is not None
    monkeypatch.setattr(cached_prefill, "GROUP_COST", 0)  # several prefill groups even for 8 short prompts
    reference = CachedSampler(llama_step=False, shard_rows=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = reference.sample(model, tokenizer, PROMPTS, params, generator=torch.Generator().manual_seed(3))
        for sampler in (CachedSampler(shard_rows=False), CachedSampler(shard_merge_work=0)):  # one batch; 2 shards
            rollout = sampler.sample(model, tokenizer, PROMPTS, params, generator=torch.Generator().manual_seed(3))
            assert torch.equal(rollout.response_ids, expected.response_ids)
            assert torch.equal(rollout.response_mask, expected.response_mask)
            torch.testing.assert_close(rollout.logprobs, expected.logprobs, atol=1e-5, rtol=0)
    finally:
        torch.set_num_threads(threads)
    lengths = expected.response_mask.sum(-1)
    assert int(lengths.min()) < 12 and lengths.unique().numel() > 1  # rows finished early and were dropped


def test_llama_step_only_for_the_family_in_eval_mode_without_sliding_windows(tokenizer) -> None:
    model = tiny_llama_family("Qwen2Config", tokenizer)
    assert llama_parts(model) == (model.model, model.lm_head)
    model.train()
    assert llama_parts(model) is None
    assert llama_parts(tiny_llama_family("GemmaConfig", tokenizer)) is None  # scaled embeddings, (1 + w) norms
    windowed = tiny_llama_family("Qwen2Config", tokenizer, use_sliding_window=True, sliding_window=4,
                                 max_window_layers=0, layer_types=["sliding_attention", "sliding_attention"])
    assert llama_parts(windowed) is None


@pytest.mark.parametrize("config_class", ["Qwen2Config", "Qwen3Config"])
def test_fused_projections_run_one_product_for_qkv_and_one_for_gate_up(config_class, tokenizer, monkeypatch) -> None:
    """During a rollout on packed weights each layer holds its query/key/value (Qwen2: with biases) and gate/up
    projections concatenated and the step runs those, with the tokens and log-probs of the separate products; afterwards the
    layers are as before. A layer with a hook keeps its own products (the hook must fire)."""
    from rlhfkit.rl import cached_llama
    from rlhfkit.rl.packed_linear import onednn_linear_available

    if not onednn_linear_available():
        pytest.skip("the projections are concatenated only where the weights are packed for oneDNN")
    model = tiny_llama_family(config_class, tokenizer)
    params = SamplingParams(max_new_tokens=10, temperature=0.9)
    separate = CachedSampler(shard_rows=False)
    with monkeypatch.context() as patch:
        patch.setattr(cached_llama, "_concatenated", lambda layers: None)
        expected = separate.sample(model, tokenizer, PROMPTS, params, generator=torch.Generator().manual_seed(5))
    fused_calls = []
    original = cached_llama._projections
    monkeypatch.setattr(cached_llama, "_projections", lambda attn, *a: fused_calls.append(
        hasattr(attn, cached_llama.FUSED_QKV)) or original(attn, *a))
    rollout = CachedSampler(shard_merge_work=0).sample(model, tokenizer, PROMPTS, params,
                                                       generator=torch.Generator().manual_seed(5))
    assert fused_calls and all(fused_calls)
    assert torch.equal(rollout.response_ids, expected.response_ids)
    torch.testing.assert_close(rollout.logprobs, expected.logprobs, atol=1e-5, rtol=0)
    for layer in model.model.layers:
        assert not hasattr(layer.self_attn, cached_llama.FUSED_QKV) and not hasattr(layer.mlp, cached_llama.FUSED_GATE_UP)
    fused_calls.clear()  # unpacked weights (GPU, autocast, adapters) are not copied: the separate products run
    CachedSampler(pack_weights=False).sample(model, tokenizer, PROMPTS, params, generator=torch.Generator().manual_seed(5))
    assert fused_calls and not any(fused_calls)
    hooked = model.model.layers[0].self_attn.k_proj.register_forward_hook(lambda *a: None)
    try:
        with torch.no_grad(), cached_llama.fused_projections_while(model) as replaced:
            first, second = model.model.layers
            assert not hasattr(first.self_attn, cached_llama.FUSED_QKV) and hasattr(first.mlp, cached_llama.FUSED_GATE_UP)
            assert hasattr(second.self_attn, cached_llama.FUSED_QKV) and len(replaced) == 3 + 2 + 2
    finally:
        hooked.remove()


def test_llama_step_under_bfloat16_autocast_keeps_keys_and_values_in_their_own_dtypes(tokenizer) -> None:
    """Under autocast the rotary positions leave the keys in float32 while the values stay bfloat16: each cache
    buffer takes its own states' dtype, and every greedy token is an argmax of transformers' forward in the same
    precision up to bfloat16's rounding (that forward's own logits move by ~0.04 with the batch's padding)."""
    model = tiny_llama_family("Qwen2Config", tokenizer)
    params = SamplingParams(max_new_tokens=8, do_sample=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rollout = CachedSampler().sample(model, tokenizer, PROMPTS, params)
        with torch.no_grad():
            logits = model(input_ids=rollout.sequences, attention_mask=rollout.attention_mask).logits.float()
    width = rollout.prompt_ids.shape[1]
    logprobs = torch.log_softmax(logits[:, width - 1:-1], dim=-1)
    chosen = logprobs.gather(-1, rollout.response_ids[..., None]).squeeze(-1)
    mask = rollout.response_mask.bool()
    assert bool((logprobs.max(-1).values - chosen)[mask].le(0.1).all())
    torch.testing.assert_close(rollout.logprobs[mask], chosen[mask], atol=0.1, rtol=0)
    assert int(mask.sum()) > len(PROMPTS)
