"""A GPT-2 trunk's final hidden state at one position per row, with the last block run only there.

A reward model reads the trunk at each row's last token. Every block but the last must run at all
positions (later positions attend to them), but the last block's query, attention output projection
and MLP matter only at the read position; only its keys and values are needed everywhere. Running
it that way skips ~5/6 of the last block's arithmetic (1/5 of a 4-layer trunk's forward and backward)
and gives the same function: the test checks scores and gradients against the full trunk.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from rlhfkit.models.shared_prefix import PrefixCache


def supports_last_token(trunk: nn.Module) -> bool:
    """Whether :func:`last_token_hidden` computes what ``trunk`` does: a plain GPT-2 trunk of at least two
    blocks whose last block has no dropout in effect, no cross-attention and no reordered attention."""
    if type(trunk).__name__ != "GPT2Model" or len(getattr(trunk, "h", ())) < 2:
        return False
    config = trunk.config
    if getattr(config, "add_cross_attention", False) or getattr(config, "reorder_and_upcast_attn", False):
        return False
    last = trunk.h[-1]
    live_dropout = any(isinstance(m, nn.Dropout) and m.p > 0 for m in last.modules()) or config.attn_pdrop > 0
    return not (trunk.training and live_dropout)


def _without_last_block(trunk: nn.Module) -> nn.Module:
    """A view of ``trunk`` (same parameters, hooks and settings) that runs all blocks but the last and returns their
    output un-normalised. A view, not a swap of ``trunk``'s blocks: another thread may be running ``trunk`` at the
    same time (:func:`rlhfkit.rl.update.row_halves`)."""
    view = copy.copy(trunk)
    view.__dict__["_modules"] = {**trunk._modules, "h": trunk.h[:-1], "ln_f": nn.Identity()}
    return view


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(b, T, E) -> (b, heads, T, E / heads)."""
    b, t, e = x.shape
    return x.view(b, t, heads, e // heads).transpose(1, 2)


def last_block_at(block: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
                  index: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """A GPT-2 block's output (b, E) at position ``index[r]`` of each row r, from its input ``hidden`` (b, T, E).

    Keys and values at every position, the query, attention projection and MLP at the one position;
    the query sees the keys at or before it whose ``attention_mask`` (b, T) is 1 (the trunk's causal +
    padding mask). With ``prefix`` (this block's cached keys and values of the first L positions, each
    (b, heads, L, head_dim)), ``hidden`` holds only the T - L positions after them.
    """
    attn = block.attn
    offset = 0 if prefix is None else prefix[0].shape[2]
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    normed = block.ln_1(hidden)
    embed = hidden.shape[-1]
    weight, bias = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: (E, 3E), y = x W + b
    q = torch.addmm(bias[:embed], normed[rows, index - offset], weight[:, :embed])
    kv = torch.matmul(normed, weight[:, embed:]) + bias[embed:]
    heads = attn.num_heads
    key, value = (_heads(part, heads) for part in kv.split(embed, dim=-1))
    if prefix is not None:
        key, value = torch.cat([prefix[0], key], dim=2), torch.cat([prefix[1], value], dim=2)
    positions = torch.arange(attention_mask.shape[1], device=hidden.device)
    allowed = (positions[None, :] <= index[:, None]) & attention_mask.bool()
    out = F.scaled_dot_product_attention(_heads(q[:, None], heads), key, value,
                                         attn_mask=allowed[:, None, None, :], scale=attn.scaling)
    x = hidden[rows, index - offset] + attn.resid_dropout(attn.c_proj(out.transpose(1, 2).reshape(-1, embed)))
    return x + block.mlp(block.ln_2(x))


def last_token_hidden(trunk: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      index: torch.Tensor, prefix: PrefixCache | None = None) -> torch.Tensor:
    """The trunk's final (normalised) hidden state (b, E) at position ``index[r]`` of each row r.

    Same as ``trunk(input_ids, attention_mask).last_hidden_state[rows, index]`` (GPT-2 trunks that
    :func:`supports_last_token`); the trunk's own positions, embeddings and masks for the other blocks.
    With ``prefix`` (the rows' first L positions already run, :mod:`rlhfkit.models.shared_prefix`), the
    trunk runs only the positions after them; every ``index`` must lie there.
    """
    kwargs, cached = {}, None
    if prefix is not None:
        input_ids = input_ids[:, prefix.length:]
        kwargs = {prefix.argument: prefix.cache}
        last = prefix.cache.layers[len(trunk.h) - 1]
        cached = (last.keys, last.values)
    hidden = _without_last_block(trunk)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                                        **kwargs).last_hidden_state
    return trunk.ln_f(last_block_at(trunk.h[-1], hidden, attention_mask, index, cached))
