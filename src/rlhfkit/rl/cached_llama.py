"""A hand-written decode step (and prompt prefill) for the Llama family (Llama, Qwen2, Qwen3, Mistral without
a sliding window) for ``CachedSampler``: the model's own modules, none of the wrapping.

The same idea as :mod:`rlhfkit.rl.cached_gpt2`: a transformers forward of one token spends most of a small
model's step on mask building, output capture and cache bookkeeping (on ``bench/rollout.py``'s shapes the
cached sampler was only ~1.2x HF ``generate`` on a Llama or Qwen3 model, against 2x on GPT-2). This step
calls the decoder layers' submodules in the order they do (RMS norms, the projections, Qwen3's per-head
query/key norms, the model's rotary embedding, grouped-query attention over the in-place cache, the MLP), so
LoRA wrappers and autocast apply. Models it does not cover (other classes, sliding windows, training mode)
keep the transformers forward.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from rlhfkit.rl.cached_gpt2 import GPT2Stepper, attend

#: The causal LMs whose decoder layers this step reproduces, by transformers class name.
LLAMA_FAMILY = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM")


def llama_parts(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(decoder trunk, LM head) of a Llama-family LM in eval mode whose layers all attend to every position
    (through a peft wrapper), or None."""
    import transformers

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if base.training or not any(type(base) is getattr(transformers, name, None) for name in LLAMA_FAMILY):
        return None
    trunk = base.model
    if any(getattr(layer.self_attn, "sliding_window", None) for layer in trunk.layers):
        return None
    return trunk, base.lm_head


def llama_step(trunk: nn.Module, lm_head: nn.Module, cache: Any, ids: torch.Tensor, positions: torch.Tensor,
               bias: torch.Tensor) -> torch.Tensor:
    """ids (b, L) at positions (b, L) with an attention bias (b, 1, L, keys) -> the last position's (b, V)
    float32 logits; L = 1 in a decode step, the prompt in a prefill."""
    hidden = trunk.embed_tokens(ids)
    cos, sin = trunk.rotary_emb(hidden, positions)
    first = trunk.layers[0].self_attn
    rotate = sys.modules[type(first).__module__].apply_rotary_pos_emb
    head_norms = hasattr(first, "q_norm")  # Qwen3: RMS norm of each head's query and key
    for layer, cache_layer in zip(trunk.layers, cache.layers):
        attn = layer.self_attn
        normed = layer.input_layernorm(hidden)
        shape = (*ids.shape, -1, attn.head_dim)
        query, key = attn.q_proj(normed).view(shape), attn.k_proj(normed).view(shape)
        if head_norms:
            query, key = attn.q_norm(query), attn.k_norm(key)
        value = attn.v_proj(normed).view(shape).transpose(1, 2)
        query, key = rotate(query.transpose(1, 2), key.transpose(1, 2), cos, sin)
        keys, values = cache_layer.update(key, value)
        context = attend(query, keys, values, bias, attn.scaling).transpose(1, 2).reshape(*ids.shape, -1)
        hidden = hidden + attn.o_proj(context)
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return lm_head(trunk.norm(hidden[:, -1])).float()


class LlamaStepper(GPT2Stepper):
    """Decode steps of a Llama-family model over an in-place cache (the interface of :class:`GPT2Stepper`)."""

    step = staticmethod(llama_step)
