"""Edits as on-distribution preferences: a response that needed less rewriting beats one that needed more.

A rewrite-over-original pair teaches the reward model what a rewrite looks like, and the rewriter's style
differs from the policy's answers in ways that have nothing to do with quality. How much the annotators
changed each response is read from the edit alone (no gold): the token edit distance between original
and rewrite over the longer of the two ("no change needed" = 0), averaged over the response's editors.
Two responses to the same prompt in the same round then become a pair of the policy's own texts, the
less-changed one chosen, when their averages differ by more than ``min_gap`` (implicit feedback from
edit distance, as in learning latent preferences from user edits, Gao et al. 2024).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Optional

from rlhfkit.feedback.edits import edit_text

RANK_ANNOTATOR = "edit-distance"


def token_edit_distance(original: str, rewrite: str) -> float:
    """Levenshtein distance over lower-cased whitespace tokens / the longer token count, in [0, 1]."""
    a, b = original.lower().split(), rewrite.lower().split()
    previous = list(range(len(b) + 1))
    for i, token in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (token != other)))
        previous = current
    return previous[-1] / max(len(a), len(b), 1)


@dataclass(frozen=True)
class EditedResponse:
    """One edited response: its prompt, text, round, mean change over its editors and their count."""

    prompt: str
    text: str
    round: Optional[int]
    change: float
    editors: int


def needed_change(rows: Sequence[Mapping[str, Any]]) -> dict[int, EditedResponse]:
    """Per sample id of the edit ``rows`` (gold tasks and skips left out), the mean normalized edit distance."""
    changes: dict[int, list[float]] = defaultdict(list)
    first: dict[int, Mapping[str, Any]] = {}
    for row in rows:
        resolved = row.get("resolved") or {}
        if row.get("kind") != "edit" or row.get("is_gold") or resolved.get("skip") or not row.get("samples"):
            continue
        sample = row["samples"][0]
        rewrite = edit_text(row)
        changes[int(sample["id"])].append(0.0 if rewrite is None else token_edit_distance(sample["text"], rewrite))
        first.setdefault(int(sample["id"]), row)
    out = {}
    for sid, values in changes.items():
        row = first[sid]
        out[sid] = EditedResponse(str(row["prompt"]), str(row["samples"][0]["text"]), row["samples"][0].get("round"),
                                  sum(values) / len(values), len(values))
    return out


def edit_rank_pairs(rows: Sequence[Mapping[str, Any]], min_gap: float = 0.1) -> list[dict[str, Any]]:
    """Pairwise records between edited responses of one prompt and round: the less-changed one chosen when the
    mean changes differ by more than ``min_gap``; weight 1, annotator ``edit-distance``."""
    if not 0.0 <= min_gap < 1.0:
        raise ValueError(f"edit_rank_pairs: min_gap must be in [0, 1), got {min_gap}")
    groups: dict[tuple[str, Optional[int]], list[EditedResponse]] = defaultdict(list)
    for sid, response in sorted(needed_change(rows).items()):
        groups[(response.prompt, response.round)].append(response)
    records = []
    for members in groups.values():
        for a, b in combinations(members, 2):
            if abs(a.change - b.change) <= min_gap or a.text.strip() == b.text.strip():
                continue
            chosen, rejected = (a, b) if a.change < b.change else (b, a)
            records.append({"kind": "pairwise", "prompt": chosen.prompt, "chosen": chosen.text,
                            "rejected": rejected.text, "margin": None, "tie": False, "annotator": RANK_ANNOTATOR,
                            "timestamp": None, "weight": 1.0})
    return records
