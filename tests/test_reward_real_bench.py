"""bench/reward_real.py: k-fold splits by question, long documents read whole, and the context a base reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import reward_real  # noqa: E402
from rlhfkit.data.records import Comparison  # noqa: E402


def test_every_pair_is_evaluated_once_by_a_fold_that_never_trained_on_its_question() -> None:
    numbers = [1, 1, 2, 3, 3, 3, 4, 5, 6, 6, 7]
    splits = reward_real.kfold_by_question(numbers, 3, seed=0)
    evaluated = sorted(i for _, held in splits for i in held)
    assert evaluated == list(range(len(numbers)))
    for train, held in splits:
        assert sorted(train + held) == list(range(len(numbers)))
        assert not {numbers[i] for i in train} & {numbers[i] for i in held}
    sizes = sorted(len({numbers[i] for i in held}) for _, held in splits)
    assert sizes == [2, 2, 3]
    assert reward_real.kfold_by_question(numbers, 3, seed=0) == splits
    assert reward_real.kfold_by_question(numbers, 3, seed=1) != splits


def test_fold_counts_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        reward_real.kfold_by_question([1, 2, 3], 1, seed=0)
    with pytest.raises(ValueError, match="4 folds need at least 4 questions, the data has 3"):
        reward_real.kfold_by_question([1, 2, 3, 3], 4, seed=0)


def test_long_documents_are_cut_into_windows_not_truncated() -> None:
    assert reward_real.windows([1, 2, 3, 4, 5, 6, 7], 3) == [[1, 2, 3], [4, 5, 6], [7]]
    assert reward_real.windows([1, 2], 3) == [[1, 2]]
    assert reward_real.windows([], 3) == []


def test_context_texts_read_passages_and_reference_answers_of_the_given_questions(tmp_path: Path) -> None:
    rows = [{"question": "Who?", "passages": [["Title A", "First sentence.", "Second."], ["Title B", "Other."]],
             "gold": "The answer.", "prediction 1": "x", "preference": "[]"},
            {"question": "Held out?", "passages": [["Title C", "Secret."]], "gold": "Hidden.",
             "prediction 1": "y", "preference": "[]"},
            {"question": "No context?", "prediction 1": "z", "preference": "[]"}]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    assert reward_real.context_texts(path, {1, 3}) == ["Title A\nFirst sentence. Second.", "Title B\nOther.",
                                                       "Who?\nThe answer."]


def test_passages_go_before_the_question_and_can_be_cut_to_their_first_words(tmp_path: Path) -> None:
    rows = [{"question": "Who?", "passages": [["Title A", "First sentence.", "Second."], ["Title B", "Other."]],
             "prediction 1": "x", "preference": "[]"},
            {"question": "No context?", "prediction 1": "z", "preference": "[]"}]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    passages = reward_real.passage_texts(path)
    assert passages == {1: "Title A\nFirst sentence. Second.\nTitle B\nOther.", 2: ""}
    records = [Comparison(prompt="Who?\n", chosen="a", rejected="b"),
               Comparison(prompt="No context?\n", chosen="c", rejected="d")]
    whole = reward_real.with_passages(records, [1, 2], passages)
    assert [r.prompt for r in whole] == ["Title A\nFirst sentence. Second.\nTitle B\nOther.\n\nQuestion: Who?\n",
                                         "No context?\n"]
    assert (whole[0].chosen, whole[0].rejected) == ("a", "b")
    cut = reward_real.with_passages(records, [1, 2], passages, words=3)
    assert cut[0].prompt == "Title A\nFirst sentence.\n\nQuestion: Who?\n"


def test_trigram_support_is_the_share_of_the_answers_trigrams_found_in_the_passage() -> None:
    passage = "Bloom was released on 31 August 2018 through EMI."
    assert reward_real.trigram_support("Bloom was released on 31 August", passage) == 1.0
    # trigrams: (bloom was released) (was released in) (released in may): one of three is in the passage
    assert reward_real.trigram_support("BLOOM was released in May", passage) == pytest.approx(1 / 3)
    assert reward_real.trigram_support("Two words", passage) == 0.0
    assert reward_real.trigram_support("", passage) == 0.0
