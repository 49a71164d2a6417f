"""Per-token log-probs (and entropy) of a response under a causal LM, from one forward pass.

Positions follow what ``transformers`` ``generate`` uses for left-padded batches
(``position_ids = cumsum(mask) - 1``, 0 on padding), so a forward pass over a sampled rollout
reproduces the sampler's log-probs. The LM head runs only at the positions predicting response
tokens that exist (:func:`rlhfkit.models.head_rows.lm_head_rows`), and log-softmax, gather and
entropy are fused and chunked over rows (:class:`FusedLogprobs`): ``log p(y) = z_y - logsumexp(z)``
with ``z = logits / T``, so neither the forward nor the backward holds a (rows, V) float32 tensor
beyond the logits themselves and their gradient.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from rlhfkit.models.head_rows import lm_head_rows, logits_are_head_output, output_head
from rlhfkit.models.positions import position_ids_from_mask
from rlhfkit.models.shared_prefix import PrefixCache, SharedPrefix, shared_prefix
from rlhfkit.models.signature import forward_parameters
from rlhfkit.models.head_logprobs import head_logprobs, training_head
from rlhfkit.models.token_softmax import chunk_gradient, chunk_statistics

#: Logit elements per chunk: 2 MiB of float32 on a CPU (fastest of 2^15..2^21 for 512 x 4096 logits,
#: fused forward+backward: 10 ms vs 21 ms unfused on 2 threads); large on accelerators, where each
#: chunk costs a few kernel launches.
CHUNK_ELEMENTS = {"cpu": 1 << 19}
ACCELERATOR_CHUNK_ELEMENTS = 1 << 25
#: Logit elements of one no-grad forward (reference, old log-probs, values): 8 MiB of float32 on a CPU,
#: so a frozen pass over a whole rollout peaks like one training mini-batch instead of holding the
#: rollout's (rows, V) logits at once (PPO with LoRA: 64 rows peaked 65 MiB above the mini-batch);
#: 16 rows of 32 x 4096 logits cost no more CPU time than 64 (0.89x). Large on accelerators.
FROZEN_LOGIT_ELEMENTS = {"cpu": 1 << 21}
ACCELERATOR_FROZEN_LOGIT_ELEMENTS = 1 << 30
#: Hidden-state elements (rows x length x width) of one no-grad trunk forward whose LM head then runs in
#: chunks of rows (:func:`frozen_logprobs`): 8 MiB of float32 on a CPU (a bench rollout of 64 rows of 48
#: tokens at width 256 in one forward: a Qwen3 DPO reference pass 0.13 s against 0.19 s in four row chunks,
#: each parallel op waking the other thread); on accelerators a few GiB of activations per forward.
FROZEN_HIDDEN_ELEMENTS = {"cpu": 1 << 21}
ACCELERATOR_FROZEN_HIDDEN_ELEMENTS = 1 << 27


def chunk_rows(vocab: int, device: torch.device) -> int:
    """Rows of a (rows, ``vocab``) logits matrix processed together on ``device``."""
    return max(1, CHUNK_ELEMENTS.get(device.type, ACCELERATOR_CHUNK_ELEMENTS) // max(vocab, 1))


def frozen_chunk_rows(num_response: int, vocab: int, device: torch.device) -> int:
    """Rows of a no-grad forward run together: their (rows x ``num_response``, ``vocab``) logits stay in budget."""
    budget = FROZEN_LOGIT_ELEMENTS.get(device.type, ACCELERATOR_FROZEN_LOGIT_ELEMENTS)
    return max(1, budget // max(num_response * vocab, 1))


def balanced_slices(rows: int, per_chunk: int) -> list[slice] | None:
    """``rows`` cut into chunks of at most ``per_chunk`` whose sizes differ by at most one, or None for one chunk."""
    chunks = -(-rows // max(per_chunk, 1))
    if chunks <= 1:
        return None
    size, extra = divmod(rows, chunks)
    bounds = [i * size + min(i, extra) for i in range(chunks + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def row_slices(model: nn.Module, input_ids: torch.Tensor, response_start: int) -> list[slice] | None:
    """Balanced row chunks for a no-grad forward of ``model`` over ``input_ids`` (b, P + R) whose logits stay in
    budget, or None to run it whole (gradients on, one chunk would do, or the vocabulary size is unknown)."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if torch.is_grad_enabled() or not isinstance(vocab, int):
        return None
    return balanced_slices(input_ids.shape[0],
                           frozen_chunk_rows(input_ids.shape[1] - response_start, vocab, input_ids.device))


def trunk_row_slices(model: nn.Module, input_ids: torch.Tensor) -> list[slice] | None:
    """Balanced row chunks for a no-grad trunk forward whose hidden states stay in :data:`FROZEN_HIDDEN_ELEMENTS`
    (width: the input embeddings'), or None for one forward."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    width = getattr(embeddings, "embedding_dim", None)
    if not isinstance(width, int):
        return None
    budget = FROZEN_HIDDEN_ELEMENTS.get(input_ids.device.type, ACCELERATOR_FROZEN_HIDDEN_ELEMENTS)
    return balanced_slices(input_ids.shape[0], budget // max(input_ids.shape[1] * width, 1))


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """float32 ``logits / T`` (the input itself when it is float32 and T = 1)."""
    z = logits.float()
    return z if temperature == 1.0 else z / temperature


class FusedLogprobs(torch.autograd.Function):
    """(n, V) logits, (n,) tokens -> float32 (n,) ``log softmax(logits / T)[token]`` and (n,) entropy
    (empty unless asked), chunk by chunk; the backward recomputes softmax per chunk and writes
    ``d/dz log p_y = onehot(y) - p`` and ``dH/dz = -p (log p + H)`` straight into the logits' gradient
    (into the logits' own memory with ``consume``: one (n, V) buffer fewer at the backward's peak)."""

    @staticmethod
    def forward(ctx: FunctionCtx, logits: torch.Tensor, tokens: torch.Tensor, temperature: float,
                with_entropy: bool, consume: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        rows, vocab = logits.shape
        logprobs = torch.empty(rows, dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(logprobs)
        entropy = torch.empty(rows if with_entropy else 0, dtype=torch.float32, device=logits.device)
        step = chunk_rows(vocab, logits.device)
        for start in range(0, rows, step):
            part = slice(start, start + step)
            chunk_statistics(_scaled(logits[part], temperature), tokens[part], logprobs[part], lse[part],
                             entropy[part] if with_entropy else None)
        ctx.save_for_backward(logits, tokens, lse, entropy)
        ctx.temperature = temperature
        ctx.consume = consume
        ctx.set_materialize_grads(False)
        return logprobs, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_logprobs: torch.Tensor | None, grad_entropy: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, None, None, None, None]:
        logits, tokens, lse, entropy = ctx.saved_tensors  # type: ignore[attr-defined]
        temperature: float = ctx.temperature  # type: ignore[attr-defined]
        if grad_entropy is not None and entropy.numel() == 0:
            grad_entropy = None
        if grad_logprobs is None and grad_entropy is None:
            return None, None, None, None, None
        # each chunk is read into a new tensor (logp) before its rows of ``grad`` are written
        grad = logits if ctx.consume else torch.empty_like(logits)  # type: ignore[attr-defined]
        step = chunk_rows(logits.shape[1], logits.device)
        for start in range(0, logits.shape[0], step):
            part = slice(start, start + step)
            p = chunk_gradient(_scaled(logits[part], temperature), tokens[part], lse[part],
                               entropy[part] if grad_entropy is not None else None,
                               None if grad_logprobs is None else grad_logprobs[part],
                               None if grad_entropy is None else grad_entropy[part], temperature,
                               grad[part] if grad.dtype == torch.float32 else None)
            if p.data_ptr() != grad[part].data_ptr():
                grad[part] = p
        return grad, None, None, None, None


def fused_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0,
                   with_entropy: bool = False, consume: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Float32 log-probs (n,) of ``tokens`` (n,) under ``softmax(logits / T)`` for logits (n, V), and
    the entropy (n,) when ``with_entropy``; differentiable through :class:`FusedLogprobs`.

    ``consume``: the backward overwrites ``logits`` with their gradient (for callers that own them,
    e.g. a forward's fresh output; a second backward through them then raises)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.dim() != 2 or tokens.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (n, V) and tokens (n,), got {tuple(logits.shape)} and {tuple(tokens.shape)}")
    logprobs, entropy = FusedLogprobs.apply(logits.contiguous(), tokens.contiguous(), float(temperature), with_entropy,
                                            consume)
    return logprobs, (entropy if with_entropy else None)


def selective_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0,
                       with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (...) of ``tokens`` (...) under ``softmax(logits / T)`` for logits (..., V), plus entropy.

    Upcasts to float32 one chunk of rows at a time (:func:`fused_logprobs`).
    """
    shape = tokens.shape
    logprobs, entropy = fused_logprobs(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1), temperature,
                                       with_entropy)
    return logprobs.view(shape), (entropy.view(shape) if entropy is not None else None)


def response_positions(attention_mask: torch.Tensor, response_start: int) -> torch.Tensor:
    """Bool (b, T): the positions whose logits predict a response token that exists (mask 1)."""
    keep = torch.zeros(attention_mask.shape, dtype=torch.bool, device=attention_mask.device)
    keep[:, response_start - 1:-1] = attention_mask[:, response_start:].bool()
    return keep


def check_response_start(total: int, response_start: int) -> None:
    """A clear error unless at least one prompt column and one response column exist."""
    if not 0 < response_start < total:
        raise ValueError(f"response_start must be in [1, {total - 1}] for sequences of length {total}, got {response_start}")


def response_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    response_start: int, prefix: PrefixCache | None = None, defer_head: bool = False,
                    **forward_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Logits (n, V) at the n positions predicting real response tokens, their (b, R) mask, and the model output.

    Runs one forward over the whole sequence with generate-compatible position ids, keeping only the
    last R + 1 positions when the model supports ``logits_to_keep``, and running the LM head only at
    the n kept rows (row-major order: the order of ``tokens[mask]``). With ``prefix`` (the rows' shared
    first columns, already run: :func:`prompt_prefix`), the forward runs only the columns after it.
    With ``defer_head`` the head does not run: the first value is the (n, H) hidden states it would have read
    (for models whose logits are the head's output, :func:`rlhfkit.models.head_rows.logits_are_head_output`).
    """
    total = input_ids.shape[1]
    check_response_start(total, response_start)
    num_response = total - response_start
    positions = position_ids_from_mask(attention_mask)
    kwargs: dict[str, Any] = {"position_ids": positions, "use_cache": False, **forward_kwargs}
    if prefix is not None:
        kwargs["position_ids"] = positions[:, prefix.length:]
        kwargs[prefix.argument] = prefix.cache
        input_ids = input_ids[:, prefix.length:]
    elif "logits_to_keep" in forward_parameters(model):
        kwargs["logits_to_keep"] = num_response + 1
    keep = response_positions(attention_mask, response_start)[:, total - input_ids.shape[1]:]
    with lm_head_rows(model, keep, defer_head) as rows:
        output = model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    if defer_head:
        if rows.hidden is None:
            raise ValueError(f"{type(model).__name__}: its output head did not run, so it cannot be deferred")
        return rows.hidden, keep[:, keep.shape[1] - num_response - 1:-1], output
    logits = output.logits
    if rows.keep is None:  # no hookable head: the model returned (b, K, V)
        logits = logits[keep[:, keep.shape[1] - logits.shape[1]:]]
    return logits, keep[:, keep.shape[1] - num_response - 1:-1], output


def prompt_prefix(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  response_start: int) -> SharedPrefix | None:
    """The rows' repeated prompts run once (all but the last prompt column, whose logits predict the first
    response token), or None when no prompt repeats enough or the model cannot share them
    (:func:`rlhfkit.models.shared_prefix.shared_prefix`)."""
    return shared_prefix(model, input_ids, attention_mask, position_ids_from_mask(attention_mask), response_start - 1)


def unpack(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(n,) values at the True entries of ``mask`` (b, R), row-major -> (b, R) with 0 elsewhere (differentiable)."""
    if values.numel() == mask.numel():
        return values.view(mask.shape)
    return values.new_zeros(mask.shape).masked_scatter(mask, values)


def token_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int,
                   temperature: float = 1.0, with_entropy: bool = False
                   ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (b, R) float32 of ``input_ids[:, response_start:]`` under ``softmax(logits / T)``.

    ``input_ids``/``attention_mask`` are (b, P + R): left-padded prompts then right-padded responses
    (``Rollout.sequences`` / ``Rollout.attention_mask``). Positions where the response mask is 0 hold 0.
    With ``with_entropy`` returns ``(logprobs, entropy)``, both (b, R).
    Rows that share a prompt (a group's completions, a pair's responses) run it once (:func:`prompt_prefix`).
    Differentiable: call under ``torch.no_grad()`` for old/reference log-probs, which then run as
    :func:`frozen_logprobs` (or in row chunks, :func:`row_slices`) with the same per-row results. With gradients,
    logits above :data:`rlhfkit.models.head_logprobs.HEAD_LOGIT_ELEMENTS` never exist at once
    (:func:`rlhfkit.models.head_logprobs.head_logprobs`).
    """
    check_response_start(input_ids.shape[1], response_start)
    prefix = prompt_prefix(model, input_ids, attention_mask, response_start)
    if not torch.is_grad_enabled() and input_ids.numel() and logits_are_head_output(model, input_ids):
        logprobs, entropy, _ = frozen_logprobs(model, input_ids, attention_mask, response_start, prefix, temperature,
                                               with_entropy)
        return (logprobs, entropy) if with_entropy else logprobs  # type: ignore[return-value]
    head = training_head(model, input_ids, int(attention_mask[:, response_start:].sum()))
    parts = []
    for rows in row_slices(model, input_ids, response_start) or [slice(None)]:
        ids, attn = input_ids[rows], attention_mask[rows]
        logits, mask, _ = response_logits(model, ids, attn, response_start,
                                          None if prefix is None else prefix.for_rows(rows), defer_head=head is not None)
        tokens = ids[:, response_start:][mask]
        if head is not None:  # a training forward whose (n, V) logits would be large: the head runs in chunks
            logprobs, entropy = head_logprobs(logits, head, tokens, temperature, with_entropy)
        else:
            logprobs, entropy = fused_logprobs(logits, tokens, temperature, with_entropy, consume=True)
        parts.append((unpack(logprobs, mask), None if entropy is None else unpack(entropy, mask)))
    logprobs = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    if not with_entropy:
        return logprobs
    return logprobs, torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]  # type: ignore[misc]


def frozen_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int,
                    prefix: SharedPrefix | None = None, temperature: float = 1.0, with_entropy: bool = False,
                    value_head: nn.Module | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """No-grad (b, R) log-probs, entropy (or None) and values (or None) of a model whose logits are its head's
    output: the trunk over as many rows at once as :func:`trunk_row_slices` allows, then the LM head and fused
    log-softmax over chunks of the kept positions, so the (n, V) logits never exist at once
    (:data:`FROZEN_LOGIT_ELEMENTS`); ``value_head`` (a value head on the trunk) reads the same hidden states."""
    head = output_head(model)
    assert head is not None
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if not isinstance(vocab, int):
        vocab = int(head.weight.shape[0])
    step = frozen_chunk_rows(1, vocab, input_ids.device)
    parts: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = []
    for rows in trunk_row_slices(model, input_ids) or [slice(None)]:
        ids, attn = input_ids[rows], attention_mask[rows]
        hidden, mask, _ = response_logits(model, ids, attn, response_start,
                                          None if prefix is None else prefix.for_rows(rows), defer_head=True)
        tokens = ids[:, response_start:][mask]
        logprobs = torch.zeros(tokens.shape[0], dtype=torch.float32, device=hidden.device)
        entropy = torch.zeros_like(logprobs) if with_entropy else None
        for start in range(0, tokens.shape[0], step):
            part = slice(start, start + step)
            chunk_logprobs, chunk_entropy = fused_logprobs(head(hidden[part]), tokens[part], temperature, with_entropy,
                                                           consume=True)
            logprobs[part] = chunk_logprobs
            if entropy is not None and chunk_entropy is not None:
                entropy[part] = chunk_entropy
        values = None if value_head is None else unpack(value_head(hidden), mask)
        parts.append((unpack(logprobs, mask), None if entropy is None else unpack(entropy, mask), values))
    if len(parts) == 1:
        return parts[0]
    return tuple(None if parts[0][i] is None else torch.cat([p[i] for p in parts])  # type: ignore[return-value,misc]
                 for i in range(3))
