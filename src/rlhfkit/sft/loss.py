"""The SFT objective as a pure function: summed next-token negative log-likelihood on target tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rlhfkit.models.head_rows import lm_head_rows
from rlhfkit.models.head_logprobs import head_logprobs, training_head
from rlhfkit.rl.logprobs import fused_logprobs

IGNORE_INDEX = -100


def completion_nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over target positions of -log p(label_t | tokens_<t), and the number of such positions.

    logits: (b, T, V), the model output for the input ids; labels: (b, T), aligned with the input
    ids, ``IGNORE_INDEX`` where no loss is wanted. Position t's logits predict token t+1, so the
    sum is ``sum_{t>=1, labels_t != -100} -log softmax(logits_{t-1})[labels_t]``. Returned as a sum
    (not a mean) so that the caller can divide by the token count of the whole global batch:
    then batch 4 x accumulation 1 and batch 1 x accumulation 4 give the same gradient.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                          ignore_index=IGNORE_INDEX, reduction="sum")
    return nll, (shift_labels != IGNORE_INDEX).sum()


def model_nll_sum(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                  inner: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`completion_nll_sum` of ``model``'s forward, with the LM head run only at the positions that predict a
    target token (no (b, T, V) logits at prompt or padding positions), log-softmax and gather fused
    (:func:`rlhfkit.rl.logprobs.fused_logprobs`), and over vocabulary blocks where those positions' logits would be
    large (:func:`rlhfkit.models.head_logprobs.head_logprobs`). ``inner``: the model under a wrapper (DDP) whose head
    the rows are chosen on; ``model`` itself by default."""
    target = labels[:, 1:] != IGNORE_INDEX
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = target  # position t predicts the label at t + 1
    tokens = labels[:, 1:][target]
    scored = inner if inner is not None else model
    head = training_head(scored, input_ids, int(tokens.numel()))
    with lm_head_rows(scored, keep, defer=head is not None) as rows:
        output = model(input_ids=input_ids, attention_mask=attention_mask)
    if head is not None and rows.hidden is not None:
        logprobs, _ = head_logprobs(rows.hidden, head, tokens)
    else:
        logits = output.logits if rows.keep is not None else output.logits[keep]  # an unhooked head: (b, T, V)
        logprobs, _ = fused_logprobs(logits, tokens, consume=True)
    return -logprobs.sum(), target.sum()
