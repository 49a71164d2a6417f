"""Model forwards the trainers need, aligned to response tokens: log-probs, entropy, values.

Shapes: ``input_ids``/``attention_mask`` (b, P + R) = left-padded prompt + right-padded response;
outputs are (b, R), position t scoring response token t (values: V of the state before it).
"""

from __future__ import annotations

import torch
from torch import nn

from rlhfkit.models.value import CriticModel, PolicyWithValueHead
from rlhfkit.models.head_rows import logits_are_head_output
from rlhfkit.models.head_logprobs import head_logprobs, training_head
from rlhfkit.rl.logprobs import (check_response_start, frozen_logprobs, fused_logprobs, prompt_prefix,
                                 response_positions, row_slices, token_logprobs, unpack)


def policy_forward(policy: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   response_start: int, temperature: float, with_entropy: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(logprobs, entropy or None, values or None), each (b, R) and 0 where the response mask is 0,
    from ONE forward of the policy.

    Values come along for free when the policy carries a value head on its trunk; both heads then
    run only at the positions predicting real response tokens. Without gradients a value-head policy runs as
    :func:`rlhfkit.rl.logprobs.frozen_logprobs` (the trunk once, rows sharing a prompt run it once, the LM head in
    chunks of positions) where its logits are its head's output, else in row chunks
    (:func:`rlhfkit.rl.logprobs.row_slices`), with the same per-row results.
    """
    if (isinstance(policy, PolicyWithValueHead) and not torch.is_grad_enabled() and input_ids.numel()
            and logits_are_head_output(policy.policy, input_ids)):
        check_response_start(input_ids.shape[1], response_start)
        prefix = prompt_prefix(policy.policy, input_ids, attention_mask, response_start)
        return frozen_logprobs(policy.policy, input_ids, attention_mask, response_start, prefix, temperature,
                               with_entropy, policy.value_head)
    chunks = row_slices(policy, input_ids, response_start) if isinstance(policy, PolicyWithValueHead) else None
    if chunks is not None:
        parts = [policy_forward(policy, input_ids[rows], attention_mask[rows], response_start, temperature,
                                with_entropy) for rows in chunks]
        return tuple(None if parts[0][i] is None else torch.cat([p[i] for p in parts])  # type: ignore[return-value]
                     for i in range(3))
    if isinstance(policy, PolicyWithValueHead):
        check_response_start(input_ids.shape[1], response_start)
        num_response = input_ids.shape[1] - response_start
        keep = response_positions(attention_mask, response_start)
        head = training_head(policy.policy, input_ids, int(keep.sum()))
        out = policy(input_ids, attention_mask, logits_to_keep=num_response + 1, keep=keep, defer_head=head is not None)
        mask = keep[:, response_start - 1:-1]
        tokens = input_ids[:, response_start:][mask]
        if head is not None and out.hidden is not None:  # large (n, V) logits: the LM head runs in chunks
            logprobs, entropy = head_logprobs(out.hidden, head, tokens, temperature, with_entropy)
        else:
            logprobs, entropy = fused_logprobs(out.logits, tokens, temperature, with_entropy, consume=True)
        return (unpack(logprobs, mask), unpack(entropy, mask) if entropy is not None else None,
                unpack(out.values, mask))
    result = token_logprobs(policy, input_ids, attention_mask, response_start, temperature, with_entropy)
    if with_entropy:
        logprobs, entropy = result
        return logprobs, entropy, None
    return result, None, None


def critic_forward(critic: CriticModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   response_start: int) -> torch.Tensor:
    """Values (b, R) of a separate critic: V at the position that predicts each response token."""
    values = critic(input_ids, attention_mask)
    return values[:, response_start - 1:-1]


def trim_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor,
               response_start: int) -> tuple[slice, slice, int]:
    """Column slices that drop all-pad columns: (sequence cols, response cols, new response_start).

    Left-padding columns no row uses and response columns past the longest response carry no
    information; cutting them shrinks every forward and backward of a mini-batch.
    """
    prompt_used = attention_mask[:, :response_start].any(0).nonzero()
    first = int(prompt_used[0]) if prompt_used.numel() else response_start - 1
    first = min(first, response_start - 1)
    length = int(response_mask.sum(1).max()) if response_mask.numel() else 0
    length = max(length, 1)
    return slice(first, response_start + length), slice(0, length), response_start - first
