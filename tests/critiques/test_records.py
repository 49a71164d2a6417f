"""Critique files, annotation rows and encoded critiques as rating records weighted by confidence."""

from __future__ import annotations

import json

import pytest

from rlhfkit.critiques.base import CritiqueError, items_from_rows, read_items
from rlhfkit.critiques.records import NOT_CONFIDENT, encode_files
from rlhfkit.data.records import record_from_dict, record_to_dict


def test_records_carry_confidence_weights(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"prompt": "p", "response": "a", "critique": "good reason given", "annotator": "ann"},
            {"prompt": "p", "response": "b", "critique": "too generic, doesn't name the product; no reason given"},
            {"prompt": "p", "response": "c", "critique": "hmm"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outcome = encode_files([str(path)], "rules")
    assert [(r.response, r.rating, r.weight, r.scale) for r in outcome.records] == [
        ("a", 0.4, 0.5, (-1.0, 1.0)), ("b", -0.9, 0.75, (-1.0, 1.0))]
    assert outcome.records[0].annotator == "ann" and outcome.records[1].annotator == "critique:rules"
    assert outcome.report.problems == {NOT_CONFIDENT: [3]} and outcome.numbers == [1, 2]
    assert record_from_dict(record_to_dict(outcome.records[1])) == outcome.records[1]


def test_bad_critique_records_name_record_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response": "a", "critique": "ok"}) + "\n"
                    + json.dumps({"prompt": "p", "response": "a", "critique": 3}) + "\n")
    with pytest.raises(CritiqueError, match=r"bad.jsonl record 2: field 'critique' must be a string"):
        read_items(path)
    path.write_text(json.dumps({"prompt": "p", "response": "a", "critique": "ok", "rating": 9, "scale": [1, 5]}))
    with pytest.raises(CritiqueError, match="record 1: field 'rating' 9 is outside the scale"):
        read_items(path)


def test_items_from_annotation_rows():
    base = {"prompt": "p", "samples": [{"id": 1, "text": "resp"}], "is_gold": False, "annotator": "a"}
    rows = [base | {"annotation_id": 1, "kind": "rating", "scale": [1, 5], "resolved": {"rating": 4},
                    "critique": "good reason given"},
            base | {"annotation_id": 2, "kind": "binary", "scale": None, "resolved": {"label": "bad"}, "critique": "meh"},
            base | {"annotation_id": 3, "kind": "rating", "scale": [1, 5], "resolved": {"rating": 4}, "critique": None}]
    rated, labelled = items_from_rows(rows)
    assert (rated.target, rated.number, rated.critique) == (0.5, 1, "good reason given")
    assert (labelled.target, labelled.number) == (-1.0, 2)


def test_encode_critiques_command_learned(tmp_path):
    from typer.testing import CliRunner

    from rlhfkit.cli import app
    from rlhfkit.critiques.base import write_items

    from .test_encoders import synthetic_items

    write_items(synthetic_items(120, 1), tmp_path / "c.jsonl")
    result = CliRunner().invoke(app, ["encode-critiques", "-c", str(tmp_path / "c.jsonl"), "--encoder", "learned",
                                      "--out", str(tmp_path / "r.jsonl"), "--save-encoder", str(tmp_path / "e.npz")])
    assert result.exit_code == 0, result.output
    assert "held-out (24): Pearson r" in result.output and (tmp_path / "e.npz").is_file()
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert records and all(r["kind"] == "rating" and 0 < r["weight"] <= 1 for r in records)
    bad = CliRunner().invoke(app, ["encode-critiques", "-c", str(tmp_path / "c.jsonl"), "--encoder", "nope",
                                   "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code != 0 and "critique encoder 'nope'" in bad.output
