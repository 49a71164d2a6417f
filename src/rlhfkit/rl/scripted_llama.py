"""The Llama-family decode step on packed weights as one TorchScript function, which runs without Python's GIL.

The counterpart of :mod:`rlhfkit.rl.scripted_gpt2` for :mod:`rlhfkit.rl.cached_llama`'s step: with the query/key/value
and gate/up projections concatenated and every product packed, a decode step is the eager step's ops in its order
(RMS norms, Qwen3's per-head norms, the rotary embedding, grouped-query attention over the in-place cache, SiLU MLP,
residuals added inside the output products), from TorchScript. The rotary cosines and sines come from the model's
own module, called eagerly (its variants compute them differently). The norms, the activation and the rotation are
written here, so each is checked once per process against the model's own, bit for bit, on random inputs: a
transformers release that computes them otherwise keeps the eager step.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import torch
from torch import nn

from rlhfkit.models.plain_layers import runs_as_its_class
from rlhfkit.rl.cached_llama import FUSED_GATE_UP, FUSED_QKV, LlamaStepper
from rlhfkit.rl.packed_linear import PackedLinear
from rlhfkit.rl.packed_mlp import onednn_fusions_available
from rlhfkit.rl.scripted_decoding import ScriptedDecoding
from rlhfkit.utils.torchscript import scripted


def rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' Llama/Qwen RMS norm of float32 ``hidden`` over its last dimension."""
    variance = hidden.pow(2).mean(-1, keepdim=True)
    return weight * (hidden * torch.rsqrt(variance + eps))


def rotated(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(b, h, L, d) states rotated by (b, 1, L, d) cosines and sines: ``x cos + rotate_half(x) sin``."""
    half = states.shape[-1] // 2
    return states * cos + torch.cat((-states[..., half:], states[..., :half]), dim=-1) * sin


def _decode_step(ids: torch.Tensor, embed: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor,
                 blocks: List[torch.Tensor], linear_biases: List[Optional[torch.Tensor]], head_norms: List[torch.Tensor],
                 keys: List[torch.Tensor], values: List[torch.Tensor], at: int, heads: int, kv_heads: int, dim: int,
                 scaling: float, eps: float, final_norm: torch.Tensor, head: torch.Tensor,
                 head_bias: Optional[torch.Tensor]) -> torch.Tensor:
    """(b, 1) ids with (b, 1, d) rotary cosines and sines -> (b, V) float32 logits, writing each layer's key and
    value at column ``at`` of its cache buffer and attending to columns ``:at + 1`` with ``bias``. Per layer:
    ``blocks`` holds input norm, packed qkv, packed o_proj, post-attention norm, packed gate_up, packed down_proj;
    ``linear_biases`` the four products' biases (or None); ``head_norms`` the query and key norms (Qwen3) or
    nothing."""
    hidden = torch.nn.functional.embedding(ids, embed)
    rows = ids.shape[0]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    sizes = [heads * dim, kv_heads * dim, kv_heads * dim]
    for index in range(len(keys)):
        j, k = index * 6, index * 4
        normed = rms_norm(hidden, blocks[j], eps)
        query, key, value = torch.ops.mkldnn._linear_pointwise(normed, blocks[j + 1], linear_biases[k], "none", [],
                                                               "").split(sizes, dim=-1)
        query, key = query.view(rows, 1, heads, dim), key.view(rows, 1, kv_heads, dim)
        if len(head_norms) > 0:
            query = rms_norm(query, head_norms[index * 2], eps)
            key = rms_norm(key, head_norms[index * 2 + 1], eps)
        value = value.view(rows, 1, kv_heads, dim).transpose(1, 2)
        query, key = rotated(query.transpose(1, 2), cos, sin), rotated(key.transpose(1, 2), cos, sin)
        keys[index][:, :, at:at + 1] = key
        values[index][:, :, at:at + 1] = value
        context = torch.nn.functional.scaled_dot_product_attention(
            query, keys[index][:, :, :at + 1], values[index][:, :, :at + 1], attn_mask=bias, scale=scaling,
            enable_gqa=kv_heads != heads)
        hidden = torch.ops.mkldnn._linear_pointwise(context.transpose(1, 2).reshape(rows, 1, heads * dim), hidden,
                                                    blocks[j + 2], linear_biases[k + 1], "add")
        normed = rms_norm(hidden, blocks[j + 3], eps)
        gate, up = torch.ops.mkldnn._linear_pointwise(normed, blocks[j + 4], linear_biases[k + 2], "none", [],
                                                      "").chunk(2, dim=-1)
        hidden = torch.ops.mkldnn._linear_pointwise(torch.nn.functional.silu(gate) * up, hidden, blocks[j + 5],
                                                    linear_biases[k + 3], "add")
    last = rms_norm(hidden[:, -1], final_norm, eps)
    return torch.ops.mkldnn._linear_pointwise(last, head, head_bias, "none", [], "").float()


def scripted_decode_step() -> Callable[..., torch.Tensor] | None:
    """:func:`_decode_step` compiled by TorchScript (once per process), or None where that fails."""
    return scripted(_decode_step)


def _probe(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


@functools.cache
def _norm_matches(norm_class: type) -> bool:
    """Whether ``norm_class``'s forward is :func:`rms_norm`, bit for bit, on float32 inputs."""
    try:
        norm = norm_class(24, eps=1e-5)
    except TypeError:
        return False
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        norm.weight.copy_(_probe(1, 24))
        inputs = _probe(2, 3, 5, 24)
        return torch.equal(norm(inputs), rms_norm(inputs, norm.weight, float(getattr(norm, "variance_epsilon", -1))))


@functools.cache
def _rotation_matches(rotate: Callable[..., Any]) -> bool:
    """Whether the modeling module's ``apply_rotary_pos_emb`` is :func:`rotated`, bit for bit."""
    query, key, angle = _probe(3, 2, 4, 3, 8), _probe(4, 2, 2, 3, 8), _probe(5, 2, 3, 8)
    cos, sin = angle.cos(), angle.sin()
    with torch.no_grad():
        expected = rotate(query, key, cos, sin)
        return (torch.equal(expected[0], rotated(query, cos[:, None], sin[:, None]))
                and torch.equal(expected[1], rotated(key, cos[:, None], sin[:, None])))


@dataclass(frozen=True)
class DecodeWeights:
    """What :func:`_decode_step` reads of a packed Llama-family model."""

    embed: torch.Tensor
    blocks: list[torch.Tensor]
    linear_biases: list[torch.Tensor | None]
    head_norms: list[torch.Tensor]
    heads: int
    kv_heads: int
    dim: int
    scaling: float
    eps: float
    final_norm: torch.Tensor
    head: torch.Tensor
    head_bias: torch.Tensor | None


def _packed(layer: object) -> PackedLinear | None:
    """``layer`` if it is a hook-free float32 :class:`PackedLinear`, else None."""
    return layer if runs_as_its_class(layer, (PackedLinear,)) and layer.dtype == torch.float32 else None


def _norm(module: object) -> tuple[torch.Tensor, float] | None:
    """(weight, eps) of a hook-free RMS norm whose class computes :func:`rms_norm`, or None."""
    if not isinstance(module, nn.Module) or not runs_as_its_class(module, (type(module),)):
        return None
    weight, eps = getattr(module, "weight", None), getattr(module, "variance_epsilon", None)
    if not isinstance(weight, torch.Tensor) or not isinstance(eps, float) or weight.dtype != torch.float32 \
            or not _norm_matches(type(module)):
        return None
    return weight.detach(), eps


def decode_weights(trunk: nn.Module, lm_head: nn.Module) -> DecodeWeights | None:
    """The packed model's tensors for the scripted step, or None unless every part is one it computes exactly as the
    eager step does: concatenated and packed projections, packed output products and head (with or without a
    bias), RMS norms of one epsilon that compute :func:`rms_norm`, a SiLU MLP, the modeling module's rotation
    :func:`rotated`, float32 embeddings, and oneDNN's post-ops."""
    from transformers.activations import SiLUActivation

    if _packed(lm_head) is None or trunk.training or not onednn_fusions_available():
        return None  # nothing packed in float32 (off the CPU, autocast, adapters): post-ops not even asked about
    embed = trunk.embed_tokens
    if not runs_as_its_class(embed, (nn.Embedding,)) or embed.max_norm is not None \
            or embed.weight.dtype != torch.float32:
        return None
    first = trunk.layers[0].self_attn
    rotate = getattr(sys.modules[type(first).__module__], "apply_rotary_pos_emb", None)
    if rotate is None or not _rotation_matches(rotate):
        return None
    final = _norm(trunk.norm)
    blocks: list[torch.Tensor] = []
    linear_biases: list[torch.Tensor | None] = []
    head_norms: list[torch.Tensor] = []
    epsilons = {None if final is None else final[1]}
    shapes = set()
    kv_heads, dim = LlamaStepper.kv_heads_and_dim(trunk)
    for layer in trunk.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if not runs_as_its_class(mlp.act_fn, (SiLUActivation, nn.SiLU)):
            return None
        norms = [_norm(layer.input_layernorm), _norm(layer.post_attention_layernorm)]
        if hasattr(attn, "q_norm"):
            norms += [_norm(attn.q_norm), _norm(attn.k_norm)]
        products = [_packed(getattr(attn, FUSED_QKV, None)), _packed(attn.o_proj),
                    _packed(getattr(mlp, FUSED_GATE_UP, None)), _packed(mlp.down_proj)]
        if any(part is None for part in (*norms, *products)):
            return None
        epsilons.update(norm[1] for norm in norms)
        blocks += [norms[0][0], products[0].packed, products[1].packed, norms[1][0], products[2].packed,
                   products[3].packed]
        linear_biases += [product.bias_data for product in products]
        head_norms += [norm[0] for norm in norms[2:]]
        shapes.add((attn.config.num_attention_heads, kv_heads, dim, float(attn.scaling), len(norms)))
    if len(epsilons) != 1 or None in epsilons or len(shapes) != 1 or not blocks:
        return None
    heads, kv_heads, dim, scaling, _ = shapes.pop()
    return DecodeWeights(embed.weight.detach(), blocks, linear_biases, head_norms, heads, kv_heads, dim, scaling,
                         epsilons.pop(), final[0], lm_head.packed, lm_head.bias_data)


class ScriptedLlamaStepper(ScriptedDecoding, LlamaStepper):
    """:class:`LlamaStepper` whose decode steps run :func:`_decode_step` from TorchScript when the model allows
    (:func:`decode_weights`); the prefill, and every step of a model it does not cover, run the eager step."""

    @staticmethod
    def compiled_step() -> Callable[..., torch.Tensor] | None:
        return scripted_decode_step()

    step_weights = staticmethod(decode_weights)

    def scripted_logits(self, ids: torch.Tensor, positions: torch.Tensor, bias: torch.Tensor,
                        keys: list[torch.Tensor], values: list[torch.Tensor], at: int) -> torch.Tensor:
        w = self.weights
        cos, sin = self.trunk.rotary_emb(w.embed, positions)
        return self.script(ids, w.embed, cos, sin, bias, w.blocks, w.linear_biases, w.head_norms, keys, values, at,
                           w.heads, w.kv_heads, w.dim, w.scaling, w.eps, w.final_norm, w.head, w.head_bias)
