"""Feedback record schema: every kind parses, bad records are counted per reason with record numbers."""

from __future__ import annotations

import json

import pytest

from rlhfkit.data.preference_io import read_feedback
from rlhfkit.data.records import (DUPLICATE_RESPONSES, EMPTY, IDENTICAL, INVALID, MISSING, NOT_FINITE, OUT_OF_SCALE,
                                  UNKNOWN_KIND, Comparison, Label, NoValidRecordsError, Ranking, Rating, RecordError,
                                  record_from_dict, record_to_dict, require_valid, responses_of)


def test_each_kind_parses_and_round_trips():
    rows = [
        {"kind": "pairwise", "prompt": "p", "chosen": "a", "rejected": "b", "margin": 0.5, "tie": False,
         "annotator": "ann-1", "timestamp": "2024-01-01T00:00:00", "weight": 2.0},
        {"kind": "ranking", "prompt": "p", "responses": ["a", "b", "c"], "ranks": [1, 1, 3]},
        {"kind": "rating", "prompt": "p", "response": "a", "rating": 4, "scale": [1, 5]},
        {"kind": "label", "prompt": "p", "response": "a", "label": False},
    ]
    records = [record_from_dict(r) for r in rows]
    assert [type(r) for r in records] == [Comparison, Ranking, Rating, Label]
    assert records[0].weight == 2.0 and records[0].annotator == "ann-1" and records[0].margin == 0.5
    assert records[1].ranks == (1, 1, 3)
    assert records[2].normalized == pytest.approx(0.75)
    assert responses_of(records[1]) == ("a", "b", "c")
    for row, record in zip(rows, records):
        again = record_from_dict(record_to_dict(record))
        assert again == record
        assert record_to_dict(record)["kind"] == row["kind"]


@pytest.mark.parametrize("row, reason", [
    ({"kind": "pairwise", "prompt": "p", "chosen": "same", "rejected": "same"}, IDENTICAL),
    ({"kind": "pairwise", "prompt": "p", "chosen": "", "rejected": "b"}, EMPTY),
    ({"kind": "pairwise", "prompt": "p", "chosen": "a"}, MISSING),
    ({"prompt": "p", "chosen": "a", "rejected": "b"}, MISSING),
    ({"kind": "rating", "prompt": "p", "response": "a", "rating": 6, "scale": [1, 5]}, OUT_OF_SCALE),
    ({"kind": "rating", "prompt": "p", "response": "a", "rating": float("nan"), "scale": [1, 5]}, NOT_FINITE),
    ({"kind": "rating", "prompt": "p", "response": "a", "rating": 3}, MISSING),
    ({"kind": "pairwise", "prompt": "p", "chosen": "a", "rejected": "b", "margin": float("inf")}, NOT_FINITE),
    ({"kind": "pairwise", "prompt": "p", "chosen": "a", "rejected": "b", "weight": -1}, INVALID),
    ({"kind": "ranking", "prompt": "p", "responses": ["a", "a"], "ranks": [1, 2]}, DUPLICATE_RESPONSES),
    ({"kind": "ranking", "prompt": "p", "responses": ["a", "b"], "ranks": [1]}, INVALID),
    ({"kind": "ranking", "prompt": "p", "responses": ["a", "b"], "ranks": [0, 1.5]}, INVALID),
    ({"kind": "label", "prompt": "p", "response": "a", "label": "maybe"}, INVALID),
    ({"kind": "vote", "prompt": "p"}, UNKNOWN_KIND),
])
def test_bad_records_name_their_reason(row, reason):
    with pytest.raises(RecordError) as info:
        record_from_dict(row)
    assert info.value.reason == reason


def test_default_scale_applies_to_ratings_without_one():
    record = record_from_dict({"kind": "rating", "prompt": "p", "response": "a", "rating": 0.5}, default_scale=(0, 1))
    assert record.scale == (0.0, 1.0) and record.normalized == 0.5


def test_report_counts_reasons_with_line_numbers_and_keeps_the_valid_rest(tmp_path):
    lines = [
        {"kind": "pairwise", "prompt": "p", "chosen": "a", "rejected": "b"},
        {"kind": "pairwise", "prompt": "p", "chosen": "x", "rejected": "x"},
        {"kind": "pairwise", "prompt": "p", "chosen": "x", "rejected": "x"},
        {"kind": "rating", "prompt": "p", "response": "a", "rating": 9, "scale": [1, 5]},
        {"kind": "rating", "prompt": "p", "response": "a", "rating": float("nan"), "scale": [1, 5]},
        {"kind": "label", "prompt": "p", "response": "", "label": True},
        {"kind": "label", "prompt": "p", "response": "fine", "label": True},
    ]
    path = tmp_path / "feedback.jsonl"
    text = "\n".join(json.dumps(line) for line in lines[:3]) + "\n\n{broken\n" + "\n".join(json.dumps(x) for x in lines[3:])
    path.write_text(text + "\n")
    data = read_feedback(path)
    report = data.report
    assert report.total == 8 and report.valid == 2
    assert [type(r) for r in data.records] == [Comparison, Label]
    assert data.numbers == [1, 9]
    assert report.problems == {IDENTICAL: [2, 3], INVALID: [5], OUT_OF_SCALE: [6], NOT_FINITE: [7], EMPTY: [8]}
    summary = report.summary()
    assert "identical chosen/rejected: 2 record(s) [2, 3]" in summary
    assert "rating 9 outside [1, 5]" in summary
    assert report.to_dict()["problems"][OUT_OF_SCALE]["examples"] == [6]


def test_nothing_valid_raises_with_the_report(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"kind": "pairwise", "prompt": "p", "chosen": "x", "rejected": "x"}) + "\n")
    data = read_feedback(path)
    with pytest.raises(NoValidRecordsError, match="identical chosen/rejected: 1 record"):
        require_valid(data.records, data.report)


def test_merged_reports_add_up(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps({"kind": "label", "prompt": "p", "response": "", "label": 1}) + "\n")
    second.write_text(json.dumps({"kind": "label", "prompt": "p", "response": "", "label": 0}) + "\n"
                      + json.dumps({"kind": "label", "prompt": "p", "response": "ok", "label": 0}) + "\n")
    merged = read_feedback(first).report.merge(read_feedback(second).report)
    assert merged.total == 3 and merged.valid == 1 and merged.problems[EMPTY] == [1, 1]
