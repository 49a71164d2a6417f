"""Preference pairs for DPO: from feedback records to padded token tensors, encoded once.

Layout matches a rollout so the same log-prob code scores it: prompts left-padded to P,
responses right-padded to R (EOS appended), ``response_start = P``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.data.records import Comparison, FeedbackRecord, Ranking
from rlhfkit.models.chat import pair_ids


@dataclass(frozen=True)
class Pair:
    """``chosen`` preferred to ``rejected`` for ``prompt``."""

    prompt: str
    chosen: str
    rejected: str
    weight: float = 1.0


def pairs_from_records(records: Sequence[FeedbackRecord]) -> tuple[list[Pair], int]:
    """Strict preferences as pairs: comparisons without ties, and every better/worse pair of a ranking.

    Returns (pairs, number of records that carry no pairwise preference: ties, ratings, labels).
    """
    pairs: list[Pair] = []
    unused = 0
    for record in records:
        if isinstance(record, Comparison) and not record.tie:
            pairs.append(Pair(record.prompt, record.chosen, record.rejected, record.weight))
        elif isinstance(record, Ranking):
            ordered = sorted(zip(record.ranks, record.responses))
            found = [Pair(record.prompt, better, worse, record.weight)
                     for i, (rank_a, better) in enumerate(ordered) for rank_b, worse in ordered[i + 1:] if rank_a < rank_b]
            pairs.extend(found)
            unused += not found
        else:
            unused += 1
    return pairs, unused


@dataclass(frozen=True)
class PreferenceData:
    """The strict preference pairs of a feedback file, its validation report and how many records DPO cannot use."""

    pairs: list[Pair]
    report: Any
    unused: int


def read_preference_pairs(path: str) -> PreferenceData:
    """Read and validate a feedback file and keep its strict preferences; a file without any is an error."""
    from rlhfkit.data.preference_io import read_feedback
    from rlhfkit.data.records import require_valid

    feedback = read_feedback(path)
    pairs, unused = pairs_from_records(require_valid(feedback.records, feedback.report))
    if not pairs:
        raise ValueError(f"{path}: no strict pairwise preferences (ties, ratings and labels are not used by DPO)")
    return PreferenceData(pairs, feedback.report, unused)


def dpo_total_steps(steps: int, epochs: int, batch_size: int, n_pairs: int) -> int:
    """Optimizer steps of a DPO run: ``steps`` when set, else ``epochs`` passes of ``batch_size`` over the pairs."""
    return steps or epochs * math.ceil(n_pairs / batch_size)


@dataclass
class EncodedPairs:
    """All pairs as tensors: prompts (N, P) left-padded; chosen/rejected (N, R) right-padded."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    chosen_ids: torch.Tensor
    chosen_mask: torch.Tensor
    rejected_ids: torch.Tensor
    rejected_mask: torch.Tensor
    weights: torch.Tensor

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def stacked(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Chosen rows then rejected rows of pairs ``idx`` as one (2m, P + R) batch, trimmed of
        all-pad columns: (input_ids, attention_mask, response_mask (2m, R'), response_start)."""
        prompt_ids = self.prompt_ids[idx].repeat(2, 1)
        prompt_mask = self.prompt_mask[idx].repeat(2, 1)
        response_ids = torch.cat([self.chosen_ids[idx], self.rejected_ids[idx]])
        response_mask = torch.cat([self.chosen_mask[idx], self.rejected_mask[idx]])
        used = prompt_mask.any(0).nonzero()
        first = int(used[0]) if used.numel() else prompt_mask.shape[1] - 1
        length = max(int(response_mask.sum(1).max()), 1)
        ids = torch.cat([prompt_ids[:, first:], response_ids[:, :length]], dim=1)
        mask = torch.cat([prompt_mask[:, first:], response_mask[:, :length]], dim=1)
        return ids, mask, response_mask[:, :length], prompt_mask.shape[1] - first


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(max(len(r) for r in rows), 1)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            continue
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def encode_pairs(pairs: Sequence[Pair], tokenizer: Any, max_prompt_tokens: int, max_response_tokens: int,
                 append_eos: bool = True) -> EncodedPairs:
    """Tokenize once: prompts keep their last ``max_prompt_tokens`` tokens (BOS when empty),
    responses their first ``max_response_tokens`` tokens, then EOS.

    Conversational pairs go through the tokenizer's chat template (:func:`~rlhfkit.models.chat.pair_ids`):
    the prompt with the generation prompt, the response as the template ends the turn.
    """
    if not pairs:
        raise ValueError("no preference pairs to train on")
    prompt_texts = [p.prompt for p in pairs]
    prompts, chosen, chosen_eos = pair_ids(tokenizer, prompt_texts, [p.chosen for p in pairs], True)
    _, rejected, rejected_eos = pair_ids(tokenizer, prompt_texts, [p.rejected for p in pairs], True)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prompts = [ids[-max_prompt_tokens:] if ids else [bos] for ids in prompts]

    def ending(templated_eos: bool) -> list[int]:
        wanted = append_eos or templated_eos
        return [tokenizer.eos_token_id] if wanted and tokenizer.eos_token_id is not None else []

    chosen = [ids[:max_response_tokens] + ending(e) for ids, e in zip(chosen, chosen_eos)]
    rejected = [ids[:max_response_tokens] + ending(e) for ids, e in zip(rejected, rejected_eos)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompt_ids, prompt_mask = _pad(prompts, pad, left=True)
    chosen_ids, chosen_mask = _pad(chosen, pad, left=False)
    rejected_ids, rejected_mask = _pad(rejected, pad, left=False)
    width = max(chosen_ids.shape[1], rejected_ids.shape[1])

    def widen(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    chosen_ids, rejected_ids = widen(chosen_ids, pad), widen(rejected_ids, pad)
    chosen_mask, rejected_mask = widen(chosen_mask, 0), widen(rejected_mask, 0)
    weights = torch.tensor([p.weight for p in pairs], dtype=torch.float32)
    return EncodedPairs(prompt_ids, prompt_mask, chosen_ids, chosen_mask, rejected_ids, rejected_mask, weights)
