"""Choosing which pairs of candidates annotators compare: at random, or where the reward model is unsure.

Active selection is query-by-committee (Seung, Opper & Sompolinsky 1992) with the reward-model
heads (or members) as the committee: a pair's score is the variance across heads of the predicted
preference probability, Var_h[σ(r_h(a) - r_h(b))], so pairs the heads disagree on come first
(the disagreement-based selection of Christiano et al. 2017, "Deep RL from Human Preferences").
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path

import torch

from rlhfkit.loop.candidates import Candidate
from rlhfkit.utils.checkpoint import atomic_write_json


@dataclass(frozen=True)
class Pair:
    """Candidates ``a`` and ``b`` (indices into the round's candidates) of one prompt, and why chosen."""

    prompt_index: int
    a: int
    b: int
    score: float = 0.0


def candidate_pairs(candidates: Sequence[Candidate]) -> list[Pair]:
    """Every pair of one prompt's candidates whose texts differ and are non-empty (others teach nothing)."""
    by_prompt: dict[int, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_prompt[candidate.prompt_index].append(candidate)
    pairs = []
    for prompt_index in sorted(by_prompt):
        for first, second in combinations(by_prompt[prompt_index], 2):
            if first.response.strip() and second.response.strip() and first.response != second.response:
                pairs.append(Pair(prompt_index, first.index, second.index))
    return pairs


def preference_disagreement(head_scores: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Var over heads of σ(r_h(a) - r_h(b)): head_scores (H, N), a and b (P,) indices -> (P,).

    Zero for a single head (no committee); at most 0.25 (heads split between certain answers).
    """
    probs = torch.sigmoid(head_scores[:, a] - head_scores[:, b])
    return probs.var(dim=0, unbiased=False)


def take_capped(ordered: Sequence[Pair], n: int, max_per_prompt: int) -> list[Pair]:
    """The first ``n`` pairs of ``ordered`` with at most ``max_per_prompt`` per prompt."""
    used: dict[int, int] = defaultdict(int)
    chosen = []
    for pair in ordered:
        if len(chosen) == n:
            break
        if used[pair.prompt_index] < max_per_prompt:
            used[pair.prompt_index] += 1
            chosen.append(pair)
    return chosen


def random_pairs(pairs: Sequence[Pair], n: int, max_per_prompt: int, seed: int) -> list[Pair]:
    """``n`` pairs drawn uniformly (seeded), at most ``max_per_prompt`` per prompt."""
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    return take_capped(shuffled, n, max_per_prompt)


def active_pairs(pairs: Sequence[Pair], head_scores: torch.Tensor, n: int, max_per_prompt: int,
                 seed: int) -> list[Pair]:
    """The ``n`` pairs with the largest head disagreement (random tie order), capped per prompt."""
    if not pairs:
        return []
    a = torch.tensor([p.a for p in pairs])
    b = torch.tensor([p.b for p in pairs])
    scores = preference_disagreement(head_scores.float(), a, b).tolist()
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda i: -scores[i])
    ranked = [Pair(pairs[i].prompt_index, pairs[i].a, pairs[i].b, float(scores[i])) for i in order]
    return take_capped(ranked, n, max_per_prompt)


def write_pairs(path: Path, pairs: Sequence[Pair], strategy: str) -> None:
    """Store the chosen pairs (atomically) with the strategy that chose them."""
    atomic_write_json(path, {"strategy": strategy, "pairs": [asdict(p) for p in pairs]})


def read_pairs(path: Path) -> tuple[str, list[Pair]]:
    """What :func:`write_pairs` stored."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return str(data["strategy"]), [Pair(**row) for row in data["pairs"]]
