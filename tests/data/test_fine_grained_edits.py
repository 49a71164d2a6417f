"""FineGrainedRLHF qa-feedback corrections read as edit pairs and SFT examples."""

import json
from pathlib import Path

import pytest

from rlhfkit.data.fine_grained_edits import (EDIT_ANNOTATOR, SKIP_EMPTY, SKIP_IDENTICAL, SKIP_NO_CORRECTION,
                                             read_fine_grained_edits)
from rlhfkit.data.preference_io import read_feedback, write_jsonl

SAMPLE = Path(__file__).parent / "fine_grained_rlhf" / "qa_feedback_dev_sample.json"
ROW = {"question": "q", "prediction 1": "a b", "prediction 2": "c", "prediction 3": "d", "prediction 4": "e",
       "preference": [0, 0, 0, 0, 0, 0]}


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "fg.json"
    path.write_text(json.dumps(rows))
    return path


def test_sample_error_spans_index_prediction_1_so_the_correction_edits_it():
    rows = json.loads(SAMPLE.read_text(encoding="utf-8"))
    for row in rows:
        text = row["prediction 1"]
        for error in row["feedback"]["errors"]:
            start, end = error["start"], error["end"]
            assert end <= len(text) and (start == 0 or text[start - 1] == " ")


def test_sample_corrections_become_edit_pairs_and_sft_examples():
    rows = json.loads(SAMPLE.read_text(encoding="utf-8"))
    data = read_fine_grained_edits(SAMPLE)
    assert data.numbers == [1, 2, 3, 4, 5, 7, 8] and data.skipped == {SKIP_EMPTY: 1}
    first = data.comparisons[0]
    assert first.prompt == rows[0]["question"] + "\n" and first.rejected == rows[0]["prediction 1"]
    corrected = rows[0]["feedback"]["corrected-prediction"]
    assert corrected.endswith(" ") and first.chosen == corrected.strip()
    assert first.annotator == EDIT_ANNOTATOR and first.weight == 1.0
    assert [(s.prompt, s.completion) for s in data.sft] == [(c.prompt, c.chosen) for c in data.comparisons]
    assert data.summary() == "7 edit pair(s) kept; skipped 1 (empty correction: 1)"


def test_only_the_given_questions_are_read_with_the_preference_readers_numbers():
    data = read_fine_grained_edits(SAMPLE, questions={2, 6, 8}, weight=0.5)
    pairs = read_feedback(SAMPLE)
    assert data.numbers == [2, 8] and data.skipped == {SKIP_EMPTY: 1}
    assert all(c.weight == 0.5 for c in data.comparisons)
    prompts = {r.prompt for r, n in zip(pairs.records, pairs.numbers) if n in (2, 8)}
    assert {c.prompt for c in data.comparisons} == prompts


def test_identical_empty_and_missing_corrections_are_counted(tmp_path):
    rows = [{**ROW, "feedback": {"corrected-prediction": " a  b\n"}},
            {**ROW, "feedback": {"corrected-prediction": "  "}},
            {**ROW, "feedback": {}},
            ROW,
            {**ROW, "feedback": {"corrected-prediction": "a c "}}]
    data = read_fine_grained_edits(_write(tmp_path, rows))
    assert data.skipped == {SKIP_IDENTICAL: 1, SKIP_EMPTY: 1, SKIP_NO_CORRECTION: 2}
    assert [(c.chosen, c.rejected, n) for c, n in zip(data.comparisons, data.numbers)] == [("a c", "a b", 5)]


def test_edit_pairs_round_trip_through_the_jsonl_writer(tmp_path):
    data = read_fine_grained_edits(SAMPLE, questions={1})
    back = read_feedback(write_jsonl(data.comparisons, tmp_path / "edits.jsonl")).records
    assert back == data.comparisons


@pytest.mark.parametrize("row, field", [({**ROW, "feedback": {"corrected-prediction": 3}},
                                         "feedback.corrected-prediction"),
                                        ({**ROW, "prediction 1": None, "feedback": {"corrected-prediction": "x"}},
                                         "prediction 1")])
def test_malformed_fields_name_the_record_and_field(tmp_path, row, field):
    with pytest.raises(ValueError, match=rf"record 2: .*field '{field}'"):
        read_fine_grained_edits(_write(tmp_path, [{**ROW, "feedback": {}}, row]))


def test_a_row_of_another_format_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="record 1 is not a FineGrainedRLHF"):
        read_fine_grained_edits(_write(tmp_path, [{"prompt": "p", "chosen": "a", "rejected": "b"}]))


def test_negative_weight_is_refused():
    with pytest.raises(ValueError, match="weight must be >= 0"):
        read_fine_grained_edits(SAMPLE, weight=-1.0)
