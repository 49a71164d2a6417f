"""A hand-written GPT-2 decode step (and prompt prefill) for ``CachedSampler``: the model's own modules,
none of the wrapping.

A transformers forward of one token costs ~3.5 ms of CPU at batch 1 on ``bench/rollout.py``'s model
(mask building, output capture, cache bookkeeping), ~20% of a 64-row step. This step calls the same
submodules (so LoRA wrappers, autocast and a fused GELU apply) in the order ``GPT2Block`` does, with
the attention of transformers (scaled q.k, additive padding mask, softmax, weights.v; fused in float32) over the
filled prefix of the in-place cache (:mod:`rlhfkit.rl.cached_kv`). Models it does not cover (other
architectures, cross-attention, ``reorder_and_upcast_attn``, training mode) keep the transformers forward.
On packed weights (:mod:`rlhfkit.rl.packed_linear`) the residual additions run inside the output projections'
oneDNN products and the MLP's GELU inside its first (:mod:`rlhfkit.rl.packed_mlp`): fewer calls into PyTorch,
which matters most when row shards step on two threads, as each call hands the GIL to the other thread and back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rlhfkit.rl.packed_linear import PackedLinear
from rlhfkit.rl.packed_mlp import PackedGeluMLP, onednn_fusions_available
from rlhfkit.rl.row_packing import RowPacking

#: Whether PyTorch's fused attention takes fewer key/value heads than query heads (``enable_gqa``, torch 2.5).
_SDPA_GROUPS = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5)


def gpt2_parts(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(GPT2Model trunk, LM head) of a plain GPT-2 LM in eval mode (through a peft wrapper), or None."""
    from transformers import GPT2LMHeadModel

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if type(base) is not GPT2LMHeadModel or base.training:
        return None
    config = base.config
    if config.add_cross_attention or config.reorder_and_upcast_attn:
        return None
    return base.transformer, base.lm_head


def padding_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(b, L) 0/1 mask -> (b, 1, 1, L) additive attention bias: 0 where attended, the dtype's minimum elsewhere."""
    return additive_bias(mask != 0, dtype)[:, None, None, :]


def additive_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean ``allowed`` -> a bias of its shape: 0 where allowed, the dtype's minimum elsewhere."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


class GPT2Stepper:
    """Decode steps of a GPT-2 over an in-place cache; keeps the rows' padding bias (b, 1, 1, capacity).
    Subclasses for other architectures set ``step`` (same arguments as :func:`gpt2_step`)."""

    #: Whether the decode steps run a TorchScript function (:mod:`rlhfkit.rl.scripted_decoding`); this one is eager.
    runs_scripted = False

    def __init__(self, trunk: nn.Module, lm_head: nn.Module, cache: Any, mask: torch.Tensor) -> None:
        self.trunk, self.lm_head, self.cache = trunk, lm_head, cache
        self.bias = padding_bias(mask, trunk.get_input_embeddings().weight.dtype)

    @staticmethod
    def step(trunk: nn.Module, lm_head: nn.Module, cache: Any, ids: torch.Tensor, positions: torch.Tensor,
             bias: torch.Tensor, packing: RowPacking | None = None) -> torch.Tensor:
        """The architecture's forward over the cache: :func:`gpt2_step`."""
        return gpt2_step(trunk, lm_head, cache, ids, positions, bias, packing)

    @staticmethod
    def kv_heads_and_dim(trunk: nn.Module) -> tuple[int, int]:
        """(key/value heads, head size) of the architecture's attention layers."""
        attn = trunk.h[0].attn
        return attn.num_heads, attn.head_dim

    def allocate_cache(self) -> None:
        """Allocate the cache's buffers now, in the calling thread, for the keys and values the step will write
        (the projections' dtype, or autocast's): a shard's cache then lives in the caller's heap, not in the heap
        of the thread that steps the shard, which would keep the freed buffers after the rollout."""
        weight = self.trunk.get_input_embeddings().weight
        device = weight.device
        autocast = torch.is_autocast_enabled(device.type)
        dtype = torch.get_autocast_dtype(device.type) if autocast else weight.dtype
        heads, dim = self.kv_heads_and_dim(self.trunk)
        for layer in self.cache.layers:
            layer.allocate(heads, dim, dim, dtype, dtype, device)

    def select(self, keep: torch.Tensor) -> None:
        """Keep rows ``keep``, in the padding bias and the cache."""
        self.cache.batch_select_indices(keep)
        self.bias = self.bias[keep]

    def __call__(self, ids: torch.Tensor, positions: torch.Tensor, length: int) -> torch.Tensor:
        """(b, 1) ids at (b, 1) positions attending to the first ``length`` cache positions -> (b, V) logits."""
        return self.step(self.trunk, self.lm_head, self.cache, ids, positions, self.bias[..., :length])

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Left-padded prompts (b, L) through the same blocks with a causal mask, writing the cache as its
        layers are routed (:func:`rlhfkit.rl.cached_kv.set_prefill_rows`) -> each row's last (b, V) logits.
        The products skip the padding (:class:`~rlhfkit.rl.row_packing.RowPacking`)."""
        return self.step(self.trunk, self.lm_head, self.cache, ids, positions, prefill_bias(mask, self.bias.dtype),
                         RowPacking.of(mask))

    def padding_cost(self, width: int) -> float:
        """What a padded row of a prefill group ``width`` long costs, in positions of the products' work: only its
        attention (``width**2`` query-key pairs of ~4 hidden-size products against ~24 hidden-size**2 per position
        in the block's products), as the products skip the padding (:func:`rlhfkit.rl.cached_prefill.length_groups`)."""
        hidden = self.trunk.get_input_embeddings().weight.shape[1]
        return width * width / (6 * hidden)


def prefill_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(b, L) 0/1 mask -> (b, 1, L, L) causal padding bias. A padding position attends to itself, so no row
    of the softmax is empty (its output is masked out of every later attention anyway)."""
    length = mask.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    allowed = (causal[None] & mask.bool()[:, None, :]) | torch.eye(length, dtype=torch.bool, device=mask.device)
    return additive_bias(allowed, dtype)[:, None]


def attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor,
           scaling: float) -> torch.Tensor:
    """softmax(q.k * scaling + bias).v for (b, h, L, d) queries: PyTorch's fused attention in float32 (~25%
    faster than the four ops on CPU), transformers' eager ops otherwise (bf16 fused attention is slower on CPU).
    Keys and values with fewer heads (grouped-query attention) serve ``h / kv_heads`` query heads each."""
    groups = query.shape[1] // keys.shape[1]
    fused = query.dtype == keys.dtype == torch.float32
    if groups > 1 and not (fused and _SDPA_GROUPS):
        keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
    if fused:
        grouped = {"enable_gqa": True} if keys.shape[1] != query.shape[1] else {}
        return nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=bias, scale=scaling,
                                                          **grouped)
    weights = torch.softmax(torch.matmul(query, keys.transpose(-1, -2)) * scaling + bias, dim=-1)
    return torch.matmul(weights.type(values.dtype), values)


def plus(layer: nn.Module, inputs: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``residual + layer(inputs)``, the addition inside the last product of a packed layer or fused MLP (oneDNN's
    binary post-op) when this build has it: one call into PyTorch instead of two."""
    if isinstance(layer, (PackedLinear, PackedGeluMLP)) and onednn_fusions_available():
        return layer.plus(inputs, residual)
    return residual + layer(inputs)


def gpt2_step(trunk: nn.Module, lm_head: nn.Module, cache: Any, ids: torch.Tensor, positions: torch.Tensor,
              bias: torch.Tensor, packing: RowPacking | None = None) -> torch.Tensor:
    """ids (b, L) at positions (b, L) with an attention bias (b, 1, L, keys) -> the last position's (b, V)
    float32 logits; L = 1 in a decode step, the prompt in a prefill. With ``packing`` (a prefill's padding),
    every product runs over the real positions only and the last logits are each row's last real position's."""
    shape = ids.shape
    if packing is not None:
        ids, positions = packing.packed(ids), packing.packed(positions)
    hidden = trunk.wte(ids) + trunk.wpe(positions)
    for block, layer in zip(trunk.h, cache.layers):
        attn = block.attn
        qkv = attn.c_attn(block.ln_1(hidden))
        if packing is not None:
            qkv = packing.padded(qkv)
        # (b, L, 3 h d) -> three (b, h, L, d) views: fewer calls than split, view and transpose each (every call
        # into PyTorch hands the GIL to the other shard's thread and back)
        query, key, value = qkv.view(*shape, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        keys, values = layer.update(key, value)
        context = attend(query, keys, values, bias, attn.scaling).transpose(1, 2).reshape(*shape, -1)
        if packing is not None:
            context = packing.packed(context)
        hidden = plus(attn.c_proj, context, hidden)
        hidden = plus(block.mlp, block.ln_2(hidden), hidden)
    last = hidden[:, -1] if packing is None else packing.last_rows(hidden)
    return lm_head(trunk.ln_f(last)).float()
