"""Weighted feedback records (the PLAN.md JSONL shape that `train-rm` reads) from aggregated posteriors.

Records are built as :mod:`rlhfkit.data.records` types and serialised by ``record_to_dict``: one
definition of the format for the exports, the readers and the trainers.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rlhfkit.data.records import Comparison, Label, record_to_dict
from rlhfkit.feedback.aggregate.labels import Vote
from rlhfkit.utils.atomic_file import atomic_write_lines


@dataclass(frozen=True)
class PairItem:
    """The texts behind a pairwise item, in the canonical (a, b) order that vote labels refer to."""

    prompt: str
    response_a: str
    response_b: str


@dataclass(frozen=True)
class LabelItem:
    """The texts behind a good/bad item."""

    prompt: str
    response: str


def common_fields(annotator: str | None, weight: float) -> dict:
    """The fields every feedback record shares (keyword arguments of the record types)."""
    return {"annotator": annotator, "timestamp": None, "weight": float(weight)}


def pairwise_records(
    items: Mapping[Hashable, PairItem],
    prob_a: Mapping[Hashable, float],
    *,
    mode: Literal["hard", "soft"] = "hard",
    min_confidence: float = 0.5,
    margins: Mapping[Hashable, float] | None = None,
    annotator: str | None = None,
) -> list[dict]:
    """Pairwise feedback records from P("a" preferred) per item, weighted by the posterior.

    "hard": one record per item with the likelier response as chosen and weight max(p, 1 - p); items with
    p == 0.5 exactly become tie records (weight 1); items below `min_confidence` are dropped.
    "soft": two records per item (a over b with weight p, b over a with weight 1 - p), whose weighted
    Bradley-Terry loss equals the loss against the soft label p. Zero-weight records are dropped.
    `margins` (e.g. crowd-BT score differences s_a - s_b) are stored as |margin| when given.
    """
    records: list[dict] = []
    for key, p in prob_a.items():
        if key not in items:
            raise ValueError(f"pairwise_records: no texts for item {key!r}")
        item = items[key]
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"pairwise_records: probability {p} for item {key!r} is outside [0, 1]")
        margin = abs(float(margins[key])) if margins is not None and key in margins else None
        if mode == "soft":
            both = ((item.response_a, item.response_b, p), (item.response_b, item.response_a, 1 - p))
            for chosen, rejected, wt in both:
                if wt > 0:
                    records.append(record_to_dict(Comparison(item.prompt, chosen, rejected, margin=margin, tie=False,
                                                             **common_fields(annotator, wt))))
            continue
        if mode != "hard":
            raise ValueError(f"pairwise_records: unknown mode {mode!r}; use hard or soft")
        if p == 0.5:
            records.append(record_to_dict(Comparison(item.prompt, item.response_a, item.response_b, margin=0.0, tie=True,
                                                     **common_fields(annotator, 1.0))))
            continue
        confidence = max(p, 1.0 - p)
        if confidence < min_confidence:
            continue
        chosen, rejected = (item.response_a, item.response_b) if p > 0.5 else (item.response_b, item.response_a)
        records.append(record_to_dict(Comparison(item.prompt, chosen, rejected, margin=margin, tie=False,
                                                 **common_fields(annotator, confidence))))
    return records


def label_records(
    items: Mapping[Hashable, LabelItem],
    prob_good: Mapping[Hashable, float],
    *,
    min_confidence: float = 0.5,
    annotator: str | None = None,
) -> list[dict]:
    """Good/bad label records: label = P(good) > 0.5, weight = max(p, 1 - p); p == 0.5 items are dropped."""
    records = []
    for key, p in prob_good.items():
        if key not in items:
            raise ValueError(f"label_records: no texts for item {key!r}")
        p = float(p)
        confidence = max(p, 1.0 - p)
        if p == 0.5 or confidence < min_confidence:
            continue
        records.append(record_to_dict(Label(items[key].prompt, items[key].response, p > 0.5,
                                            **common_fields(annotator, confidence))))
    return records


def annotation_records(
    votes: Iterable[Vote],
    items: Mapping[Hashable, PairItem],
    annotator_weights: Mapping[str, float],
) -> list[dict]:
    """One pairwise record per raw vote, weighted by its annotator's reliability weight (<= 0 dropped)."""
    records = []
    for vote in votes:
        wt = float(annotator_weights.get(vote.annotator, 0.0)) * vote.weight
        if wt <= 0:
            continue
        item = items[vote.item]
        chosen, rejected = (item.response_a, item.response_b) if vote.label == 0 else (item.response_b, item.response_a)
        records.append(record_to_dict(Comparison(item.prompt, chosen, rejected, margin=None, tie=False,
                                                 **common_fields(vote.annotator, wt))))
    return records


def write_jsonl(records: Iterable[dict], path: str | Path) -> int:
    """Write records one JSON object a line (atomically via a private temp file); returns the count."""
    return atomic_write_lines(path, (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n" for record in records))
