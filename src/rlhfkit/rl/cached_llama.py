"""A hand-written decode step (and prompt prefill) for the Llama family (Llama, Qwen2, Qwen3, Mistral without
a sliding window) for ``CachedSampler``: the model's own modules, none of the wrapping.

The same idea as :mod:`rlhfkit.rl.cached_gpt2`: a transformers forward of one token spends most of a small
model's step on mask building, output capture and cache bookkeeping (on ``bench/rollout.py``'s shapes the
cached sampler was only ~1.2x HF ``generate`` on a Llama or Qwen3 model, against 2x on GPT-2). This step
calls the decoder layers' submodules in the order they do (RMS norms, the projections, Qwen3's per-head
query/key norms, the model's rotary embedding, grouped-query attention over the in-place cache, the MLP), so
LoRA wrappers and autocast apply. Models it does not cover (other classes, sliding windows, training mode)
keep the transformers forward. While a rollout on packed weights runs (CPU, float32), plain (adapter-free,
hook-free) query/key/value and gate/up projections exist concatenated and packed instead of packed one by one
(:func:`fused_projections_while`): one product each instead of three and two, and no more memory.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from rlhfkit.models.plain_layers import runs_as_its_class
from rlhfkit.rl.cached_gpt2 import GPT2Stepper, attend, plus
from rlhfkit.rl.row_packing import RowPacking

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


#: The concatenated projections :func:`fused_projections_while` adds to a layer's attention and MLP modules.
FUSED_QKV, FUSED_GATE_UP = "rlhfkit_fused_qkv", "rlhfkit_fused_gate_up"


def _concatenated(layers: list[Any]) -> nn.Linear | None:
    """One frozen ``nn.Linear`` whose output is the layers' outputs side by side (their weights copied once), or
    None when they are not all plain linear layers (a missing one is None) with the same input and all or none with a
    bias."""
    if not all(runs_as_its_class(layer) for layer in layers) or len({layer.in_features for layer in layers}) != 1:
        return None
    biases = [layer.bias for layer in layers]
    if any(b is None for b in biases) and not all(b is None for b in biases):
        return None
    weight = torch.cat([layer.weight.detach() for layer in layers])
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=biases[0] is not None, device="meta")
    fused.weight = nn.Parameter(weight, requires_grad=False)
    if biases[0] is not None:
        fused.bias = nn.Parameter(torch.cat([b.detach() for b in biases]), requires_grad=False)
    return fused


@contextlib.contextmanager
def fused_projections_while(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Inside the block, each decoder layer of a Llama-family ``model`` (:func:`llama_parts`) whose query, key
    and value projections (and gate and up projections) are plain linear layers also holds them concatenated,
    which :func:`llama_step` then runs instead: three products become one and two one. Yields the layers
    replaced so (they need no packing for the block); the concatenated ones are removed after. Inference only:
    the copies do not follow later changes of the weights."""
    parts = llama_parts(model)
    added: list[tuple[nn.Module, str]] = []
    replaced: list[nn.Module] = []
    for layer in parts[0].layers if parts is not None else []:
        attn, mlp = layer.self_attn, layer.mlp
        for owner, name, names, runnable in ((attn, FUSED_QKV, ("q_proj", "k_proj", "v_proj"), True),
                                             (mlp, FUSED_GATE_UP, ("gate_proj", "up_proj"),
                                              callable(getattr(mlp, "act_fn", None)))):
            layers = [getattr(owner, n, None) for n in names]
            fused = _concatenated(layers) if runnable else None
            if fused is not None:
                owner.add_module(name, fused)
                added.append((owner, name))
                replaced.extend(layers)
    try:
        yield replaced
    finally:
        for owner, name in added:
            delattr(owner, name)


def _projections(attn: nn.Module, normed: torch.Tensor, shape: tuple[int, ...]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query (b, L, h, d), key and value (b, L, kv heads, d): one concatenated product when the layer holds it."""
    fused = getattr(attn, FUSED_QKV, None)
    if fused is None:
        return attn.q_proj(normed).view(shape), attn.k_proj(normed).view(shape), attn.v_proj(normed).view(shape)
    sizes = (attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features)
    query, key, value = fused(normed).split(sizes, dim=-1)
    return query.view(shape), key.view(shape), value.view(shape)


def _mlp_plus(mlp: nn.Module, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``residual + down(act(gate(x)) * up(x))``, gate and up as one product when the layer holds them
    concatenated, the residual added inside the down product where it is packed (:func:`plus`)."""
    fused = getattr(mlp, FUSED_GATE_UP, None)
    if fused is None:
        return residual + mlp(hidden)
    gate, up = fused(hidden).chunk(2, dim=-1)
    return plus(mlp.down_proj, mlp.act_fn(gate) * up, residual)


def llama_step(trunk: nn.Module, lm_head: nn.Module, cache: Any, ids: torch.Tensor, positions: torch.Tensor,
               bias: torch.Tensor, packing: RowPacking | None = None) -> torch.Tensor:
    """ids (b, L) at positions (b, L) with an attention bias (b, 1, L, keys) -> the last position's (b, V)
    float32 logits; L = 1 in a decode step, the prompt in a prefill. With ``packing`` (a prefill's padding),
    every product runs over the real positions only and the last logits are each row's last real position's."""
    rows = ids.shape
    hidden = trunk.embed_tokens(ids if packing is None else packing.packed(ids))
    cos, sin = trunk.rotary_emb(hidden, positions)
    first = trunk.layers[0].self_attn
    rotate = sys.modules[type(first).__module__].apply_rotary_pos_emb
    head_norms = hasattr(first, "q_norm")  # Qwen3: RMS norm of each head's query and key
    for layer, cache_layer in zip(trunk.layers, cache.layers):
        attn = layer.self_attn
        normed = layer.input_layernorm(hidden)
        query, key, value = _projections(attn, normed, (*hidden.shape[:-1], -1, attn.head_dim))
        if head_norms:
            query, key = attn.q_norm(query), attn.k_norm(key)
        if packing is not None:
            query, key, value = packing.padded(query), packing.padded(key), packing.padded(value)
        value = value.transpose(1, 2)
        query, key = rotate(query.transpose(1, 2), key.transpose(1, 2), cos, sin)
        keys, values = cache_layer.update(key, value)
        context = attend(query, keys, values, bias, attn.scaling).transpose(1, 2).reshape(*rows, -1)
        if packing is not None:
            context = packing.packed(context)
        hidden = plus(attn.o_proj, context, hidden)
        hidden = _mlp_plus(layer.mlp, layer.post_attention_layernorm(hidden), hidden)
    last = hidden[:, -1] if packing is None else packing.last_rows(hidden)
    return lm_head(trunk.norm(last)).float()


class LlamaStepper(GPT2Stepper):
    """Decode steps of a Llama-family model over an in-place cache (the interface of :class:`GPT2Stepper`)."""

    step = staticmethod(llama_step)

    @staticmethod
    def kv_heads_and_dim(trunk: nn.Module) -> tuple[int, int]:
        """(key/value heads, head size) of the decoder's attention layers (grouped-query: fewer key/value heads)."""
        attn = trunk.layers[0].self_attn
        return getattr(attn.config, "num_key_value_heads", None) or attn.config.num_attention_heads, attn.head_dim
