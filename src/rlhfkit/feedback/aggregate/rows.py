"""Aggregate the annotation rows of the feedback API into one weighted record per task.

`aggregate_records` is what `GET /campaigns/{cid}/export?aggregate=majority|reliability` calls.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from rlhfkit.data.records import Ranking, Rating, record_to_dict
from rlhfkit.feedback.aggregate.crowd_bt import Comparison, crowd_bradley_terry, ranking_to_comparisons
from rlhfkit.feedback.aggregate.export import LabelItem, PairItem, common_fields, label_records, pairwise_records
from rlhfkit.feedback.aggregate.labels import ReliabilityModel, Vote, dawid_skene, majority_vote
from rlhfkit.feedback.aggregate.ratings import rating_reliability
from rlhfkit.feedback.edits import edit_pair

AggregateMethod = Literal["majority", "reliability"]


def _row_field(row: Mapping, name: str, index: int) -> Any:
    try:
        return row[name]
    except KeyError:
        raise ValueError(f"annotation row {index} (annotation_id {row.get('annotation_id')!r}): "
                         f"missing field {name!r}") from None


def _is_skip(resolved: Mapping | None) -> bool:
    """Skipped (or unresolved) answers carry no label."""
    return not resolved or bool(resolved.get("skip")) or ("winner" in resolved and resolved["winner"] is None)


def aggregate_records(
    rows: Sequence[Mapping[str, Any]],
    method: AggregateMethod = "majority",
    *,
    model: ReliabilityModel = "two-coin",
) -> list[dict]:
    """Aggregated feedback records (PLAN.md JSONL shape) from the rows of `GET /campaigns/{cid}/annotations`.

    One record per non-gold task with at least one non-skip answer, in task-id order:
    - pairwise: majority (a tie counts half a vote each way; an even split gives a tie record), weight 1;
      reliability: Dawid-Skene EM (`model`, position-aware via the displayed order, gold tasks clamped),
      chosen = likelier response, weight = its posterior probability.
    - binary: the same with good/bad (an even majority split is dropped).
    - rating: majority = mean rating; reliability = precision-weighted mean (`rating_reliability`), weight 1.
    - ranking: majority = Borda (mean position, equal means share a rank); reliability = crowd Bradley-Terry
      scores over all answers' implied pairs (inverted or random rankers get beta <= ~0), weight 1.
    - edit: not votes but one rewrite each, so every edit is its own pairwise record (rewrite chosen over
      the original, its annotator kept, weight 1; ``rlhfkit.feedback.reports.edit_pair``), after its task's
      other records; "no change needed" answers make none.
    Pairs of identical texts are dropped and a ranking lists each distinct text once (at its best rank).
    `annotator` is null and `timestamp` the latest submission of the task.
    """
    if method not in ("majority", "reliability"):
        raise ValueError(f"aggregate_records: unknown method {method!r}; use majority or reliability")
    edits: dict[int, list[dict]] = {}
    for row in rows:
        if row.get("kind") == "edit":
            pair = edit_pair(row)
            if pair is not None:
                edits.setdefault(int(row["task_id"]), []).append(pair)
    tasks = group_tasks([row for row in rows if row.get("kind") != "edit"])
    records: list[dict] = []
    builders = {"pairwise": _pairwise_from_rows, "binary": _binary_from_rows, "rating": _rating_from_rows,
                "ranking": _ranking_from_rows}
    out: dict[int, dict] = {}
    for kind, group in tasks_by_kind(tasks).items():
        out.update(builders[kind](group, method, model))
    for task_id in sorted(set(out) | set(edits)):
        if task_id in out:
            record = out[task_id]
            record["timestamp"] = tasks[task_id]["timestamp"]
            records.append(record)
        records.extend(edits.get(task_id, []))
    return records


KINDS = ("pairwise", "binary", "rating", "ranking")


def group_tasks(rows: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """Non-skip annotation rows grouped by task: {task_id: {kind, prompt, samples, scale, is_gold, gold, rows,
    timestamp}}; a missing field or unknown kind is an error naming the row."""
    tasks: dict[int, dict[str, Any]] = {}
    for index, row in enumerate(rows):
        resolved = _row_field(row, "resolved", index)
        if _is_skip(resolved):
            continue
        task_id = int(_row_field(row, "task_id", index))
        task = tasks.setdefault(task_id, {"kind": _row_field(row, "kind", index),
                                          "prompt": _row_field(row, "prompt", index),
                                          "samples": _row_field(row, "samples", index), "scale": row.get("scale"),
                                          "is_gold": bool(row.get("is_gold")), "gold": row.get("gold"),
                                          "rows": [], "timestamp": None})
        task["rows"].append(row)
        stamp = row.get("submitted_at")
        if stamp is not None and (task["timestamp"] is None or str(stamp) > str(task["timestamp"])):
            task["timestamp"] = stamp
        if task["kind"] not in KINDS:
            raise ValueError(f"annotation row {index}: task {task_id} has unknown kind {task['kind']!r}")
    return tasks


def tasks_by_kind(tasks: Mapping[int, dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """Split grouped tasks by kind, each in task-id order."""
    by_kind: dict[str, dict[int, dict[str, Any]]] = {}
    for task_id in sorted(tasks):
        by_kind.setdefault(tasks[task_id]["kind"], {})[task_id] = tasks[task_id]
    return by_kind


def _sample_texts(task: Mapping) -> tuple[list[int], dict[int, str]]:
    ids = [int(s["id"]) for s in task["samples"]]
    return ids, {int(s["id"]): str(s["text"]) for s in task["samples"]}


def _bad_row(row: Mapping, task_id: int, problem: str) -> ValueError:
    return ValueError(f"aggregate_records: annotation {row.get('annotation_id')} of task {task_id}: {problem}")


def pairwise_votes(tasks: Mapping[int, dict], *, ties_as_half_votes: bool
                   ) -> tuple[list[Vote], dict[Hashable, int], dict[Hashable, PairItem]]:
    """Votes (label 0 = first canonical sample won; `flipped` from the displayed order), gold classes, texts.

    A tie becomes two half votes when `ties_as_half_votes`, else it is left out (Dawid-Skene has no tie class).
    """
    votes: list[Vote] = []
    gold: dict[Hashable, int] = {}
    items: dict[Hashable, PairItem] = {}
    for task_id, task in tasks.items():
        ids, texts = _sample_texts(task)
        if len(ids) != 2:
            raise ValueError(f"aggregate_records: pairwise task {task_id} has {len(ids)} samples")
        items[task_id] = PairItem(task["prompt"], texts[ids[0]], texts[ids[1]])
        if task["is_gold"] and task["gold"] and task["gold"].get("winner") in ids:
            gold[task_id] = ids.index(task["gold"]["winner"])
        for row in task["rows"]:
            winner = row["resolved"].get("winner")
            if winner == "tie":
                if ties_as_half_votes:
                    votes += [Vote(task_id, row["annotator"], 0, 0.5), Vote(task_id, row["annotator"], 1, 0.5)]
                continue
            if winner not in ids:
                raise _bad_row(row, task_id, f"winner {winner!r} is not one of the samples {ids}")
            displayed = row.get("displayed") or ids
            votes.append(Vote(task_id, row["annotator"], ids.index(winner), flipped=int(displayed[0]) != ids[0]))
    return votes, gold, items


def binary_votes(tasks: Mapping[int, dict]) -> tuple[list[Vote], dict[Hashable, int], dict[Hashable, LabelItem]]:
    """Votes (label 1 = good), gold classes and texts of good/bad tasks."""
    votes: list[Vote] = []
    gold: dict[Hashable, int] = {}
    items: dict[Hashable, LabelItem] = {}
    for task_id, task in tasks.items():
        ids, texts = _sample_texts(task)
        items[task_id] = LabelItem(task["prompt"], texts[ids[0]])
        if task["is_gold"] and task["gold"] and task["gold"].get("label") in ("good", "bad"):
            gold[task_id] = int(task["gold"]["label"] == "good")
        for row in task["rows"]:
            label = row["resolved"].get("label")
            if label not in ("good", "bad"):
                raise _bad_row(row, task_id, f"label {label!r} is neither good nor bad")
            votes.append(Vote(task_id, row["annotator"], int(label == "good")))
    return votes, gold, items


def rating_triples(tasks: Mapping[int, dict]) -> tuple[list[tuple[Hashable, str, float]], dict[Hashable, float]]:
    """(task, annotator, rating) triples and gold ratings of rating tasks."""
    ratings: list[tuple[Hashable, str, float]] = []
    gold: dict[Hashable, float] = {}
    for task_id, task in tasks.items():
        if task["is_gold"] and task["gold"] and "rating" in task["gold"]:
            gold[task_id] = float(task["gold"]["rating"])
        for row in task["rows"]:
            try:
                ratings.append((task_id, row["annotator"], float(row["resolved"]["rating"])))
            except (KeyError, TypeError, ValueError):
                raise _bad_row(row, task_id, f"no numeric rating in {row['resolved']!r}") from None
    return ratings, gold


def ranking_comparisons(tasks: Mapping[int, dict]) -> tuple[list[Comparison], dict[int, dict[int, list[int]]]]:
    """All pairs implied by the rankings (objects = sample ids) and each sample's positions per task."""
    comparisons: list[Comparison] = []
    positions: dict[int, dict[int, list[int]]] = {}
    for task_id, task in tasks.items():
        ids, _ = _sample_texts(task)
        positions[task_id] = {sid: [] for sid in ids}
        for row in task["rows"]:
            order = [int(x) for x in row["resolved"].get("order", [])]
            if sorted(order) != sorted(ids):
                raise _bad_row(row, task_id, f"order {order} is not a permutation of the samples {ids}")
            for pos, sid in enumerate(order):
                positions[task_id][sid].append(pos)
            comparisons += ranking_to_comparisons(order, list(range(1, len(order) + 1)), row["annotator"])
    return comparisons, positions


def _pairwise_from_rows(tasks: Mapping[int, dict], method: str, model: ReliabilityModel) -> dict[int, dict]:
    """Pairwise tasks -> one record each (see `aggregate_records`)."""
    votes, gold, items = pairwise_votes(tasks, ties_as_half_votes=method == "majority")
    if not votes:
        prob: dict[Hashable, float] = {}
    elif method == "majority":
        prob = majority_vote(votes).probability(0)
    else:
        prob = dawid_skene(votes, model=model, gold=gold, fit_class_prior=False).probability(0)
    records = {}
    for task_id, task in tasks.items():
        if task["is_gold"] or items[task_id].response_a == items[task_id].response_b:
            continue  # gold is not exported; two identical texts carry no preference
        p = prob.get(task_id, 0.5)  # nothing but ties -> a tie record
        (record,) = pairwise_records({task_id: items[task_id]}, {task_id: p}, annotator=None, min_confidence=0.0)
        if method == "majority":
            record["weight"] = 1.0
        ids, _ = _sample_texts(task)
        winner = ids[0] if p > 0.5 else ids[1] if p < 0.5 else None
        margins = [float(r["resolved"]["margin"]) for r in task["rows"]
                   if r["resolved"].get("winner") == winner and r["resolved"].get("margin") is not None]
        if margins and winner is not None:
            record["margin"] = float(np.mean(margins))  # mean margin stated by the annotators who agree
        records[task_id] = record
    return records


def _binary_from_rows(tasks: Mapping[int, dict], method: str, model: ReliabilityModel) -> dict[int, dict]:
    """Good/bad tasks -> one label record each (an exact split is dropped)."""
    votes, gold, items = binary_votes(tasks)
    result = majority_vote(votes) if method == "majority" else dawid_skene(votes, model=model, gold=gold)
    prob = result.probability(1)
    records = {}
    for task_id, task in tasks.items():
        if task["is_gold"]:
            continue
        found = label_records({task_id: items[task_id]}, {task_id: prob[task_id]}, annotator=None, min_confidence=0.0)
        if found:
            if method == "majority":
                found[0]["weight"] = 1.0
            records[task_id] = found[0]
    return records


def _rating_from_rows(tasks: Mapping[int, dict], method: str, model: ReliabilityModel) -> dict[int, dict]:
    """Rating tasks -> one rating record each (mean or precision-weighted mean)."""
    ratings, gold = rating_triples(tasks)
    if method == "majority":
        per_task: dict[Hashable, list[float]] = {}
        for task_id, _, value in ratings:
            per_task.setdefault(task_id, []).append(value)
        truth = {t: float(np.mean(values)) for t, values in per_task.items()}
    else:
        truth, _ = rating_reliability(ratings, gold=gold)
    records = {}
    for task_id, task in tasks.items():
        if task["is_gold"]:
            continue
        ids, texts = _sample_texts(task)
        scale = task["scale"]
        records[task_id] = record_to_dict(Rating(task["prompt"], texts[ids[0]], float(truth[task_id]),
                                                 tuple(scale) if scale else (), **common_fields(None, 1.0)))
    return records


def _ranks_from_scores(scores: Sequence[float], higher_is_better: bool) -> list[int]:
    """Competition ranks (1 = best; equal scores share the better rank)."""
    keyed = [(-x if higher_is_better else x) for x in scores]
    return [1 + sum(1 for other in keyed if other < mine - 1e-12) for mine in keyed]


def _ranking_from_rows(tasks: Mapping[int, dict], method: str, model: ReliabilityModel) -> dict[int, dict]:
    """Ranking tasks -> one ranking record each (Borda or crowd Bradley-Terry)."""
    comparisons, positions = ranking_comparisons(tasks)
    fit = crowd_bradley_terry(comparisons) if method == "reliability" else None
    records = {}
    for task_id, task in tasks.items():
        if task["is_gold"]:
            continue
        ids, texts = _sample_texts(task)
        if fit is not None:
            ranks = _ranks_from_scores([fit.scores[s] for s in ids], higher_is_better=True)
        else:
            ranks = _ranks_from_scores([float(np.mean(positions[task_id][s])) for s in ids], higher_is_better=False)
        best: dict[str, int] = {}  # identical texts: keep each text once, at its best rank
        for sid, rank in zip(ids, ranks):
            best[texts[sid]] = min(rank, best.get(texts[sid], rank))
        if len(best) < 2:
            continue
        responses = list(best)
        ranks = _ranks_from_scores([best[t] for t in responses], higher_is_better=False)
        records[task_id] = record_to_dict(Ranking(task["prompt"], tuple(responses), tuple(ranks), **common_fields(None, 1.0)))
    return records
