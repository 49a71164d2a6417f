"""Readers load rlhfkit JSONL/CSV, HF datasets on disk, Parquet and TRL's formats unchanged."""

from __future__ import annotations

import csv
import json

import pytest

from rlhfkit.data.preference_io import (normalize_row, read_feedback, read_feedback_files, records_from_rows,
                                        shared_text_prefix, write_jsonl)
from rlhfkit.data.records import INVALID, MISSING, Comparison, Label, Ranking, Rating


def _records():
    return [Comparison("p", "a", "b", margin=1.0, annotator="x", weight=0.5), Comparison("p", "c", "d", tie=True),
            Ranking("q", ("r1", "r2", "r3"), (2, 1, 2)), Rating("q", "r", 2.0, (0.0, 10.0)),
            Label("q", "r", True, timestamp="2024-05-01T10:00:00")]


def test_jsonl_round_trip(tmp_path):
    path = write_jsonl(_records(), tmp_path / "out.jsonl")
    data = read_feedback(path)
    assert data.records == _records() and data.report.valid == 5


def test_csv_with_list_cells_and_text_flags(tmp_path):
    path = tmp_path / "feedback.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["kind", "prompt", "chosen", "rejected", "tie", "responses", "ranks",
                                                    "response", "rating", "scale", "label", "weight"])
        writer.writeheader()
        writer.writerow({"kind": "pairwise", "prompt": "p", "chosen": "a", "rejected": "b", "tie": "true"})
        writer.writerow({"kind": "ranking", "prompt": "p", "responses": '["a", "b"]', "ranks": "[2, 1]"})
        writer.writerow({"kind": "rating", "prompt": "p", "response": "a", "rating": "4", "scale": "1,5", "weight": "2"})
        writer.writerow({"kind": "label", "prompt": "p", "response": "a", "label": "false"})
        writer.writerow({"kind": "ranking", "prompt": "p", "responses": "[broken", "ranks": "[1]"})
    data = read_feedback(path)
    assert data.records == [Comparison("p", "a", "b", tie=True), Ranking("p", ("a", "b"), (2, 1)),
                            Rating("p", "a", 4.0, (1.0, 5.0), weight=2.0), Label("p", "a", False)]
    assert data.report.problems == {INVALID: [5]}


def test_trl_explicit_and_implicit_prompt():
    explicit = normalize_row({"prompt": "Q?", "chosen": " yes", "rejected": " no"})
    assert explicit["kind"] == "pairwise" and explicit["prompt"] == "Q?"
    implicit = records_from_rows([{"chosen": "\n\nHuman: capital of France?\n\nAssistant: Paris is the capital.",
                                   "rejected": "\n\nHuman: capital of France?\n\nAssistant: Pari."}]).records[0]
    assert implicit.prompt == "\n\nHuman: capital of France?\n\nAssistant: "
    assert (implicit.chosen, implicit.rejected) == ("Paris is the capital.", "Pari.")
    assert shared_text_prefix("the cat sat", "the cat") == "the "


def test_trl_conversational_explicit_and_implicit():
    user = {"role": "user", "content": "What color is the sky?"}
    good = {"role": "assistant", "content": "Blue."}
    bad = {"role": "assistant", "content": "Green."}
    explicit = records_from_rows([{"prompt": [user], "chosen": [good], "rejected": [bad]}]).records[0]
    implicit = records_from_rows([{"chosen": [user, good], "rejected": [user, bad]}]).records[0]
    assert explicit == implicit
    assert explicit.prompt == "user: What color is the sky?\n"
    assert (explicit.chosen, explicit.rejected) == ("assistant: Blue.", "assistant: Green.")


def test_trl_unpaired_and_identical_implicit_rows():
    data = records_from_rows([{"prompt": "p", "completion": "ok", "label": True},
                              {"chosen": "same text", "rejected": "same text"},
                              {"text": "no format"}])
    assert data.records == [Label("p", "ok", True)]
    assert data.report.problems == {"identical chosen/rejected": [2], MISSING: [3]}


def test_hf_dataset_on_disk_parquet_and_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"prompt": ["p1", "p2"], "chosen": ["a", "c"], "rejected": ["b", "d"]}
    dataset = datasets.Dataset.from_dict(rows)
    dataset.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": dataset, "test": dataset.select([0])}).save_to_disk(str(tmp_path / "dict"))
    dataset.to_parquet(str(tmp_path / "rows.parquet"))
    expected = [Comparison("p1", "a", "b"), Comparison("p2", "c", "d")]
    assert read_feedback(tmp_path / "single").records == expected
    assert read_feedback(tmp_path / "dict").records == expected
    assert read_feedback(f"{tmp_path / 'dict'}:test").records == expected[:1]
    assert read_feedback(tmp_path / "rows.parquet").records == expected
    combined = read_feedback_files([tmp_path / "single", tmp_path / "rows.parquet"])
    assert len(combined.records) == 4 and combined.report.total == 4


def test_unknown_format_and_missing_file_errors(tmp_path):
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown feedback format"):
        read_feedback(tmp_path / "data.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_feedback(tmp_path / "missing.jsonl")
    (tmp_path / "list.json").write_text(json.dumps([{"kind": "label", "prompt": "p", "response": "r", "label": 1}, 3]))
    data = read_feedback(tmp_path / "list.json")
    assert data.records == [Label("p", "r", True)] and data.report.problems == {INVALID: [2]}
