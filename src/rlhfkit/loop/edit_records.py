"""The reward model's records in edit mode (feedback.kind=edit), as ``feedback.edit_pairs`` chooses.

rewrite: each rewrite over its original (what an edit says directly, in the rewriter's words);
ranked: pairs of the policy's own candidates ranked by how much the annotators had to change them
(:mod:`rlhfkit.feedback.edit_ranks`), so the reward model trains on the texts it will score;
both: the two together. Pairwise answers of other campaigns (an adversarial round) are kept in every mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rlhfkit.feedback.edit_ranks import edit_rank_pairs
from rlhfkit.loop.aggregate import aggregate_feedback

EDIT_PAIR_MODES = ("rewrite", "ranked", "both")


def edit_feedback_records(rows: Sequence[Mapping[str, Any]], mode: str, method: str,
                          min_gap: float) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Training records of edit-mode answer ``rows`` and their counts per source."""
    if mode not in EDIT_PAIR_MODES:
        raise ValueError(f"feedback.edit_pairs: unknown mode {mode!r}; use {', '.join(EDIT_PAIR_MODES)}")
    kept = rows if mode != "ranked" else [r for r in rows if r.get("kind") != "edit"]
    records = aggregate_feedback(kept, method)
    rewrites = sum(1 for r in records if r.get("annotator") is not None)  # aggregated votes have none
    ranked = edit_rank_pairs(rows, min_gap) if mode != "rewrite" else []
    return records + ranked, {"feedback/edit_rewrite_pairs": float(rewrites),
                              "feedback/edit_ranked_pairs": float(len(ranked))}
