"""Choosing comparisons: valid pairs only, per-prompt caps, and query-by-committee ordering."""

from __future__ import annotations

import math

import torch

from rlhfkit.loop.candidates import Candidate
from rlhfkit.loop.selection import (Pair, active_pairs, candidate_pairs, preference_disagreement, random_pairs,
                                    read_pairs, take_capped, write_pairs)


def _candidates(texts_per_prompt):
    out = []
    for p, texts in enumerate(texts_per_prompt):
        for text in texts:
            out.append(Candidate(index=len(out), prompt_index=p, prompt=f"prompt {p}", response=text, finished=True))
    return out


def test_pairs_skip_identical_and_empty_texts():
    cands = _candidates([["a", "b", "a", " "], ["x", "y"]])
    pairs = candidate_pairs(cands)
    assert [(p.a, p.b) for p in pairs] == [(0, 1), (1, 2), (4, 5)]
    assert all(cands[p.a].prompt_index == cands[p.b].prompt_index == p.prompt_index for p in pairs)


def test_disagreement_matches_the_variance_of_head_probabilities_by_hand():
    heads = torch.tensor([[0.0, 1.0, 2.0], [0.0, -1.0, 2.0]])  # 2 heads x 3 candidates
    got = preference_disagreement(heads, torch.tensor([1, 2]), torch.tensor([0, 0]))
    p1, p2 = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(1.0))
    mean = (p1 + p2) / 2
    assert torch.allclose(got[0], torch.tensor(((p1 - mean) ** 2 + (p2 - mean) ** 2) / 2))
    assert got[1].item() == 0.0  # both heads agree on candidate 2 vs 0
    assert preference_disagreement(heads[:1], torch.tensor([1]), torch.tensor([0])).item() == 0.0


def test_active_selection_puts_the_most_disputed_pairs_first():
    cands = _candidates([["a", "b", "c"], ["d", "e", "f"]])
    pairs = candidate_pairs(cands)
    heads = torch.tensor([[0.0, 3.0, 0.0, 0.0, 0.0, 1.0],
                          [0.0, -3.0, 0.0, 0.0, 0.0, -1.0]])
    chosen = active_pairs(pairs, heads, n=2, max_per_prompt=2, seed=0)
    assert {(p.a, p.b) for p in chosen} == {(0, 1), (1, 2)}  # the heads disagree most about candidate 1
    assert chosen[0].score >= chosen[1].score > 0
    capped = active_pairs(pairs, heads, n=3, max_per_prompt=1, seed=0)
    assert sorted(p.prompt_index for p in capped) == [0, 1]


def test_random_selection_is_seeded_and_capped():
    cands = _candidates([["a", "b", "c", "d"]] * 3)
    pairs = candidate_pairs(cands)
    first = random_pairs(pairs, 5, max_per_prompt=2, seed=3)
    assert first == random_pairs(pairs, 5, max_per_prompt=2, seed=3)
    assert len(first) == 5 and max(sum(p.prompt_index == i for p in first) for i in range(3)) <= 2
    assert len(take_capped(pairs, 100, 1)) == 3


def test_pairs_round_trip(tmp_path):
    pairs = [Pair(0, 1, 2, 0.25), Pair(3, 7, 8)]
    write_pairs(tmp_path / "c.json", pairs, "active")
    assert read_pairs(tmp_path / "c.json") == ("active", pairs)
