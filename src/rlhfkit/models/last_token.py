"""A GPT-2 trunk's final hidden state at one position per row, with the last block run only there.

A reward model reads the trunk at each row's last token. Every block but the last must run at all
positions (later positions attend to them), but the last block's query, attention output projection
and MLP matter only at the read position; only its keys and values are needed everywhere. Running
it that way skips ~5/6 of the last block's arithmetic (1/5 of a 4-layer trunk's forward and backward)
and gives the same function: the test checks scores and gradients against the full trunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


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


@contextmanager
def _without_last_block(trunk: nn.Module) -> Iterator[None]:
    """Within the block ``trunk`` runs all blocks but the last and returns their output un-normalised."""
    blocks, norm = trunk.h, trunk.ln_f
    trunk.h, trunk.ln_f = blocks[:-1], nn.Identity()
    try:
        yield
    finally:
        trunk.h, trunk.ln_f = blocks, norm


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(b, T, E) -> (b, heads, T, E / heads)."""
    b, t, e = x.shape
    return x.view(b, t, heads, e // heads).transpose(1, 2)


def last_block_at(block: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
                  index: torch.Tensor) -> torch.Tensor:
    """A GPT-2 block's output (b, E) at position ``index[r]`` of each row r, from its input ``hidden`` (b, T, E).

    Keys and values at every position, the query, attention projection and MLP at the one position;
    the query sees the keys at or before it whose ``attention_mask`` is 1 (the trunk's causal + padding mask).
    """
    attn = block.attn
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    normed = block.ln_1(hidden)
    embed = hidden.shape[-1]
    weight, bias = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: (E, 3E), y = x W + b
    q = torch.addmm(bias[:embed], normed[rows, index], weight[:, :embed])
    kv = torch.matmul(normed, weight[:, embed:]) + bias[embed:]
    key, value = kv.split(embed, dim=-1)
    heads = attn.num_heads
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    allowed = (positions[None, :] <= index[:, None]) & attention_mask.bool()
    out = F.scaled_dot_product_attention(_heads(q[:, None], heads), _heads(key, heads), _heads(value, heads),
                                         attn_mask=allowed[:, None, None, :], scale=attn.scaling)
    x = hidden[rows, index] + attn.resid_dropout(attn.c_proj(out.transpose(1, 2).reshape(-1, embed)))
    return x + block.mlp(block.ln_2(x))


def last_token_hidden(trunk: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      index: torch.Tensor) -> torch.Tensor:
    """The trunk's final (normalised) hidden state (b, E) at position ``index[r]`` of each row r.

    Same as ``trunk(input_ids, attention_mask).last_hidden_state[rows, index]`` (GPT-2 trunks that
    :func:`supports_last_token`); the trunk's own positions, embeddings and masks for the other blocks.
    """
    with _without_last_block(trunk):
        hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return trunk.ln_f(last_block_at(trunk.h[-1], hidden, attention_mask, index))
