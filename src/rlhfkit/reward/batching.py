"""Tokenized feedback records and batches that score every response of a record in one forward pass.

A micro-batch of records of any kinds becomes one right-padded ``(N, T)`` tensor holding every
response (a pair's chosen and rejected side by side), padded only to the longest sequence in that
batch; index tensors say which rows belong to which record. Truncation that would erase the
difference between responses a record compares is reported and the record skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rlhfkit.data.records import Comparison, FeedbackRecord, Label, Ranking, Rating, ValidationReport, responses_of
from rlhfkit.models.chat import Conversation, chat_template, plain_response_text, templated_pair
from rlhfkit.models.reward_model import pad_batch, truncate_pair_span

TRUNCATED_AWAY = "difference removed by truncation"


@dataclass
class EncodedRecord:
    """One record as token-id sequences plus what its loss needs.

    ``target`` is the normalized rating (rating), 1/0 (label) or unused; ``ranks`` are 1 = best
    (a pair is chosen=1, rejected=2); ``head_weights`` (H,) are per-head bootstrap weights;
    ``response_starts`` say where each sequence's response begins (its kept prompt's length);
    ``likelihoods`` are a frozen LM's scores of each response (:func:`attach_likelihoods`), when the head reads them.
    """

    kind: str
    sequences: list[list[int]]
    weight: float = 1.0
    ranks: tuple[int, ...] = ()
    margin: float = 0.0
    tie: bool = False
    target: float = 0.0
    level: int = 0
    scale_key: str = ""
    head_weights: tuple[float, ...] = (1.0,)
    index: int = 0
    response_starts: list[int] = field(default_factory=list)
    likelihoods: list[float] = field(default_factory=list)

    @property
    def length(self) -> int:
        """Longest sequence of the record (what its batch is padded to)."""
        return max(len(s) for s in self.sequences)


def scale_key(scale: tuple[float, float]) -> str:
    """A stable name for a rating scale, used to key ordinal thresholds: ``"1:5"``."""
    return f"{scale[0]:g}:{scale[1]:g}"


def ordinal_levels(scale: tuple[float, float]) -> int:
    """Number of ordered levels of an integer-step scale (5 for 1..5); raises for non-integer ends."""
    low, high = scale
    if low != int(low) or high != int(high):
        raise ValueError(f"the ordinal rating loss needs an integer scale, got [{low:g}, {high:g}]")
    return int(high - low) + 1


def encode_records(records: Sequence[FeedbackRecord], tokenizer: Any, *, max_length: int, eos_id: int | None,
                   min_prompt_tokens: int = 64, ordinal: bool = False, numbers: Sequence[int] | None = None,
                   source: str = "records") -> tuple[list[EncodedRecord], ValidationReport]:
    """Tokenize records (prompt and responses separately), truncate, and drop pairs made identical.

    Conversational records go through the tokenizer's chat template when it has one
    (:func:`~rlhfkit.models.chat.templated_pair`), as the reward model scores conversations later.

    Returns the encoded records (``index`` = position in ``records``) and a report with reason
    ``difference removed by truncation`` (skipped, by record number from ``numbers``) and a note
    counting records that were truncated but kept.
    """
    report = ValidationReport(source=f"{source} (truncated to {max_length} tokens)", total=len(records))
    templated = chat_template(tokenizer) is not None
    plain = [r for r in records if not (templated and isinstance(r.prompt, Conversation))]
    prompts = sorted({r.prompt for r in plain})
    prompt_ids = dict(zip(prompts, tokenizer(prompts, add_special_tokens=False, verbose=False)["input_ids"])) if prompts else {}
    texts = sorted({plain_response_text(r.prompt, t) for r in plain for t in responses_of(r)})
    text_ids = dict(zip(texts, tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"])) if texts else {}

    def piece(prompt: str, response: str) -> tuple[list[int], bool, int]:
        if templated and isinstance(prompt, Conversation):
            head, body, had_eos = templated_pair(tokenizer, prompt, response)
            end = eos_id if eos_id is not None or not had_eos else tokenizer.eos_token_id
            return truncate_pair_span(head, body, max_length, end, min_prompt_tokens)
        return truncate_pair_span(prompt_ids[prompt], text_ids[plain_response_text(prompt, response)], max_length,
                                  eos_id, min_prompt_tokens)

    encoded: list[EncodedRecord] = []
    truncated_kept = 0
    for index, record in enumerate(records):
        pieces = [piece(record.prompt, t) for t in responses_of(record)]
        sequences = [ids for ids, _, _ in pieces]
        cut = any(flag for _, flag, _ in pieces)
        if cut and _difference_lost(record, sequences):
            report.add(TRUNCATED_AWAY, numbers[index] if numbers is not None else index + 1,
                       "responses differ only after the token limit")
            continue
        truncated_kept += int(cut)
        item = _encoded(record, sequences, index, ordinal)
        item.response_starts = [start for _, _, start in pieces]
        encoded.append(item)
    report.valid = len(encoded)
    report.notes["truncated but kept"] = truncated_kept
    return encoded, report


def attach_likelihoods(encoded: Sequence[EncodedRecord], records: Sequence[FeedbackRecord],
                       score: Callable[[list[Any], list[Any]], torch.Tensor]) -> None:
    """Give each encoded record its responses' scores by ``score(prompts, responses)`` (e.g. a frozen LM's
    mean log-probability), computed once for all records, in the order of its sequences."""
    prompts, responses, owners = [], [], []
    for item in encoded:
        record = records[item.index]
        for response in responses_of(record):
            prompts.append(record.prompt)
            responses.append(response)
            owners.append(item)
    values = score(prompts, responses).tolist() if prompts else []
    for item in encoded:
        item.likelihoods = []
    for item, value in zip(owners, values):
        item.likelihoods.append(float(value))


def _difference_lost(record: FeedbackRecord, sequences: list[list[int]]) -> bool:
    if isinstance(record, Comparison):
        return sequences[0] == sequences[1]
    if isinstance(record, Ranking):
        seen: dict[tuple[int, ...], int] = {}
        for seq, rank in zip(sequences, record.ranks):
            key = tuple(seq)
            if key in seen and seen[key] != rank:
                return True
            seen[key] = rank
    return False


def _encoded(record: FeedbackRecord, sequences: list[list[int]], index: int, ordinal: bool) -> EncodedRecord:
    if isinstance(record, Comparison):
        return EncodedRecord("pairwise", sequences, record.weight, ranks=(1, 2),
                             margin=record.margin or 0.0, tie=record.tie, index=index)
    if isinstance(record, Ranking):
        return EncodedRecord("ranking", sequences, record.weight, ranks=record.ranks, index=index)
    if isinstance(record, Rating):
        level = 0
        if ordinal:
            ordinal_levels(record.scale)
            level = int(math.floor(record.rating - record.scale[0] + 0.5))
        return EncodedRecord("rating", sequences, record.weight, target=record.normalized, level=level,
                             scale_key=scale_key(record.scale), index=index)
    if isinstance(record, Label):
        return EncodedRecord("label", sequences, record.weight, target=float(record.label), index=index)
    raise TypeError(f"unknown record type {type(record).__name__}")


def assign_bootstrap_weights(encoded: Sequence[EncodedRecord], num_heads: int, seed: int,
                             groups: Sequence[Hashable] | None = None) -> None:
    """Give each record Poisson(1) weights per head (bootstrap ensembles, Osband et al. 2016).

    With ``groups`` (one key per record, e.g. its prompt) the draw is per group and shared by all the
    group's records: a cluster bootstrap, which resamples prompts as an evaluation on unseen prompts does.
    """
    if groups is not None and len(groups) != len(encoded):
        raise ValueError(f"bootstrap groups: {len(groups)} keys for {len(encoded)} records")
    keys: Sequence[Hashable] = range(len(encoded)) if groups is None else groups
    slot = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    generator = torch.Generator().manual_seed(seed)
    draws = torch.poisson(torch.ones(len(slot), num_heads), generator=generator).tolist()
    for record, key in zip(encoded, keys):
        record.head_weights = tuple(draws[slot[key]])


def epoch_batches(encoded: Sequence[EncodedRecord], batch_size: int, seed: int, epoch: int,
                  group_by_length: bool = True) -> list[list[int]]:
    """Record indices per micro-batch for one epoch, a deterministic function of (seed, epoch).

    With ``group_by_length``, shuffled records are sorted by length inside windows of 50 batches
    and the batches shuffled again, so padding stays small while order stays random.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(encoded), generator=generator).tolist()
    if group_by_length:
        window = batch_size * 50
        order = [i for start in range(0, len(order), window)
                 for i in sorted(order[start:start + window], key=lambda i: encoded[i].length)]
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    if group_by_length:
        permutation = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in permutation]
    return batches


def batches_per_epoch(num_records: int, batch_size: int) -> int:
    """Micro-batches in one epoch (the last one may be short)."""
    return math.ceil(num_records / batch_size)


@dataclass
class Batch:
    """One micro-batch: every response in ``input_ids`` (N, T) and per-kind row indices into it.

    pair_rows (p, 2) chosen/rejected rows; rank_rows (q, k) with -1 padding and rank_values
    (q, k); rating_rows/label_rows (s,). ``*_weights`` are (records, H) record x head weights.
    ``response_start`` (N,) is where each row's response begins; ``likelihood`` (N,) a frozen LM's score of each.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_start: torch.Tensor | None = None
    likelihood: torch.Tensor | None = None
    rows: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    margin: torch.Tensor | None = None
    tie: torch.Tensor | None = None
    rank_values: torch.Tensor | None = None
    rating_target: torch.Tensor | None = None
    rating_level: torch.Tensor | None = None
    rating_scale: list[str] = field(default_factory=list)
    label_target: torch.Tensor | None = None

    @property
    def num_pairs(self) -> int:
        """Comparisons in the batch."""
        return int(self.rows["pairwise"].shape[0]) if "pairwise" in self.rows else 0

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor to ``device`` (non-blocking where possible)."""
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)
        return Batch(move(self.input_ids), move(self.attention_mask), move(self.response_start), move(self.likelihood),
                     {k: move(v) for k, v in self.rows.items()},
                     {k: move(v) for k, v in self.weights.items()}, move(self.margin), move(self.tie),
                     move(self.rank_values), move(self.rating_target), move(self.rating_level),
                     list(self.rating_scale), move(self.label_target))


def collate(records: Sequence[EncodedRecord], pad_id: int) -> Batch:
    """Stack all responses of ``records`` into one padded batch with per-kind row indices."""
    sequences: list[list[int]] = []
    starts: list[int] = []
    likelihoods: list[float] = []
    rows: dict[str, list] = {"pairwise": [], "ranking": [], "rating": [], "label": []}
    weights: dict[str, list] = {k: [] for k in rows}
    margin, tie, ranks, rating_target, rating_level, rating_scale, label_target = [], [], [], [], [], [], []
    for record in records:
        start = len(sequences)
        sequences.extend(record.sequences)
        starts.extend(record.response_starts or [0] * len(record.sequences))
        likelihoods.extend(record.likelihoods)
        rows[record.kind].append(list(range(start, start + len(record.sequences))))
        weights[record.kind].append([record.weight * h for h in record.head_weights])
        if record.kind == "pairwise":
            margin.append(record.margin)
            tie.append(record.tie)
        elif record.kind == "ranking":
            ranks.append(list(record.ranks))
        elif record.kind == "rating":
            rating_target.append(record.target)
            rating_level.append(record.level)
            rating_scale.append(record.scale_key)
        else:
            label_target.append(record.target)
    input_ids, attention_mask = pad_batch(sequences, pad_id)
    batch = Batch(input_ids, attention_mask, torch.tensor(starts, dtype=torch.long),
                  torch.tensor(likelihoods, dtype=torch.float32) if len(likelihoods) == len(sequences) else None)
    for kind, kind_rows in rows.items():
        if not kind_rows:
            continue
        if kind == "ranking":
            width = max(len(r) for r in kind_rows)
            batch.rows[kind] = torch.tensor([r + [-1] * (width - len(r)) for r in kind_rows], dtype=torch.long)
            batch.rank_values = torch.tensor([r + [0] * (width - len(r)) for r in ranks], dtype=torch.long)
        elif kind == "pairwise":
            batch.rows[kind] = torch.tensor(kind_rows, dtype=torch.long)
        else:
            batch.rows[kind] = torch.tensor([r[0] for r in kind_rows], dtype=torch.long)
        batch.weights[kind] = torch.tensor(weights[kind], dtype=torch.float32)
    if margin:
        batch.margin = torch.tensor(margin, dtype=torch.float32)
        batch.tie = torch.tensor(tie, dtype=torch.bool)
    if rating_target:
        batch.rating_target = torch.tensor(rating_target, dtype=torch.float32)
        batch.rating_level = torch.tensor(rating_level, dtype=torch.long)
        batch.rating_scale = rating_scale
    if label_target:
        batch.label_target = torch.tensor(label_target, dtype=torch.float32)
    return batch


def step_denominators(records: Sequence[EncodedRecord], num_heads: int) -> dict[str, torch.Tensor]:
    """Σ record weight x head weight per kind over a whole optimizer step: {kind: (H,)}."""
    totals: dict[str, torch.Tensor] = {}
    for record in records:
        row = torch.tensor([record.weight * h for h in record.head_weights], dtype=torch.float64)
        totals[record.kind] = totals.get(record.kind, torch.zeros(num_heads, dtype=torch.float64)) + row
    return totals
