"""Per-token log-probabilities (and entropy) of a response under a causal LM, from one forward pass.

Positions follow what ``transformers`` ``generate`` uses for left-padded batches
(``position_ids = cumsum(mask) - 1``, 0 on padding), so a forward pass over a sampled rollout
reproduces the sampler's log-probs. Only the response positions' logits are computed
(``logits_to_keep``) and log-softmax is never materialized: ``log p(y) = z_y/T - logsumexp(z/T)``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from rlhfkit.models.positions import position_ids_from_mask


def _gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """(b, R, V) logits, (b, R) tokens -> (b, R) float32 ``log softmax(logits / T)[token]``."""
    scaled = logits.float() / temperature
    picked = scaled.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(scaled, dim=-1)


def _entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(b, R, V) logits -> (b, R) float32 entropy ``H = logsumexp(z) - sum softmax(z) * z`` with z = logits / T."""
    scaled = logits.float() / temperature
    return torch.logsumexp(scaled, dim=-1) - (torch.softmax(scaled, dim=-1) * scaled).sum(-1)


def selective_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0,
                       with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (b, R) of ``tokens`` (b, R) under ``softmax(logits / T)`` for logits (b, R, V), plus entropy.

    Half-precision logits are upcast one row at a time, so peak extra memory is one (R, V) float32 row.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.dtype == torch.float32:
        logprobs = _gather_logprobs(logits, tokens, temperature)
        entropy = _entropy(logits, temperature) if with_entropy else None
        return logprobs, entropy
    rows = [_gather_logprobs(row, tok, temperature) for row, tok in zip(logits, tokens)]
    entropy_rows = [_entropy(row, temperature) for row in logits] if with_entropy else None
    return torch.stack(rows), (torch.stack(entropy_rows) if entropy_rows is not None else None)


def forward_parameters(model: nn.Module) -> set[str]:
    """Names accepted by the forward of ``model`` (looking through peft wrappers to the base model)."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(target.forward).parameters)


def response_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    response_start: int, **forward_kwargs: Any) -> tuple[torch.Tensor, Any]:
    """Logits (b, R, V) predicting ``input_ids[:, response_start:]`` and the raw model output.

    Runs one forward over the whole sequence with generate-compatible position ids, keeping only
    the last R + 1 positions' logits when the model supports ``logits_to_keep``.
    """
    total = input_ids.shape[1]
    if not 0 < response_start < total:
        raise ValueError(f"response_start must be in [1, {total - 1}] for sequences of length {total}, got {response_start}")
    num_response = total - response_start
    kwargs: dict[str, Any] = {"position_ids": position_ids_from_mask(attention_mask), "use_cache": False, **forward_kwargs}
    keep = "logits_to_keep" in forward_parameters(model)
    if keep:
        kwargs["logits_to_keep"] = num_response + 1
    output = model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    logits = output.logits[:, :-1] if keep else output.logits[:, response_start - 1:-1]
    return logits, output


def token_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int,
                   temperature: float = 1.0, with_entropy: bool = False
                   ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (b, R) float32 of ``input_ids[:, response_start:]`` under ``softmax(logits / T)``.

    ``input_ids``/``attention_mask`` are (b, P + R): left-padded prompts then right-padded responses
    (``Rollout.sequences`` / ``Rollout.attention_mask``). Values at masked response positions are
    meaningless; callers mask them. With ``with_entropy`` returns ``(logprobs, entropy)``, both (b, R).
    Differentiable: call under ``torch.no_grad()`` for old/reference log-probs.
    """
    logits, _ = response_logits(model, input_ids, attention_mask, response_start)
    logprobs, entropy = selective_logprobs(logits, input_ids[:, response_start:], temperature, with_entropy)
    if with_entropy:
        assert entropy is not None
        return logprobs, entropy
    return logprobs
