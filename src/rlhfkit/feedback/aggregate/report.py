"""Campaign quality report: per-annotator reliability and inter-annotator agreement, per task kind.

Feeds progress pages, `campaign status` and the loop's HTML report from the rows of
`GET /campaigns/{cid}/annotations`. Reliability per kind: Dawid-Skene accuracy and spammer score
(pairwise, binary), rating noise standard deviation (rating), crowd Bradley-Terry beta (ranking).
Agreement: Krippendorff's alpha over (annotator x task), nominal for pairwise/binary (ties are a
category) and interval for ratings; rankings use the ordinal alpha of each sample's position.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rlhfkit.feedback.aggregate.crowd_bt import crowd_bradley_terry
from rlhfkit.feedback.aggregate.labels import ReliabilityModel, dawid_skene
from rlhfkit.feedback.aggregate.ratings import rating_reliability
from rlhfkit.feedback.aggregate.rows import (
    binary_votes,
    group_tasks,
    pairwise_votes,
    ranking_comparisons,
    rating_triples,
    tasks_by_kind,
)
from rlhfkit.feedback.agreement import krippendorff_alpha


def _alpha(values: dict[tuple[str, Any], Any], metric: str) -> float | None:
    """Krippendorff's alpha of {(annotator, unit): value}; None when no unit has two values or nothing varies."""
    coders = sorted({c for c, _ in values})
    units = sorted({u for _, u in values}, key=repr)
    data = [[values.get((c, u)) for u in units] for c in coders]
    try:
        alpha = krippendorff_alpha(data, metric)  # type: ignore[arg-type]
    except ValueError:
        return None
    return None if math.isnan(alpha) else round(alpha, 6)


def _kind_report(kind: str, tasks: Mapping[int, dict], model: ReliabilityModel) -> dict[str, Any]:
    annotators: dict[str, dict[str, Any]] = {}
    if kind in ("pairwise", "binary"):
        votes, gold, _ = pairwise_votes(tasks, ties_as_half_votes=False) if kind == "pairwise" else binary_votes(tasks)
        if votes:
            fit = dawid_skene(votes, model=model, gold=gold, fit_class_prior=kind == "binary")
            annotators = {name: {"reliability": round(r.accuracy, 6), "spammer_score": round(r.spammer_score, 6),
                                 "n_votes": r.n_votes} for name, r in fit.annotators.items()}
        if kind == "pairwise":
            values = {(r["annotator"], t): r["resolved"]["winner"] for t, task in tasks.items() for r in task["rows"]}
        else:
            values = {(r["annotator"], t): r["resolved"]["label"] for t, task in tasks.items() for r in task["rows"]}
        alpha = _alpha(values, "nominal")
    elif kind == "rating":
        ratings, gold = rating_triples(tasks)
        _, variance = rating_reliability(ratings, gold=gold)
        counts: dict[str, int] = {}
        for _, name, _ in ratings:
            counts[name] = counts.get(name, 0) + 1
        annotators = {name: {"noise_sd": round(math.sqrt(v), 6), "n_votes": counts[name]}
                      for name, v in variance.items()}
        alpha = _alpha({(name, t): value for t, name, value in ratings}, "interval")
    else:
        comparisons, _ = ranking_comparisons(tasks)
        fit = crowd_bradley_terry(comparisons) if comparisons else None
        answered: dict[str, int] = {}
        positions: dict[tuple[str, Any], int] = {}
        for task_id, task in tasks.items():
            for row in task["rows"]:
                answered[row["annotator"]] = answered.get(row["annotator"], 0) + 1
                for pos, sid in enumerate(row["resolved"]["order"]):
                    positions[(row["annotator"], (task_id, int(sid)))] = pos
        annotators = {name: {"beta": round(fit.beta[name], 6) if fit else None, "n_votes": n}
                      for name, n in answered.items()}
        alpha = _alpha(positions, "ordinal")
    return {"tasks": len(tasks), "annotations": sum(len(t["rows"]) for t in tasks.values()),
            "krippendorff_alpha": alpha, "annotators": dict(sorted(annotators.items()))}


def quality_report(rows: Sequence[Mapping[str, Any]], *, model: ReliabilityModel = "two-coin") -> dict[str, Any]:
    """{kind: {"tasks", "annotations", "krippendorff_alpha", "annotators": {name: reliability fields}}}.

    Skips are left out; gold tasks are included (they anchor Dawid-Skene and count toward agreement).
    Edits have no agreement to measure: their entry counts each annotator's rewrites and "no change needed".
    """
    report = {kind: _kind_report(kind, group, model)
              for kind, group in tasks_by_kind(group_tasks([r for r in rows if r.get("kind") != "edit"])).items()}
    edits = [r for r in rows if r.get("kind") == "edit" and not (r.get("resolved") or {}).get("skip")]
    if edits:
        annotators: dict[str, dict[str, int]] = {}
        for row in edits:
            entry = annotators.setdefault(row["annotator"], {"edits": 0, "unchanged": 0})
            entry["unchanged" if row["resolved"].get("unchanged") else "edits"] += 1
        report["edit"] = {"tasks": len({r["task_id"] for r in edits}), "annotations": len(edits),
                          "krippendorff_alpha": None, "annotators": dict(sorted(annotators.items()))}
    return report
