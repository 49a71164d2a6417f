"""Win rate of the policy against the base policy as judged through the feedback server.

The end-of-round evaluation measures the win rate by the gold reward (or a judge function) on
the held-out prompts; this phase asks the round's annotators (the simulated panel, an AI judge or
people in the web app) to compare the two policies' answers to the same prompts instead. Each task
pairs the policy's response (first) with the base policy's (second); the server shuffles the
display order. A task's outcome is the majority of its answers: 1 (policy preferred), 0 (base) or
1/2 (split votes, "tie" answers only, or identical responses, which are never asked).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from rlhfkit.loop.candidates import Candidate
from rlhfkit.loop.selection import Pair

POLICY_MODEL, BASE_MODEL = "policy", "base"


def comparison_name(run_id: str, round_index: int) -> str:
    """The comparison campaign's name: unique per run and round, found again after a restart."""
    return f"{run_id} round {round_index} vs base"


def decided_without_asking(policy: str, base: str) -> float | None:
    """The outcome when no annotator is needed: identical responses tie, an empty one loses."""
    if policy.strip() == base.strip():
        return 0.5
    if not policy.strip():
        return 0.0
    if not base.strip():
        return 1.0
    return None


def comparison_candidates(prompts: Sequence[str], policy: Sequence[str], base: Sequence[str]
                          ) -> tuple[list[Candidate], list[str], list[Pair], dict[int, float]]:
    """Candidates (policy answers, then base answers), their model labels, the pairs to ask, and settled outcomes.

    Pair ``(i, n + i)`` compares the policy's and the base policy's answers to prompt ``i``; prompts
    whose outcome :func:`decided_without_asking` settles get no pair.
    """
    n = len(prompts)
    if len(policy) != n or len(base) != n:
        raise ValueError(f"comparison: {n} prompts but {len(policy)} policy and {len(base)} base responses")
    candidates = [Candidate(index=i, prompt_index=i % n, prompt=prompts[i % n], response=text, finished=True)
                  for i, text in enumerate([*policy, *base])]
    models = [POLICY_MODEL] * n + [BASE_MODEL] * n
    pairs, settled = [], {}
    for i in range(n):
        outcome = decided_without_asking(policy[i], base[i])
        if outcome is None:
            pairs.append(Pair(prompt_index=i, a=i, b=n + i))
        else:
            settled[i] = outcome
    return candidates, models, pairs, settled


def majority_outcomes(rows: Sequence[Mapping[str, Any]]) -> list[float]:
    """One outcome per answered task: 1 if more answers chose its first sample (the policy), 0 if fewer, else 1/2.

    Skipped answers do not count; a task whose answers are all skips gives no outcome.
    """
    votes: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        if row.get("kind") != "pairwise" or row.get("is_gold"):
            continue
        winner = (row.get("resolved") or {}).get("winner")
        tally = votes[int(row["task_id"])]
        first, second = (int(s["id"]) for s in row["samples"][:2])
        if winner == first:
            tally[0] += 1
        elif winner == second:
            tally[1] += 1
        elif winner == "tie":
            tally[2] += 1
    out = []
    for policy_votes, base_votes, ties in votes.values():
        if policy_votes + base_votes + ties == 0:
            continue
        out.append(1.0 if policy_votes > base_votes else 0.0 if base_votes > policy_votes else 0.5)
    return out
