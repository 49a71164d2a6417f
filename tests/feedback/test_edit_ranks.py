"""Edit distance as implicit feedback: responses that needed less rewriting win pairs of the policy's own texts."""

from __future__ import annotations

import pytest

from rlhfkit.feedback.edit_ranks import edit_rank_pairs, needed_change, token_edit_distance


def _row(sid: int, text: str, resolved: dict, annotator: str = "a", prompt: str = "p", round_index: int = 1) -> dict:
    return {"kind": "edit", "prompt": prompt, "resolved": resolved, "annotator": annotator, "is_gold": False,
            "samples": [{"id": sid, "text": text, "round": round_index}], "annotation_id": sid * 10,
            "submitted_at": "2026-01-01T00:00:00"}


def test_token_edit_distance_counts_word_edits_over_the_longer_text():
    assert token_edit_distance("a b c d", "a b c d") == 0.0
    assert token_edit_distance("a b c d", "a x c d") == 0.25  # one substitution of four
    assert token_edit_distance("A b", "a b c d") == 0.5  # case ignored; two insertions over four
    assert token_edit_distance("a b", "") == 1.0 and token_edit_distance("", "") == 0.0


def test_needed_change_averages_editors_and_counts_no_change_as_zero():
    rows = [_row(1, " a b c d", {"text": "a x c d"}), _row(1, " a b c d", {"unchanged": True}, annotator="b"),
            _row(1, " a b c d", {"skip": True}, annotator="c"), _row(2, " e f", {"text": "g h"})]
    table = needed_change(rows)
    assert table[1].change == pytest.approx(0.125) and table[1].editors == 2
    assert table[2].change == 1.0 and table[2].editors == 1


def test_rank_pairs_prefer_the_less_edited_response_of_the_same_prompt_and_round():
    rows = [_row(1, " good one", {"unchanged": True}), _row(2, " bad bad bad", {"text": "good"}),
            _row(3, " nearly good", {"text": "nearly good one"}),  # change 1/3: within 0.4 of sample 1
            _row(4, " other prompt", {"unchanged": True}, prompt="q"),
            _row(5, " older round", {"text": "x"}, round_index=0)]
    pairs = edit_rank_pairs(rows, min_gap=0.4)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [(" good one", " bad bad bad"),
                                                             (" nearly good", " bad bad bad")]
    assert all(p["annotator"] == "edit-distance" and p["weight"] == 1.0 for p in pairs)
    assert len(edit_rank_pairs(rows, min_gap=0.0)) == 3
    with pytest.raises(ValueError, match="min_gap"):
        edit_rank_pairs(rows, min_gap=1.0)
