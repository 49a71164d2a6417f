"""From raw answers of every campaign so far to weighted preference records and annotator reliability.

Records come from ``rlhfkit.feedback.aggregate.aggregate_records`` (majority vote or Dawid-Skene
reliability EM, weight = posterior). Reliability per annotator is the two-coin Dawid-Skene
accuracy over all pairwise answers of the run (Dawid & Skene 1979), so a spammer's weight falls
as their answers pile up; with a gold reward, each annotator's agreement with it is reported
beside the estimate (``true_accuracy``) to show how well the estimate tracks the truth.
With ``feedback.kind: critique`` the records are instead the encoded critiques (:func:`critique_records`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlhfkit.feedback.aggregate import Vote, aggregate_records, dawid_skene

logger = logging.getLogger(__name__)

GoldFn = Callable[[Sequence[str], Sequence[str]], Sequence[float] | None]


def pairwise_votes(rows: Sequence[Mapping[str, Any]]) -> list[Vote]:
    """One vote per non-skip, non-tie pairwise answer: label 0 = the task's first sample won."""
    votes = []
    for row in rows:
        if row.get("kind") != "pairwise" or row.get("is_gold"):
            continue
        winner = (row.get("resolved") or {}).get("winner")
        ids = [int(s["id"]) for s in row["samples"]]
        if winner not in ids:
            continue
        displayed = row.get("displayed") or ids
        votes.append(Vote(int(row["task_id"]), str(row["annotator"]), ids.index(winner),
                          flipped=int(displayed[0]) != ids[0]))
    return votes


def gold_agreement(rows: Sequence[Mapping[str, Any]], gold: GoldFn) -> dict[str, tuple[int, int]]:
    """(agreeing, counted) per annotator: answers that pick the response with the higher gold reward.

    Pairs whose gold rewards are equal are not counted (no right answer).
    """
    items = [r for r in rows if r.get("kind") == "pairwise" and (r.get("resolved") or {}).get("winner") not in (None, "tie")]
    texts = [(r["prompt"], s["text"]) for r in items for s in r["samples"]]
    scores = gold([p for p, _ in texts], [t for _, t in texts]) if texts else []
    if scores is None:
        return {}
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for k, row in enumerate(items):
        first, second = scores[2 * k], scores[2 * k + 1]
        if first == second:
            continue
        better = int(row["samples"][0]["id"]) if first > second else int(row["samples"][1]["id"])
        entry = tally[str(row["annotator"])]
        entry[0] += int(row["resolved"]["winner"] == better)
        entry[1] += 1
    return {name: (agree, n) for name, (agree, n) in tally.items()}


def annotator_reliability(rows: Sequence[Mapping[str, Any]], gold: GoldFn | None = None) -> list[dict[str, Any]]:
    """``[{"annotator", "reliability", "n", "true_accuracy"?}]`` sorted by name (run_layout.md format)."""
    votes = pairwise_votes(rows)
    if not votes:
        return []
    result = dawid_skene(votes, model="two-coin", fit_class_prior=False)
    truth = gold_agreement(rows, gold) if gold is not None else {}
    out = []
    for name in sorted(result.annotators):
        estimate = result.annotators[name]
        entry: dict[str, Any] = {"annotator": name, "reliability": estimate.accuracy, "n": estimate.n_votes}
        if name in truth and truth[name][1] > 0:
            entry["true_accuracy"] = truth[name][0] / truth[name][1]
        out.append(entry)
    return out


def aggregate_feedback(rows: Sequence[Mapping[str, Any]], method: str) -> list[dict[str, Any]]:
    """One weighted preference record per answered task (PLAN.md JSONL shape), identical pairs dropped.

    Stored answers that would not make a valid record (a non-finite or out-of-range number) are left out
    with a warning naming them, so one bad answer cannot stop every later round's reward training.
    """
    from rlhfkit.feedback.reports import usable_rows

    skipped: list[str] = []
    rows = usable_rows([dict(row) for row in rows], skipped)
    for line in skipped:
        logger.warning("feedback left out of aggregation: %s", line)
    records = aggregate_records(rows, method=method)  # type: ignore[arg-type]
    return [r for r in records if r.get("kind") != "pairwise" or r["chosen"] != r["rejected"]]


@dataclass
class CritiqueRecords:
    """Rating records encoded from critiques alone, and what the encoding kept and dropped."""

    records: list[dict[str, Any]]
    stats: dict[str, float]
    lines: list[str]


def critique_records(rows: Sequence[Mapping[str, Any]], encoder: str, min_confidence: float = 0.0,
                     seed: int = 0) -> CritiqueRecords:
    """One rating record on [-1, 1] per critique, weight = the encoder's confidence (critique-only mode).

    The answers' numeric ratings never become records: only the critique text carries the signal
    (a ``learned`` encoder is fitted on the critiques that came with a rating, as in ``encode-critiques``).
    """
    from rlhfkit.critiques.base import CritiqueError, items_from_rows
    from rlhfkit.critiques.records import encode_items, load_encoder
    from rlhfkit.data.records import record_to_dict

    items = items_from_rows(rows)
    if not items:
        return CritiqueRecords([], {"feedback/critiques": 0.0}, [])
    try:
        model, fit_line = load_encoder(encoder, items, seed)
        outcome = encode_items(items, model, min_confidence, source="loop critiques")
    except CritiqueError as exc:
        raise ValueError(f"feedback.critique_encoder {encoder!r}: {exc}") from exc
    weights = [r.weight for r in outcome.records]
    stats = {"feedback/critiques": float(len(items)), "feedback/critique_records": float(len(outcome.records)),
             "feedback/critique_mean_confidence": sum(weights) / len(weights) if weights else 0.0}
    lines = [line for line in (fit_line, *outcome.report.lines()) if line]
    return CritiqueRecords([record_to_dict(r) for r in outcome.records], stats, lines)
