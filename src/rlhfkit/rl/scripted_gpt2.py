"""The GPT-2 decode step on packed weights as one TorchScript function, which runs without Python's GIL.

Row shards (:mod:`rlhfkit.rl.sharded_decode`) step on two threads, and every eager call into PyTorch takes the
GIL for its Python part: two 32-row rollouts of ``bench/rollout.py``'s model in two threads of one process took
1.12-1.19x the time of one alone, against 0.97-1.08x when the step is a scripted function (TorchScript's
interpreter holds no GIL). So once a rollout's weights are packed (:mod:`rlhfkit.rl.packed_linear`) with the
MLPs' GELU and the residual additions as oneDNN post-ops (:mod:`rlhfkit.rl.packed_mlp`), the decode step runs
the same oneDNN and PyTorch ops as :func:`rlhfkit.rl.cached_gpt2.gpt2_step`, in the same order, from TorchScript:
the same logits, bit for bit. Anything else (unpacked, adapters, hooks, other layer types, a torch without
TorchScript) keeps the eager step; the prompt prefill always does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
from torch import nn

from rlhfkit.models.plain_layers import runs_as_its_class
from rlhfkit.rl.cached_gpt2 import GPT2Stepper
from rlhfkit.rl.packed_linear import PackedLinear
from rlhfkit.rl.packed_mlp import PackedGeluMLP, onednn_fusions_available
from rlhfkit.rl.scripted_decoding import ScriptedDecoding
from rlhfkit.utils.torchscript import scripted

def _decode_step(ids: torch.Tensor, positions: torch.Tensor, bias: torch.Tensor, wte: torch.Tensor,
                 wpe: torch.Tensor, blocks: List[torch.Tensor], keys: List[torch.Tensor],
                 values: List[torch.Tensor], at: int, heads: int, scaling: float, eps: float, gelu: str,
                 final_norm: List[torch.Tensor], head: torch.Tensor, head_bias: Optional[torch.Tensor]
                 ) -> torch.Tensor:
    """(b, 1) ids at (b, 1) positions -> (b, V) float32 logits, writing each layer's key and value at column ``at``
    of its cache buffer (b, heads, capacity, d) and attending to columns ``:at + 1`` with ``bias`` (b, 1, 1, at + 1).
    TorchScript: no module calls; ``blocks`` holds 12 tensors per layer: ln_1 weight, bias; c_attn packed, bias;
    attention c_proj packed, bias; ln_2 weight, bias; c_fc packed, bias; MLP c_proj packed, bias."""
    hidden = torch.nn.functional.embedding(ids, wte) + torch.nn.functional.embedding(positions, wpe)
    rows = ids.shape[0]
    width = hidden.shape[-1]
    for index in range(len(keys)):
        j = index * 12
        normed = torch.nn.functional.layer_norm(hidden, [width], blocks[j], blocks[j + 1], eps)
        qkv = torch.ops.mkldnn._linear_pointwise(normed, blocks[j + 2], blocks[j + 3], "none", [], "") \
            .view(rows, 1, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        keys[index][:, :, at:at + 1] = qkv[1]
        values[index][:, :, at:at + 1] = qkv[2]
        context = torch.nn.functional.scaled_dot_product_attention(
            qkv[0], keys[index][:, :, :at + 1], values[index][:, :, :at + 1], attn_mask=bias, scale=scaling)
        hidden = torch.ops.mkldnn._linear_pointwise(context.transpose(1, 2).reshape(rows, 1, width), hidden,
                                                    blocks[j + 4], blocks[j + 5], "add")
        normed = torch.nn.functional.layer_norm(hidden, [width], blocks[j + 6], blocks[j + 7], eps)
        inner = torch.ops.mkldnn._linear_pointwise(normed, blocks[j + 8], blocks[j + 9], "gelu", [], gelu)
        hidden = torch.ops.mkldnn._linear_pointwise(inner, hidden, blocks[j + 10], blocks[j + 11], "add")
    last = torch.nn.functional.layer_norm(hidden[:, -1], [width], final_norm[0], final_norm[1], eps)
    return torch.ops.mkldnn._linear_pointwise(last, head, head_bias, "none", [], "").float()


def scripted_decode_step() -> Callable[..., torch.Tensor] | None:
    """:func:`_decode_step` compiled by TorchScript (once per process), or None where that fails: the eager step
    then runs."""
    return scripted(_decode_step)


@dataclass(frozen=True)
class DecodeWeights:
    """What :func:`_decode_step` reads of a packed GPT-2: embeddings, per-block tensors, final norm and head."""

    wte: torch.Tensor
    wpe: torch.Tensor
    blocks: list[torch.Tensor]
    heads: int
    scaling: float
    eps: float
    gelu: str
    final_norm: list[torch.Tensor]
    head: torch.Tensor
    head_bias: torch.Tensor | None


def _norm(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """(weight, bias, eps) of a plain affine LayerNorm, or None."""
    if not runs_as_its_class(module, (nn.LayerNorm,)) or module.weight is None or module.bias is None:
        return None
    return module.weight.detach(), module.bias.detach(), float(module.eps)


def _packed(layer: object) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(packed weight, bias) of a hook-free :class:`PackedLinear` with a bias, or None."""
    if not runs_as_its_class(layer, (PackedLinear,)) or layer.bias_data is None or layer.dtype != torch.float32:
        return None
    return layer.packed, layer.bias_data


def decode_weights(trunk: nn.Module, lm_head: nn.Module) -> DecodeWeights | None:
    """The packed GPT-2's tensors for the scripted step, or None unless every part is one it computes exactly as
    the eager step does: plain embeddings and affine LayerNorms of one epsilon, packed projections with biases, MLPs
    packed with their GELU fused (:class:`PackedGeluMLP`), a packed head, all float32, and oneDNN's post-ops."""
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention, GPT2Block

    if not runs_as_its_class(lm_head, (PackedLinear,)) or lm_head.dtype != torch.float32 or trunk.training \
            or not onednn_fusions_available():
        return None  # nothing packed in float32 (off the CPU, autocast, adapters): post-ops not even asked about
    embeddings = [trunk.wte, trunk.wpe]
    if not all(runs_as_its_class(e, (nn.Embedding,)) and e.padding_idx is None and e.max_norm is None
               and e.weight.dtype == torch.float32 for e in embeddings):
        return None
    final = _norm(trunk.ln_f)
    blocks: list[torch.Tensor] = []
    norms = [final]
    algorithms, shapes = set(), set()
    for block in trunk.h:
        attn, mlp = block.attn, block.mlp
        if type(block) is not GPT2Block or type(attn) is not GPT2Attention or attn.is_cross_attention \
                or not runs_as_its_class(mlp, (PackedGeluMLP,)):
            return None
        parts = [_norm(block.ln_1), _packed(attn.c_attn), _packed(attn.c_proj), _norm(block.ln_2),
                 _packed(mlp.c_fc), _packed(mlp.c_proj)]
        if any(part is None for part in parts):
            return None
        ln_1, qkv, proj, ln_2, fc, out = parts
        norms += [ln_1, ln_2]
        blocks += [ln_1[0], ln_1[1], *qkv, *proj, ln_2[0], ln_2[1], *fc, *out]
        algorithms.add(mlp.algorithm)
        shapes.add((attn.num_heads, attn.head_dim, float(attn.scaling)))
    if any(norm is None for norm in norms) or len({norm[2] for norm in norms}) != 1 or len(algorithms) != 1 \
            or len(shapes) != 1 or not blocks:
        return None
    heads, dim, scaling = shapes.pop()
    if heads * dim != trunk.wte.embedding_dim:
        return None
    return DecodeWeights(trunk.wte.weight.detach(), trunk.wpe.weight.detach(), blocks, heads, scaling, final[2],
                         algorithms.pop(), [final[0], final[1]], lm_head.packed, lm_head.bias_data)


class ScriptedGPT2Stepper(ScriptedDecoding, GPT2Stepper):
    """:class:`GPT2Stepper` whose decode steps run :func:`_decode_step` from TorchScript when the model allows
    (:func:`decode_weights`); the prefill, and every step of a model it does not cover, run the eager step."""

    @staticmethod
    def compiled_step() -> Callable[..., torch.Tensor] | None:
        return scripted_decode_step()

    step_weights = staticmethod(decode_weights)

    def scripted_logits(self, ids: torch.Tensor, positions: torch.Tensor, bias: torch.Tensor,
                        keys: list[torch.Tensor], values: list[torch.Tensor], at: int) -> torch.Tensor:
        w = self.weights
        return self.script(ids, positions, bias, w.wte, w.wpe, w.blocks, keys, values, at, w.heads, w.scaling, w.eps,
                           w.gelu, w.final_norm, w.head, w.head_bias)
