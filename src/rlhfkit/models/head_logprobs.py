"""Log-probs of response tokens from the hidden states, the LM head run over blocks of the vocabulary in both
directions.

A training forward that ends in (n, V) logits holds them, and then their gradient, at the backward's peak: with
a real vocabulary (151,936 for Qwen3) and 4,096 response positions that is 2.5 GB in float32. Here the head runs
over blocks of vocabulary columns, accumulating each row's log-sum-exp (and the entropy's ``E_p[z]``) online and
picking its token's logit in the block that holds it, so only (n,) statistics outlive a block; the backward
recomputes each block's logits (one more head product: the head's forward once more), turns them into the block's
logit gradient (:func:`rlhfkit.models.token_softmax.chunk_gradient`) and at once into the hidden states' gradient and
the block's rows of the weight and bias gradients. No (n, V) tensor exists in either direction, and each pass
reads the weight once, as a whole-logits product does. The trainers use it where the logits would exceed
:data:`HEAD_LOGIT_ELEMENTS` (below that the recomputation costs more than it saves) and the head is a plain
linear layer (``bench/head_memory.py`` measures both sides at Qwen3's vocabulary).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from rlhfkit.models.head_rows import logits_are_head_output, output_head
from rlhfkit.models.plain_layers import runs_as_its_class
from rlhfkit.models.token_softmax import chunk_gradient

#: Logit elements (positions x vocabulary) above which a training forward runs the head in blocks: 64 MiB of
#: float32 on a CPU, 1 GiB on accelerators.
HEAD_LOGIT_ELEMENTS = {"cpu": 1 << 24}
ACCELERATOR_HEAD_LOGIT_ELEMENTS = 1 << 28
#: Logit elements of one block (positions x block columns).
HEAD_CHUNK_ELEMENTS = {"cpu": 1 << 21}
ACCELERATOR_HEAD_CHUNK_ELEMENTS = 1 << 27


def chunked_head_applies(head: nn.Module | None, positions: int, device: torch.device) -> bool:
    """Whether a training forward should run ``head`` through :func:`head_logprobs` for ``positions`` rows:
    a plain ``nn.Linear`` with no hooks (adapters, offloading and sharding wrappers keep their own forward) and a
    whole 2-D weight (sharded parameters are not) whose (positions, V) logits would exceed the device's
    :data:`HEAD_LOGIT_ELEMENTS`."""
    if not runs_as_its_class(head):
        return False
    weight = head.weight  # type: ignore[union-attr]
    if type(weight) is not nn.Parameter or weight.dim() != 2 or weight.is_meta:
        return False
    budget = HEAD_LOGIT_ELEMENTS.get(device.type, ACCELERATOR_HEAD_LOGIT_ELEMENTS)
    return positions * weight.shape[0] > budget


def training_head(model: nn.Module, input_ids: torch.Tensor, positions: int) -> nn.Linear | None:
    """``model``'s output head when a forward with gradients over ``input_ids`` that scores ``positions`` tokens
    should run it through :func:`head_logprobs` (:func:`chunked_head_applies`, and the model's logits are its
    head's output unchanged: :func:`rlhfkit.models.head_rows.logits_are_head_output`), else None."""
    if not torch.is_grad_enabled() or not input_ids.numel():
        return None
    head = output_head(model)
    if not chunked_head_applies(head, positions, input_ids.device) or not logits_are_head_output(model, input_ids):
        return None
    return head  # type: ignore[return-value]


def _block_columns(rows: int, device: torch.device) -> int:
    """Vocabulary columns of one block of (``rows``, columns) logits on ``device``."""
    return max(1, HEAD_CHUNK_ELEMENTS.get(device.type, ACCELERATOR_HEAD_CHUNK_ELEMENTS) // max(rows, 1))


class HeadLogprobs(torch.autograd.Function):
    """hidden (n, H), the head's weight (V, H) and bias (V,) or None, tokens (n,) -> float32 (n,) log-probs of
    ``tokens`` under ``softmax(head(hidden) / T)`` and (n,) entropy (empty unless asked), over blocks of the
    vocabulary: each block of the weight is read once per pass (as a whole-logits product reads it), the
    log-sum-exp and the entropy's ``E_p[z]`` are accumulated online, and a block's weight gradient is written once."""

    @staticmethod
    def forward(ctx: FunctionCtx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                tokens: torch.Tensor, temperature: float, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
        rows, vocab = hidden.shape[0], weight.shape[0]
        device = hidden.device
        running_max = torch.full((rows,), float("-inf"), dtype=torch.float32, device=device)
        total = torch.zeros(rows, dtype=torch.float32, device=device)  # sum exp(z - running_max)
        weighted = torch.zeros_like(total) if with_entropy else None  # sum exp(z - running_max) * z
        picked = torch.zeros_like(total)  # z at each row's token
        columns = _block_columns(rows, device)
        for start in range(0, vocab, columns):
            end = min(start + columns, vocab)
            z = _scaled_logits(hidden, weight[start:end], None if bias is None else bias[start:end], temperature)
            z.clamp_min_(torch.finfo(torch.float32).min)  # -inf logits weigh 0 (0 * -inf would be NaN)
            inside = ((tokens >= start) & (tokens < end)).nonzero().squeeze(1)
            picked.index_copy_(0, inside, z[inside, tokens[inside] - start])
            new_max = torch.maximum(running_max, z.amax(1))
            rescale = torch.exp(running_max - new_max)
            exps = torch.exp(z - new_max[:, None])
            total.mul_(rescale).add_(exps.sum(1))
            if weighted is not None:
                weighted.mul_(rescale).add_((exps * z).sum(1))
            running_max = new_max
        lse = running_max + total.log()
        logprobs = picked - lse
        entropy = lse - weighted / total if weighted is not None else lse.new_empty(0)
        ctx.save_for_backward(hidden, weight, bias, tokens, lse, entropy)
        ctx.temperature = temperature
        ctx.autocast = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        ctx.set_materialize_grads(False)
        return logprobs, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_logprobs: torch.Tensor | None, grad_entropy: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, bias, tokens, lse, entropy = ctx.saved_tensors  # type: ignore[attr-defined]
        temperature: float = ctx.temperature  # type: ignore[attr-defined]
        if grad_entropy is not None and entropy.numel() == 0:
            grad_entropy = None
        if grad_logprobs is None and grad_entropy is None:
            return None, None, None, None, None, None
        wants_hidden, wants_weight, wants_bias = ctx.needs_input_grad[:3]  # type: ignore[attr-defined]
        enabled, dtype = ctx.autocast  # type: ignore[attr-defined]
        device = hidden.device
        compute = dtype if enabled else weight.dtype  # the dtype the forward's head product ran in
        grad_hidden = torch.zeros(hidden.shape, dtype=torch.float32, device=device) if wants_hidden else None
        grad_weight = torch.empty_like(weight) if wants_weight else None
        grad_bias = torch.empty_like(bias) if wants_bias else None
        states = hidden.to(compute)
        rows, vocab = hidden.shape[0], weight.shape[0]
        columns = _block_columns(rows, device)
        with torch.autocast(device.type, dtype=dtype, enabled=enabled):
            for start in range(0, vocab, columns):
                end = min(start + columns, vocab)
                block = weight[start:end]
                z = _scaled_logits(hidden, block, None if bias is None else bias[start:end], temperature)
                grad_z = chunk_gradient(z, None, lse, entropy if grad_entropy is not None else None, grad_logprobs,
                                        grad_entropy, 1.0, out=z)
                if grad_logprobs is not None:  # the one-hot term, for the rows whose token is in this block
                    inside = ((tokens >= start) & (tokens < end)).nonzero().squeeze(1)
                    grad_z.index_put_((inside, tokens[inside] - start), grad_logprobs[inside], accumulate=True)
                if temperature != 1.0:
                    grad_z.div_(temperature)
                if grad_bias is not None:
                    grad_bias[start:end] = grad_z.sum(0)
                grad_z = grad_z.to(compute)
                if grad_hidden is not None:
                    grad_hidden.add_(grad_z @ block.to(compute))
                if grad_weight is not None:
                    grad_weight[start:end] = grad_z.t() @ states
        return (None if grad_hidden is None else grad_hidden.to(hidden.dtype), grad_weight, grad_bias,
                None, None, None)


def _scaled_logits(states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   temperature: float) -> torch.Tensor:
    """float32 ``head(states) / T`` for one block of the head (its product in autocast's dtype where it is on)."""
    z = nn.functional.linear(states, weight, bias).float()
    return z if temperature == 1.0 else z.div_(temperature)


def head_logprobs(hidden: torch.Tensor, head: nn.Linear, tokens: torch.Tensor, temperature: float = 1.0,
                  with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Float32 log-probs (n,) of ``tokens`` (n,) under ``softmax(head(hidden) / T)`` for hidden states (n, H), and
    the entropy (n,) when ``with_entropy``; differentiable in ``hidden`` and the head's parameters, without ever
    holding (n, V) logits (:class:`HeadLogprobs`)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if hidden.dim() != 2 or tokens.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be (n, H) and tokens (n,), got {tuple(hidden.shape)} and {tuple(tokens.shape)}")
    logprobs, entropy = HeadLogprobs.apply(hidden, head.weight, head.bias, tokens.contiguous(), float(temperature),
                                           with_entropy)
    return logprobs, (entropy if with_entropy else None)
