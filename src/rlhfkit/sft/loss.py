"""The SFT objective as a pure function: summed next-token negative log-likelihood on target tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
